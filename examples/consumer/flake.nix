# A fleet of your own that uses keystone as a plugin: keystone's modules and
# host wiring for your hosts in ./vms, and its apps to render, install and
# verify them.
#
#   nix run .#new-host -- web2 --disk /dev/disk/by-id/… --key ~/.ssh/id_ed25519.pub
#   nix run .#deploy -- web1
#   nix run .#verify -- web1
#   nix flake check
{
  description = "A fleet installed and verified with keystone";

  inputs = {
    keystone.url = "github:keystone-nix/keystone";
    nixpkgs.follows = "keystone/nixpkgs";
  };

  outputs =
    { nixpkgs, keystone, ... }:
    let
      hosts = keystone.lib.mkHosts {
        inherit (nixpkgs.lib) nixosSystem;
        dir = ./vms;
        # Your own modules go here too, for every host.
        modules = keystone.lib.hostModules ++ [ ];
      };
    in
    {
      nixosConfigurations = hosts;

      # keystone's apps work on the flake in the current folder: this one.
      inherit (keystone) apps;

      # The installer your new hosts boot, its root open to your hosts' root
      # keys: `keystone iso` builds packages.<system>.installer-iso, and
      # `keystone iso --key KEY` calls lib.installerIso with its own keys.
      packages = nixpkgs.lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: {
        installer-iso = (keystone.lib.installerIso { inherit system hosts; }).config.system.build.isoImage;
      });
      lib = { inherit (keystone.lib) installerIso; };

      # Each host evaluates; keystone's own checks gate keystone itself.
      checks = nixpkgs.lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
        system:
        nixpkgs.lib.mapAttrs' (
          name: host:
          nixpkgs.lib.nameValuePair "eval-${name}" (
            nixpkgs.legacyPackages.${system}.writeText "eval-${name}" (
              builtins.unsafeDiscardStringContext host.config.system.build.toplevel.drvPath
            )
          )
        ) (nixpkgs.lib.filterAttrs (_: h: h.pkgs.stdenv.hostPlatform.system == system) hosts)
      );
    };
}
