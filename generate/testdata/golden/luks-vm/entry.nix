# Host "web1": add inside `outputs`, where nixpkgs, disko and keystone
# are this flake's inputs. A flake using keystone.lib.mkHosts needs no entry.
nixosConfigurations."web1" = nixpkgs.lib.nixosSystem {
  modules = [
    disko.nixosModules.disko
    keystone.nixosModules.default
    ./vms/web1/configuration.nix
  ];
};
