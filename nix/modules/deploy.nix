# keystone.deploy: where and how `keystone deploy` and `keystone verify`
# reach this host. Read with one
# `nix eval --json .#nixosConfigurations.NAME.config.keystone`.
{ config, lib, ... }:
let
  devices = config.disko.devices or { };
  disks = builtins.attrValues (devices.disk or { });
  # gpt's partitions are an attrset, the legacy msdos table's a list
  # (disko lib/types/gpt.nix, lib/types/table.nix).
  partitionsOf =
    c:
    let
      ps = c.partitions or { };
    in
    if builtins.isList ps then ps else builtins.attrValues ps;
  partitions = d: if (d.content or null) == null then [ ] else partitionsOf d.content;

  # Every node of a disko content tree, depth first: a LUKS device can sit
  # in a partition, in another LUKS device, in an LVM logical volume, on an
  # mdadm array or in a zvol, so all of those are roots of a walk.
  nodes =
    c:
    if c == null then
      [ ]
    else
      [ c ] ++ builtins.concatMap (p: nodes (p.content or null)) (partitionsOf c) ++ nodes (c.content or null);
  contentRoots =
    map (d: d.content or null) disks
    ++ map (m: m.content or null) (builtins.attrValues (devices.mdadm or { }))
    ++ builtins.concatMap (vg: map (lv: lv.content or null) (builtins.attrValues (vg.lvs or { }))) (
      builtins.attrValues (devices.lvm_vg or { })
    )
    ++ builtins.concatMap (pool: map (ds: ds.content or null) (builtins.attrValues (pool.datasets or { }))) (
      builtins.attrValues (devices.zpool or { })
    );

  secret = "/tmp/secret.key";
  # disko's luks type formats with settings.keyFile when set, else with
  # passwordFile, else with the deprecated keyFile (lib/types/luks.nix).
  luksWithSecret = builtins.any (
    n:
    (n.type or null) == "luks"
    && builtins.elem secret [
      (n.passwordFile or null)
      (n.settings.keyFile or null)
      (n.keyFile or null)
    ]
  ) (builtins.concatMap nodes contentRoots);
  zfsWithSecret = builtins.any (
    pool:
    builtins.any (o: (o.keylocation or "") == "file://${secret}") (
      [ (pool.rootFsOptions or { }) ] ++ map (ds: ds.options or { }) (builtins.attrValues (pool.datasets or { }))
    )
  ) (builtins.attrValues (devices.zpool or { }));
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
      defaultText = lib.literalExpression "listToAttrs (map (d: { name = d.device; value = map (p: p.size) (attrValues d.content.partitions); }) (attrValues config.disko.devices.disk))";
      description = "Each disk's partition sizes (such as 1G or 100%), from which deploy computes the smallest disk the layout fits.";
    };
    diskSecret = lib.mkOption {
      type = lib.types.bool;
      readOnly = true;
      default = luksWithSecret || zfsWithSecret;
      defaultText = lib.literalMD "`true` when a LUKS device anywhere in `config.disko.devices` (in a partition, LVM volume, mdadm array, zvol or another LUKS device) has `passwordFile`, `settings.keyFile` or `keyFile` `/tmp/secret.key`, or a ZFS pool or dataset has `keylocation = \"file:///tmp/secret.key\"`";
      description = "The layout reads its encryption secret from /tmp/secret.key at install time, so deploy needs --disk-password-file.";
    };
  };
}
