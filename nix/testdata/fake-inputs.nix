# Stand-ins for the flake's inputs, just enough for flake.nix's outputs to
# evaluate offline: every builder returns a description of its call.
{ root }:
let
  fakeLib = {
    filterAttrs =
      pred: set:
      builtins.listToAttrs (
        map (name: {
          inherit name;
          value = set.${name};
        }) (builtins.filter (name: pred name set.${name}) (builtins.attrNames set))
      );
    mapAttrs' = f: set: builtins.listToAttrs (map (name: f name set.${name}) (builtins.attrNames set));
    nameValuePair = name: value: { inherit name value; };
    optionalAttrs = cond: set: if cond then set else { };
    mkForce = v: { forced = v; };
    # nixpkgs lib/modules.nix: mkAfter = mkOrder 1500 (shown by its place)
    mkAfter = v: { after = v; };
    # nixpkgs lib/modules.nix: mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
  };

  pkgsFor = system: {
    lib = fakeLib;
    callPackage = path: args: {
      outPath = "/nix/store/fake-keystone";
      path = toString path;
      inherit (args) version;
      hasBuilder = args ? buildGoApplication;
    };
    writeShellScript = name: text: "script ${name}: ${text}";
    writeText = name: text: "text ${name}: ${text}";
    runCommand = name: env: script: "run ${name}: ${script}";
    mkShell = args: { shell = map (p: p.name or p) args.packages; };
    testers.runNixOSTest = test: {
      vmTest = test.name;
      nodes = builtins.attrNames test.nodes;
    };
    go = "go";
    gopls = "gopls";
    nixos-anywhere = "nixos-anywhere";
    nixfmt = "nixfmt";
    # pkgs/by-name/ni/nixfmt-tree/package.nix (treefmt with nixfmt; in
    # nixpkgs since before 25.05, see its runtimePackages note of 2025-04-01)
    nixfmt-tree = "nixfmt-tree";
    swtpm = "/fake/swtpm";
    qemu_test = "/fake/qemu";
    # nixpkgs OVMF: its passthru firmware and variables; override rebuilds
    # it with other options (OVMF's tpmSupport ? false).
    OVMF = {
      firmware = "/fake/OVMF_CODE.fd";
      variables = "/fake/OVMF_VARS.fd";
      override =
        args:
        if args == { tpmSupport = true; } then
          {
            firmware = "/fake/OVMF-tpm/OVMF_CODE.fd";
            variables = "/fake/OVMF-tpm/OVMF_VARS.fd";
          }
        else
          throw "fake OVMF.override: ${builtins.toJSON args}";
    };
    inherit system;
  };

  nixosSystem = args: {
    modules = map toString args.modules;
    pkgs.stdenv.hostPlatform.system = "x86_64-linux";
    config = {
      networking = {
        hostName = "test-server";
        hostId = "e627eb83";
      };
      users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA demo" ];
      keystone = {
        vm = true;
        deploy = {
          targetHost = null;
          targetUser = "root";
          sshPort = 22;
          disks = [ "/dev/vda" ];
        };
      };
      system.build.toplevel.drvPath = "/nix/store/fake-toplevel.drv";
      # what installer-iso.nix asked for: an installer is a nixosSystem too
      system.build.isoImage.modules = args.modules;
    };
    extendModules = extra: {
      config.system.build.installTest = {
        installTest = true;
        extra = builtins.length extra.modules;
        # what the one extra module asks of disko's test (disko.tests.*)
        inherit ((builtins.head extra.modules).disko) tests;
      };
    };
  };

  inputs = {
    nixpkgs = {
      outPath = "/fake/nixpkgs";
      lib = fakeLib // {
        inherit nixosSystem;
      };
      legacyPackages = {
        x86_64-linux = pkgsFor "x86_64-linux";
        aarch64-linux = pkgsFor "aarch64-linux";
      };
    };
    disko.nixosModules.disko = "disko-module";
    flake-utils.lib.eachSystem =
      systems: f:
      let
        perSystem = builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );
        outputNames = builtins.attrNames (f (builtins.head systems));
      in
      builtins.listToAttrs (
        map (out: {
          name = out;
          value = builtins.mapAttrs (_: o: o.${out}) perSystem;
        }) outputNames
      );
    gomod2nix = {
      legacyPackages = {
        x86_64-linux.buildGoApplication = "buildGoApplication";
        aarch64-linux.buildGoApplication = "buildGoApplication";
      };
      packages = {
        x86_64-linux.default = "gomod2nix";
        aarch64-linux.default = "gomod2nix";
      };
    };
  };

  flake = import (root + "/flake.nix");
  self =
    flake.outputs (inputs // { inherit self; })
    // {
      shortRev = "abc1234";
      outPath = toString root;
    };
in
self
