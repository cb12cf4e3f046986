# keystone.deploy: where and how `keystone deploy` and `keystone verify`
# reach this host. Read with one
# `nix eval --json .#nixosConfigurations.NAME.config.keystone`.
{ config, lib, ... }:
let
  disks = builtins.attrValues (config.disko.devices.disk or { });
  partitions = d: if (d.content or null) == null then [ ] else builtins.attrValues (d.content.partitions or { });
  hasContent = p: (p.content or null) != null;
  luksWithSecret = builtins.any (
    d:
    builtins.any (
      p: hasContent p && p.content.type == "luks" && (p.content.passwordFile or null) == "/tmp/secret.key"
    ) (partitions d)
  ) disks;
  zfsWithSecret = builtins.any (
    pool:
    builtins.any (ds: (ds.options.keylocation or "") == "file:///tmp/secret.key") (
      builtins.attrValues (pool.datasets or { })
    )
  ) (builtins.attrValues (config.disko.devices.zpool or { }));
in
{
  options.keystone.vm = lib.mkOption {
    type = lib.types.bool;
    default = false;
    description = "This host is a virtual machine, so kernel disk names such as /dev/vda are stable enough (`keystone check` refuses them on physical hosts).";
  };

  options.keystone.deploy = {
    targetHost = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "192.0.2.10";
      description = "DNS name or IP address the host is installed and verified at; `--target` overrides it.";
    };
    targetUser = lib.mkOption {
      type = lib.types.str;
      default = "root";
      description = "SSH user for deploy and verify; root, or a user with sudo.";
    };
    sshPort = lib.mkOption {
      type = lib.types.port;
      default = 22;
      description = "SSH port the host is reached at.";
    };
    buildOn = lib.mkOption {
      type = lib.types.enum [
        "auto"
        "local"
        "remote"
      ];
      default = "auto";
      description = "Where nixos-anywhere builds the system (its --build-on).";
    };
    disks = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      readOnly = true;
      default = map (d: d.device) (builtins.attrValues (config.disko.devices.disk or { }));
      defaultText = lib.literalExpression "map (d: d.device) (attrValues config.disko.devices.disk)";
      description = "Disks the install wipes, from the disko layout; deploy checks each exists on the target.";
    };
    partitionSizes = lib.mkOption {
      type = lib.types.attrsOf (lib.types.listOf lib.types.str);
      readOnly = true;
      default = builtins.listToAttrs (
        map (d: {
          name = d.device;
          value = map (p: p.size) (partitions d);
        }) disks
      );
      description = "Each disk's partition sizes (such as 1G or 100%), from which deploy computes the smallest disk the layout fits.";
    };
    diskSecret = lib.mkOption {
      type = lib.types.bool;
      readOnly = true;
      default = luksWithSecret || zfsWithSecret;
      description = "The layout reads its encryption secret from /tmp/secret.key at install time, so deploy needs --disk-password-file.";
    };
  };
}
