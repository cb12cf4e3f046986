# A stand-in for what disko v1.12.0 (commit ff442f5d) adds to the NixOS
# config from disko.devices, for what the expectations read:
# boot.initrd.luks.devices. Each LUKS content gives, with initrdUnlock
# (default true, luks.nix line 98),
#   boot.initrd.luks.devices.${name} = { inherit (config) device; } // config.settings;
# (luks.nix _config, lines 217-231). Its device defaults to the parent's
# (luks.nix line 51-55): a GPT partition's is /dev/disk/by-partlabel/LABEL
# with LABEL = "disk-DISK-PARTITION" (gpt.nix lines 60-69, 118-130), a
# zvol's is /dev/zvol/POOL/NAME (zfs_volume.nix line 47), a luks' content's
# /dev/mapper/NAME (luks.nix line 117).
{ devices }:
let
  inherit (builtins) attrNames concatMap listToAttrs;
  walk =
    device: c:
    if c == null then
      [ ]
    else if c.type == "luks" then
      (if c.initrdUnlock or true then
        [
          {
            inherit (c) name;
            value = { device = c.device or device; } // (c.settings or { });
          }
        ]
      else
        [ ])
      ++ walk "/dev/mapper/${c.name}" (c.content or null)
    else
      [ ];
  gpt =
    disk: c:
    if c.type == "gpt" then
      concatMap (p: walk (c.partitions.${p}.device or "/dev/disk/by-partlabel/disk-${disk}-${p}") (c.partitions.${p}.content or null)) (attrNames c.partitions)
    else
      walk (devices.disk.${disk}.device) c;
  fromDisks = concatMap (d: gpt d devices.disk.${d}.content) (attrNames (devices.disk or { }));
  fromZvols = concatMap (
    pool:
    concatMap (
      ds:
      let
        v = devices.zpool.${pool}.datasets.${ds};
      in
      if v.type == "zfs_volume" then walk "/dev/zvol/${pool}/${ds}" (v.content or null) else [ ]
    ) (attrNames devices.zpool.${pool}.datasets)
  ) (attrNames (devices.zpool or { }));
in
{
  boot.initrd.luks.devices = listToAttrs (fromDisks ++ fromZvols);
}
