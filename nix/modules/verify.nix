# keystone.verify.expectations: what `keystone verify` checks the live host
# against, computed from this very config by ../expectations.nix.
{
  config,
  options,
  lib,
  ...
}:
{
  options.keystone.verify.expectations = lib.mkOption {
    type = lib.types.attrs;
    readOnly = true;
    default = import ../expectations.nix { inherit config options; };
    defaultText = lib.literalExpression "import ./nix/expectations.nix { inherit config options; }";
    description = "Hostname, active services, open ports, firewall backend, ZFS pools and encryption roots, LUKS devices, mounts, mDNS and sshd policy this host must show.";
  };
}
