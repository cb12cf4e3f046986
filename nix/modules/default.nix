# nixosModules.default: everything a keystone host imports.
{
  imports = [
    ./server.nix
    ./deploy.nix
    ./verify.nix
    ./unlock.nix
  ];
}
