# installerIso { nixosSystem, nixpkgs, system, hosts ? { }, keys ? null }
#
# The NixOS minimal installer (installation-cd-minimal.nix of `nixpkgs`)
# that a new host boots for `keystone deploy`: sshd on, root may log in with
# `keys` only — by default every root key of every host in `hosts` (the
# fleet's nixosConfigurations), each once. No password logs in over SSH.
# The ISO is `.config.system.build.isoImage` of the result
# (packages.<system>.installer-iso; `keystone iso --key` passes its own keys).
{
  nixosSystem,
  nixpkgs,
  system,
  hosts ? { },
  keys ? null,
}:
let
  fleetKeys = builtins.concatMap (
    h: h.config.users.users.root.openssh.authorizedKeys.keys
  ) (builtins.attrValues hosts);
  unique = builtins.foldl' (acc: k: if builtins.elem k acc then acc else acc ++ [ k ]) [ ];
  rootKeys = unique (if keys == null then fleetKeys else keys);
in
if rootKeys == [ ] then
  throw "installer-iso: no SSH keys to log in with: the fleet's hosts have none; give some with keystone iso --key KEY"
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
      }
    ];
  }
