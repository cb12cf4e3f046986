{
  description = "keystone: take a NixOS server from nothing to a verified install";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    disko = {
      url = "github:nix-community/disko/v1.12.0";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    flake-utils.url = "github:numtide/flake-utils";
    gomod2nix = {
      url = "github:nix-community/gomod2nix";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.flake-utils.follows = "flake-utils";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      disko,
      flake-utils,
      gomod2nix,
    }:
    let
      lib = import ./nix/lib.nix;

      # What every keystone host is built from, besides its own folder.
      hostModules = [
        disko.nixosModules.disko
        self.nixosModules.default
      ];

      hosts = lib.mkHosts {
        inherit (nixpkgs.lib) nixosSystem;
        dir = ./vms;
        modules = hostModules;
      };

      # One JSON document about the whole fleet, for `keystone check`.
      fleet = builtins.mapAttrs (_: lib.fleetInfo) hosts;
    in
    {
      lib = lib // {
        inherit hostModules;
        # installerIso { system, hosts ? null, keys ? null }: the installer
        # whose root may log in with keys, or with hosts' root keys (one of
        # them is required: nix/installer-iso.nix); packages.<system>.installer-iso
        # and `keystone iso` build its config.system.build.isoImage.
        installerIso =
          args:
          import ./nix/installer-iso.nix (
            {
              inherit (nixpkgs.lib) nixosSystem;
              inherit nixpkgs;
              version = self.shortRev or self.dirtyShortRev or "dev";
            }
            // args
          );
      };

      nixosModules.default = ./nix/modules;

      nixosConfigurations = hosts;
    }
    // flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (
      system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
        keystone = pkgs.callPackage ./nix/package.nix {
          inherit (gomod2nix.legacyPackages.${system}) buildGoApplication;
          version = self.shortRev or self.dirtyShortRev or "dev";
        };

        app = command: description: {
          type = "app";
          program = "${pkgs.writeShellScript "keystone-${command}" ''
            exec ${keystone}/bin/keystone ${command} "$@"
          ''}";
          meta = { inherit description; };
        };

        hostsHere = pkgs.lib.filterAttrs (_: h: h.pkgs.stdenv.hostPlatform.system == system) hosts;
      in
      {
        packages = {
          default = keystone;
          inherit keystone;
          installer-iso = (self.lib.installerIso { inherit system hosts; }).config.system.build.isoImage;
        };

        apps = {
          default = {
            type = "app";
            program = "${keystone}/bin/keystone";
            meta.description = "keystone: new-host, deploy, verify, check, unlock, switch";
          };
          new-host = app "new-host" "Render vms/NAME/configuration.nix and its disko layout";
          deploy = app "deploy" "Install a host with nixos-anywhere after read-only pre-flight checks";
          verify = app "verify" "Check a live host over SSH against its configuration";
          check = app "check" "Lint the fleet: names, host ids, keys, disks, targets, no private keys";
          unlock = app "unlock" "Give a host's initrd its disk password over its pinned SSH";
          switch = app "switch" "Update an installed host; it becomes the boot default only after verify passes";
        };

        checks =
          {
            # The package's own go test runs in its checkPhase.
            inherit keystone;

            lint = pkgs.runCommand "keystone-lint" { } ''
              ${keystone}/bin/keystone check --fleet ${pkgs.writeText "fleet.json" (builtins.toJSON fleet)} --source ${self}
              touch $out
            '';

            vm-test = import ./nix/vm-test.nix {
              inherit pkgs keystone hostModules;
            };
          }
          # Every host's system evaluates (its .drv is instantiated, nothing is
          # built: without its context the path does not make the check
          # depend on the whole closure).
          // pkgs.lib.mapAttrs' (
            name: host:
            pkgs.lib.nameValuePair "eval-${name}" (
              pkgs.writeText "eval-${name}" (
                builtins.unsafeDiscardStringContext host.config.system.build.toplevel.drvPath
              )
            )
          ) hostsHere
          // pkgs.lib.optionalAttrs (hostsHere ? test-server) (
            let
              # disko formats, mounts, unmounts, mounts again, installs and
              # boots test-server's layout in a VM (disko's installTest);
              # nix/disko-tests.nix says what that boot must do.
              tests = import ./nix/disko-tests.nix { inherit pkgs; };
              installTest =
                m: (hostsHere.test-server.extendModules { modules = [ m ]; }).config.system.build.installTest;
            in
            {
              # No TPM2: the boot asks for the password, the test types it.
              test-server-disko = installTest tests.password;
              # Then with a TPM2: enrolled, the boot is unattended.
              test-server-tpm = installTest tests.tpm;
            }
          );

        devShells.default = pkgs.mkShell {
          packages = [
            pkgs.go
            pkgs.gopls
            gomod2nix.packages.${system}.default
            pkgs.nixos-anywhere
            pkgs.nixfmt
          ];
        };

        # `nix fmt` passes no file names since Nix 2.25, and bare nixfmt
        # then reads stdin: nixfmt-tree is treefmt running nixfmt on every
        # .nix file of the tree.
        formatter = pkgs.nixfmt-tree;
      }
    );
}
