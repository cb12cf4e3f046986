# installerIso { nixosSystem, nixpkgs, system, hosts ? null, keys ? null, version ? "dev" }
#
# The NixOS minimal installer (installation-cd-minimal.nix of `nixpkgs`)
# that a new host boots for `keystone deploy`: sshd on, root may log in with
# `keys` only — by default every root key of every host in `hosts` (the
# fleet's nixosConfigurations), each once. No password logs in over SSH.
# One of `hosts` and `keys` is required: there is no default fleet, whose
# keys would let in someone other than you, or nobody.
# It announces itself on the local network for `keystone discover`
# (./installer-announce.nix: avahi, and a boot-time unit that writes the
# service file with the host key's fingerprint; version is keystone's).
# The ISO is `.config.system.build.isoImage` of the result
# (packages.<system>.installer-iso; `keystone iso --key` passes its own keys).
{
  nixosSystem,
  nixpkgs,
  system,
  hosts ? null,
  keys ? null,
  version ? "dev",
}:
let
  fleetKeys = builtins.concatMap (h: h.config.users.users.root.openssh.authorizedKeys.keys) (
    builtins.attrValues hosts
  );
  unique = builtins.foldl' (acc: k: if builtins.elem k acc then acc else acc ++ [ k ]) [ ];
  rootKeys = unique (if keys == null then fleetKeys else keys);
  noKeys = "installer-iso: no SSH keys to log in with: the fleet's hosts have none; add a root key to a host (keystone new-host --key) or build it with keystone iso --key KEY";
in
if hosts == null && keys == null then
  throw "installerIso: give hosts (your nixosConfigurations, whose root keys may log in) or keys (a list of SSH public keys); without them nobody could log in to the installer"
else if rootKeys == [ ] then
  # Not a throw: `nix flake check` evaluates packages.<system>.installer-iso,
  # and a fleet without keys yet must pass it. Building it fails, saying why.
  {
    config.system.build.isoImage = derivation {
      name = "installer-iso-without-keys";
      inherit system;
      builder = "/bin/sh";
      message = noKeys;
      args = [
        "-c"
        "echo \"$message\" >&2; exit 1"
      ];
    };
  }
else
  nixosSystem {
    modules = [
      "${nixpkgs}/nixos/modules/installer/cd-dvd/installation-cd-minimal.nix"
      {
        nixpkgs.hostPlatform = system;
        services.openssh.enable = true;
        # installation-device.nix says PermitRootLogin "yes" (mkDefault) and
        # root has an empty password: keys only.
        services.openssh.settings = {
          PermitRootLogin = "prohibit-password";
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
        };
        users.users.root.openssh.authorizedKeys.keys = rootKeys;
        _module.args.keystoneVersion = version;
      }
      ./installer-announce.nix
    ];
  }
