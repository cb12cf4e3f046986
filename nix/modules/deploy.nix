# keystone.deploy: where and how `keystone deploy` and `keystone verify`
# reach this host. Read with one
# `nix eval --json .#nixosConfigurations.NAME.config.keystone`.
{ config, lib, ... }:
let
  cfg = config.keystone.deploy;
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
      description = "SSH port deploy and verify connect to. sshd listens on it too (services.openssh.ports defaults to it, and the server profile's firewall opens it), unless sshPortForwarded says it is a forwarded port in front of 22.";
    };
    sshPortForwarded = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "sshPort is a port forwarded to the host's port 22 (NAT, a port-forwarding router or load balancer): sshd keeps listening on 22 and only the connection uses sshPort.";
    };
    postKexecSSHPort = lib.mkOption {
      type = lib.types.nullOr lib.types.port;
      default = if cfg.sshPortForwarded then cfg.sshPort else null;
      defaultText = lib.literalExpression "if config.keystone.deploy.sshPortForwarded then config.keystone.deploy.sshPort else null";
      description = "Port deploy connects to once nixos-anywhere has kexec'd into its installer, whose sshd listens on 22 (nixos-anywhere's --post-kexec-ssh-port); null means 22. With sshPortForwarded it is sshPort, the forwarded port in front of that 22.";
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
          # disko v1.12.0 lib/types/table.nix: the legacy msdos table's
          # partitions have start and end, not size.
          value = map (p: p.size or "unknown") (partitions d);
        }) disks
      );
      defaultText = lib.literalExpression "listToAttrs (map (d: { name = d.device; value = map (p: p.size or \"unknown\") (attrValues d.content.partitions); }) (attrValues config.disko.devices.disk))";
      description = "Each disk's partition sizes (such as 1G or 100%), from which deploy computes the smallest disk the layout fits; \"unknown\" for a partition of disko's legacy table type, which has a start and an end instead.";
    };
    diskSecret = lib.mkOption {
      type = lib.types.bool;
      readOnly = true;
      default = luksWithSecret || zfsWithSecret;
      defaultText = lib.literalMD "`true` when a LUKS device anywhere in `config.disko.devices` (in a partition, LVM volume, mdadm array, zvol or another LUKS device) has `passwordFile`, `settings.keyFile` or `keyFile` `/tmp/secret.key`, or a ZFS pool or dataset has `keylocation = \"file:///tmp/secret.key\"`";
      description = "The layout reads its encryption secret from /tmp/secret.key at install time, so deploy needs --disk-password-file.";
    };
  };

  # sshd listens where deploy and verify connect, so the expectations, the
  # firewall (openFirewall opens services.openssh.ports) and sshd agree. A
  # default: a host can list its own ports.
  config.services.openssh.ports = lib.mkDefault [ (if cfg.sshPortForwarded then 22 else cfg.sshPort) ];
}
