# What a live host must look like, computed from its NixOS config. This is
# the contract with `keystone verify` (see docs/expectations.md): keys may be
# added, never renamed; null means "not applicable to this host".
#
# Builtins only, so it evaluates offline with a fake config in tests.
# `options` is the module system's, to tell which options this nixpkgs has.
{
  config,
  options ? { },
}:
let
  inherit (builtins)
    attrNames
    attrValues
    concatMap
    elem
    filter
    genList
    length
    sort
    ;

  uniqueSorted =
    xs:
    let
      sorted = sort (a: b: a < b) xs;
    in
    filter (x: x != null) (
      genList (
        i:
        let
          x = builtins.elemAt sorted i;
        in
        if i > 0 && builtins.elemAt sorted (i - 1) == x then null else x
      ) (length sorted)
    );

  expandRanges = concatMap (r: genList (i: r.from + i) (r.to - r.from + 1));

  fw = config.networking.firewall;
  # nixos-25.11's firewall.nix declares networking.firewall.backend, one of
  # iptables, nftables, firewalld (default: firewalld with
  # services.firewalld.enable, else nftables with networking.nftables.enable,
  # else iptables); older releases have only networking.nftables.enable.
  backend =
    if options ? networking.firewall.backend then
      fw.backend
    else if config.networking.nftables.enable then
      "nftables"
    else
      "iptables";
  firewallUnit =
    {
      iptables = "firewall.service";
      nftables = "nftables.service";
      firewalld = "firewalld.service";
    }
    .${backend};
  ssh = config.services.openssh;
  avahi = config.services.avahi;
  resolved = config.services.resolved.enable;

  zpools = config.disko.devices.zpool or { };
  encrypted = o: (o.encryption or "off") != "off";
  # The pool's own dataset (rootFsOptions) and any dataset (options) can
  # be an encryption root. disko adds a pseudo-dataset "__root" to every
  # pool (lib/types/zpool.nix: the pool's own dataset, options =
  # rootFsOptions); names starting with "__" are disko's, not ZFS's, and
  # `zfs get` on POOL/__root would fail, so they are skipped: rootFsOptions
  # already stands for the pool.
  isPseudo = ds: builtins.substring 0 2 ds == "__";
  encryptionRoots = uniqueSorted (
    concatMap (
      pool:
      (if encrypted (zpools.${pool}.rootFsOptions or { }) then [ pool ] else [ ])
      ++ map (ds: "${pool}/${ds}") (
        filter (ds: !isPseudo ds && encrypted (zpools.${pool}.datasets.${ds}.options or { })) (
          attrNames (zpools.${pool}.datasets or { })
        )
      )
    ) (attrNames zpools)
  );
  # Each disko pool's data vdev: its members are the zfs contents naming
  # it, on a whole disk or in a gpt partition (disko lib/types/zfs.nix
  # writes each into the pool's device list; zpool.nix creates the pool
  # as `zpool create … MODE DEVICES`). mode "" is a single disk or a
  # stripe, "raidz" is raidz1; disko's attrset (topology) mode is not
  # judged: no entry.
  diskContents = concatMap (
    d:
    let
      c = d.content or null;
      ps = if c == null then [ ] else c.partitions or { };
    in
    (if c == null then [ ] else [ c ])
    ++ map (p: p.content or null) (if builtins.isList ps then ps else attrValues ps)
  ) (attrValues (config.disko.devices.disk or { }));
  members = pool: length (filter (c: c != null && (c.type or null) == "zfs" && (c.pool or null) == pool) diskContents);
  vdevOf =
    pool: n:
    let
      mode = zpools.${pool}.mode or "";
    in
    if mode == "" then
      (if n == 1 then "single" else "stripe")
    else if mode == "raidz" then
      "raidz1"
    else
      mode;
  topology = builtins.listToAttrs (
    map (pool: {
      name = pool;
      value = {
        vdev = vdevOf pool (members pool);
        disks = members pool;
      };
    }) (filter (pool: builtins.isString (zpools.${pool}.mode or "") && members pool > 0) (attrNames zpools))
  );
  zfsMounts = filter (fs: fs.fsType == "zfs") (attrValues config.fileSystems);
  pools = uniqueSorted (
    attrNames zpools ++ map (fs: builtins.head (builtins.split "/" fs.device)) zfsMounts
  );

  # Every LUKS device the initrd opens (boot.initrd.luks.devices, which
  # disko's luks content fills in): the tpm check reads what unlocks each.
  luksCfg = config.boot.initrd.luks.devices;
  hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  luksVolumes = map (name: {
    inherit name;
    inherit (luksCfg.${name}) device;
    # crypttab's tpm2-device= (luksroot.nix writes crypttabExtraOpts into
    # the systemd initrd's crypttab): a TPM2 is meant to unlock it.
    tpm2 = builtins.any (hasPrefix "tpm2-device=") (luksCfg.${name}.crypttabExtraOpts or [ ]);
  }) (attrNames luksCfg);
  # A device whose cryptsetup unit conflicts with initrd-switch-root.target
  # is closed before switch-root (the zfs-encrypted layout's credstore): it
  # is not open on the running host, so the luks check must not ask for it.
  initrdUnits = config.boot.initrd.systemd.services or { };
  closedBeforeSwitchRoot =
    name:
    (config.boot.initrd.systemd.enable or false)
    && elem "initrd-switch-root.target" (initrdUnits."systemd-cryptsetup@${name}".conflicts or [ ]);
  luksDevices = filter (name: !closedBeforeSwitchRoot name) (attrNames luksCfg);
in
{
  hostname = config.networking.hostName;

  services =
    [ ]
    # With startWhenNeeded, sshd.nix declares the socket sshd.socket, which
    # starts one sshd@ instance per connection: no sshd.service runs.
    ++ (if ssh.enable then [ (if ssh.startWhenNeeded or false then "sshd.socket" else "sshd.service") ] else [ ])
    ++ (if avahi.enable then [ "avahi-daemon.service" ] else [ ])
    ++ (if resolved then [ "systemd-resolved.service" ] else [ ])
    ++ (if fw.enable then [ firewallUnit ] else [ ]);

  firewall = {
    inherit (fw) enable;
    inherit backend;
    # Only what is open on every interface: networking.firewall.interfaces.*
    # opens ports to some networks, not to everyone.
    tcp = if fw.enable then uniqueSorted (fw.allowedTCPPorts ++ expandRanges fw.allowedTCPPortRanges) else [ ];
    udp = if fw.enable then uniqueSorted (fw.allowedUDPPorts ++ expandRanges fw.allowedUDPPortRanges) else [ ];
  };

  sshd =
    if ssh.enable then
      {
        inherit (ssh) ports;
        permitRootLogin = ssh.settings.PermitRootLogin;
        passwordAuthentication = ssh.settings.PasswordAuthentication;
        kbdInteractiveAuthentication = ssh.settings.KbdInteractiveAuthentication;
      }
    else
      null;

  zfs =
    if pools == [ ] then
      null
    else
      {
        inherit pools;
        inherit encryptionRoots;
        inherit topology;
      };

  luks =
    if luksVolumes == [ ] then
      null
    else
      {
        devices = luksDevices;
        volumes = luksVolumes;
      };

  mounts = sort (a: b: a < b) (
    map (fs: fs.mountPoint) (
      filter (fs: !(elem "noauto" (fs.options or [ ]))) (attrValues config.fileSystems)
    )
  );

  mdns =
    if avahi.enable then
      {
        publish = avahi.publish.enable && avahi.publish.addresses;
      }
    else
      null;

  # The initrd's sshd (nix/modules/unlock.nix): its port closed once the
  # system runs, its key on the host the pinned one.
  unlock =
    let
      u = config.keystone.unlock.ssh or { enable = false; };
    in
    if u.enable then { inherit (u) port hostKey; } else null;
}
