# A stand-in for disko v1.12.0's types (commit ff442f5d), which need
# nixpkgs' lib and so cannot be evaluated here: it checks a disko.devices
# value the way the module system would reject it (an option that does not
# exist, a wrong enum, a value of the wrong type, a missing required option)
# and returns the problems as strings ([ ] when there are none).
#
# Option names per type are the `lib.mkOption`s of lib/types/<type>.nix at
# v1.12.0 (line numbers below); every type made by mkSubType (lib/default.nix
# lines 397-415, all of lib/types via line 1056) also has the six hooks.
{ devices }:
let
  inherit (builtins)
    attrNames
    attrValues
    concatMap
    elem
    filter
    isAttrs
    isList
    isString
    match
    ;

  hooks = [
    "preCreateHook"
    "postCreateHook"
    "preMountHook"
    "postMountHook"
    "preUnmountHook"
    "postUnmountHook"
  ];

  # lib/types/<type>.nix options (line of each in the comment).
  options = {
    # disk.nix: name 10, type 15, device 21, destroy 25, imageName 30, imageSize 38, content 46
    disk = [ "name" "type" "device" "destroy" "imageName" "imageSize" "content" ];
    # gpt.nix: type 16, device 21, partitions 26, efiGptPartitionFirst 234
    gpt = [ "type" "device" "partitions" "efiGptPartitionFirst" ];
    # filesystem.nix: type 13, device 18, extraArgs 23, mountOptions 28, mountpoint 33, format 38
    filesystem = [ "type" "device" "extraArgs" "mountOptions" "mountpoint" "format" ];
    # swap.nix: type 12, device 17, discardPolicy 22, extraArgs 40, mountOptions 45, priority 51, randomEncryption 60, resumeDevice 65
    swap = [ "type" "device" "discardPolicy" "extraArgs" "mountOptions" "priority" "randomEncryption" "resumeDevice" ];
    # zfs.nix: type 12, device 17, pool 22
    zfs = [ "type" "device" "pool" ];
    # luks.nix: type 46, device 51, name 56, keyFile 60, passwordFile 66, askPassword 72, settings 78,
    # additionalKeyFiles 92, initrdUnlock 98, extraFormatArgs 103, extraOpenArgs 109, content 115
    luks = [ "type" "device" "name" "keyFile" "passwordFile" "askPassword" "settings" "additionalKeyFiles" "initrdUnlock" "extraFormatArgs" "extraOpenArgs" "content" ];
    # zpool.nix: name 22, type 27, mode 33, options 230, rootFsOptions 235, mountpoint 240, mountOptions 245, datasets 250
    zpool = [ "name" "type" "mode" "options" "rootFsOptions" "mountpoint" "mountOptions" "datasets" ];
    # zfs_fs.nix: name 12, type 25, options 32, mountOptions 38, mountpoint 44
    zfs_fs = [ "name" "type" "options" "mountOptions" "mountpoint" ];
    # zfs_volume.nix: name 11, type 16, options 22, extraArgs 27, mountOptions 32, size 39, content 45
    zfs_volume = [ "name" "type" "options" "extraArgs" "mountOptions" "size" "content" ];
  };
  # gpt.nix partitions.<name> (a plain submodule, no hooks): type 32, device 60, priority 82, name 100,
  # uuid 105, label 118, size 137, alignment 146, start 164, end 169, content 181, hybrid 185
  partitionOptions = [ "type" "device" "priority" "name" "uuid" "label" "size" "alignment" "start" "end" "content" "hybrid" ];

  # Required (no default): disk.device (disk.nix 21), filesystem.format (filesystem.nix 38),
  # zfs.pool (zfs.nix 22), luks.name (luks.nix 56), zpool.datasets (zpool.nix 250).
  required = {
    disk = [ "device" ];
    filesystem = [ "format" ];
    zfs = [ "pool" ];
    luks = [ "name" ];
    zpool = [ "datasets" ];
  };

  # What may be inside what: deviceType (lib/default.nix _deviceTypes, lines 71-84) for a disk's
  # and a luks' content, partitionType (_partitionTypes, lines 45-55) for a partition's and a
  # zvol's, zfs_fs or zfs_volume for a dataset (zpool.nix 250-256). Only the types keystone uses
  # are modelled; another one is reported.
  deviceTypes = [ "gpt" "filesystem" "zfs" "luks" "swap" ];
  partitionTypes = [ "filesystem" "zfs" "luks" "swap" ];

  # `attrsOf lib.types.str`: zpool options and rootFsOptions (zpool.nix 230, 235), dataset and
  # zvol options (zfs_fs.nix 32, zfs_volume.nix 22). An int such as ashift = 12 is rejected.
  strAttrs = path: v: if isAttrs v && builtins.all isString (attrValues v) then [ ] else [ "${path}: not an attribute set of strings" ];
  strList = path: v: if isList v && builtins.all isString v then [ ] else [ "${path}: not a list of strings" ];
  str = path: v: if isString v then [ ] else [ "${path}: not a string" ];

  unknown = path: allowed: v: map (n: "${path}.${n}: no such option") (filter (n: !elem n allowed) (attrNames v));
  missing = path: type: v: map (n: "${path}.${n}: required, not set") (filter (n: !(v ? ${n})) (required.${type} or [ ]));
  hookErrors = path: v: concatMap (h: if v ? ${h} then str "${path}.${h}" v.${h} else [ ]) hooks;

  checkTyped =
    path: allowedTypes: v:
    if !(isAttrs v) then
      [ "${path}: not an attribute set" ]
    else if !(v ? type) || !(elem v.type allowedTypes) then
      [ "${path}.type: ${toString (v.type or "unset")} is not one of ${toString allowedTypes}" ]
    else
      unknown path (options.${v.type} ++ hooks) v
      ++ missing path v.type v
      ++ hookErrors path v
      ++ specific path v;

  specific =
    path: v:
    {
      disk = checkTyped "${path}.content" deviceTypes v.content;
      gpt = concatMap (p: partition "${path}.partitions.${p}" v.partitions.${p}) (attrNames (v.partitions or { }));
      filesystem = strList "${path}.mountOptions" (v.mountOptions or [ ]);
      # mountOptions: listOf nonEmptyStr (swap.nix 45)
      swap = strList "${path}.mountOptions" (v.mountOptions or [ ]);
      zfs = str "${path}.pool" (v.pool or "");
      luks =
        (if v ? content then checkTyped "${path}.content" deviceTypes v.content else [ ])
        ++ (if isAttrs (v.settings or { }) then [ ] else [ "${path}.settings: not an attribute set" ])
        ++ str "${path}.name" (v.name or "");
      # zpool mode: oneOf [ (enum modeOptions) (attrsOf topology) ] (zpool.nix lines 10-18, 33-218),
      # modeOptions = [ "" "mirror" "raidz" "raidz1" "raidz2" "raidz3" ]; the topology form is not
      # modelled (keystone renders the string form), so it is reported.
      zpool =
        (
          if !(v ? mode) || (isString v.mode && elem v.mode [ "" "mirror" "raidz" "raidz1" "raidz2" "raidz3" ]) then
            [ ]
          else
            [ "${path}.mode: ${if isString v.mode then v.mode else "an attribute set"} is not one of \"\" mirror raidz raidz1 raidz2 raidz3" ]
        )
        ++ strAttrs "${path}.options" (v.options or { })
        ++ strAttrs "${path}.rootFsOptions" (v.rootFsOptions or { })
        ++ concatMap (d: checkTyped "${path}.datasets.${d}" [ "zfs_fs" "zfs_volume" ] v.datasets.${d}) (attrNames (v.datasets or { }));
      zfs_fs = strAttrs "${path}.options" (v.options or { });
      # size: nullOr str (zfs_volume.nix 39)
      zfs_volume =
        strAttrs "${path}.options" (v.options or { })
        ++ str "${path}.size" (v.size or "")
        ++ (if v ? content then checkTyped "${path}.content" partitionTypes v.content else [ ]);
    }
    .${v.type};

  # gpt.nix size: either (enum [ "100%" ]) (strMatching "[0-9]+[KMGTP]?") (line 137-138).
  partition =
    path: p:
    unknown path partitionOptions p
    ++ (if !(p ? size) || p.size == "100%" || match "[0-9]+[KMGTP]?" p.size != null then [ ] else [ "${path}.size: ${p.size} is not a gpt size" ])
    ++ (if p ? content then checkTyped "${path}.content" partitionTypes p.content else [ ]);

  # lib/default.nix toplevel (line 611): disk, zpool and others.
  top =
    unknown "disko.devices" [ "disk" "zpool" "mdadm" "lvm_vg" "nodev" "bcachefs_filesystems" ] devices
    ++ concatMap (d: checkTyped "disko.devices.disk.${d}" [ "disk" ] devices.disk.${d}) (attrNames (devices.disk or { }))
    ++ concatMap (z: checkTyped "disko.devices.zpool.${z}" [ "zpool" ] devices.zpool.${z}) (attrNames (devices.zpool or { }));
in
top
