# keystone's library, for this flake and for flakes that use it.
{
  # mkHosts { nixosSystem, dir, modules ? [ ], specialArgs ? { } }
  #
  # One nixosConfigurations entry per folder of `dir` that holds a
  # configuration.nix, built from `modules` plus that file. Folders starting
  # with "." (new-host's half-written ones) are skipped. The system comes
  # from the host's nixpkgs.hostPlatform, so nixosSystem gets none. A
  # facter.json next to it (`keystone deploy --hardware-config` writes one)
  # becomes hardware.facter.reportPath.
  mkHosts =
    {
      nixosSystem,
      dir,
      modules ? [ ],
      specialArgs ? { },
    }:
    let
      entries = if builtins.pathExists dir then builtins.readDir dir else { };
      isHost =
        name:
        entries.${name} == "directory"
        && builtins.substring 0 1 name != "."
        && builtins.pathExists (dir + "/${name}/configuration.nix");
      hosts = builtins.filter isHost (builtins.attrNames entries);
      facter =
        name:
        let
          report = dir + "/${name}/facter.json";
        in
        if builtins.pathExists report then [ (import ./facter.nix report) ] else [ ];
    in
    builtins.listToAttrs (
      map (name: {
        inherit name;
        value = nixosSystem {
          inherit specialArgs;
          modules = modules ++ [ (dir + "/${name}/configuration.nix") ] ++ facter name;
        };
      }) hosts
    );

  # fleetInfo host: what `keystone check` lints about one host. The same
  # fields are read by fleet.Apply for runs without this flake.
  fleetInfo = host: {
    inherit (host.config.networking) hostName hostId;
    keys = host.config.users.users.root.openssh.authorizedKeys.keys;
    inherit (host.config.keystone) vm;
    inherit (host.config.keystone.deploy)
      targetHost
      targetUser
      sshPort
      disks
      ;
  };
}
