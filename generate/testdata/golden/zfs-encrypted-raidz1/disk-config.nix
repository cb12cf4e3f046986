# Disk layout of "web1": 3 disks, each with the same partitions (an
# ESP, swap, a ZFS partition), and an encrypted ZFS pool "rpool", a raidz1
# of their ZFS partitions. Any one disk can boot the host.
# disko formats it on install; changing it later needs a reinstall.
#
# Everything lives under rpool/crypt (aes-256-gcm, a raw 32-byte key). The
# key sits in rpool/credstore, a small LUKS2 volume (the "credstore"): the
# install makes the key on this machine, straight into the credstore, and
# it never leaves it. At boot the credstore opens by the TPM2 once enrolled
# (keystone enroll), else by the disk password typed on the
# console; the password is deploy's --disk-password-file, which the install
# reads from /tmp/secret.key. The key is loaded into rpool/crypt and the
# credstore is closed again before the real system starts.
{ config, lib, ... }:
let
  # Where the install mounts the credstore to make and read the key (not
  # /etc/credstore: the installer's /etc belongs to the installer).
  installDir = "/run/keystone-credstore";
  keyFile = "rpool-crypt.key";
  # The datasets the host mounts, each checked before the key is loaded.
  mounted = [
    "rpool/crypt/root"
    "rpool/crypt/nix"
    "rpool/crypt/home"
  ];
in
{
  disko.devices = {
    disk.main = {
      type = "disk";
      device = "/dev/disk/by-id/ata-WDC_WD40EFZX-68AWUN0_WD-WX12D80K1234";
      content = {
        type = "gpt";
        partitions = {
          # GRUB's BIOS stage, so the host boots from legacy BIOS firmware too.
          boot = {
            size = "1M";
            type = "EF02";
          };
          ESP = {
            size = "1G";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot";
              # nofail: a dead disk's ESP must not stop the boot.
              mountOptions = [
                "umask=0077"
                "nofail"
              ];
            };
          };
          swap = {
            size = "4G";
            content = {
              type = "swap";
              # A new key every boot: nothing in swap outlives a power-off.
              randomEncryption = true;
              # A dead disk's swap must not stop the boot.
              mountOptions = [ "nofail" ];
            };
          };
          zfs = {
            size = "100%";
            content = {
              type = "zfs";
              pool = "rpool";
            };
          };
        };
      };
    };
    disk.disk1 = {
      type = "disk";
      device = "/dev/disk/by-id/ata-WDC_WD40EFZX-68AWUN0_WD-WX22D80K1234";
      content = {
        type = "gpt";
        partitions = {
          # GRUB's BIOS stage, so the host boots from legacy BIOS firmware too.
          boot = {
            size = "1M";
            type = "EF02";
          };
          ESP = {
            size = "1G";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot1";
              # nofail: a dead disk's ESP must not stop the boot.
              mountOptions = [
                "umask=0077"
                "nofail"
              ];
            };
          };
          swap = {
            size = "4G";
            content = {
              type = "swap";
              # A new key every boot: nothing in swap outlives a power-off.
              randomEncryption = true;
              # A dead disk's swap must not stop the boot.
              mountOptions = [ "nofail" ];
            };
          };
          zfs = {
            size = "100%";
            content = {
              type = "zfs";
              pool = "rpool";
            };
          };
        };
      };
    };
    disk.disk2 = {
      type = "disk";
      device = "/dev/disk/by-id/ata-WDC_WD40EFZX-68AWUN0_WD-WX32D80K1234";
      content = {
        type = "gpt";
        partitions = {
          # GRUB's BIOS stage, so the host boots from legacy BIOS firmware too.
          boot = {
            size = "1M";
            type = "EF02";
          };
          ESP = {
            size = "1G";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot2";
              # nofail: a dead disk's ESP must not stop the boot.
              mountOptions = [
                "umask=0077"
                "nofail"
              ];
            };
          };
          swap = {
            size = "4G";
            content = {
              type = "swap";
              # A new key every boot: nothing in swap outlives a power-off.
              randomEncryption = true;
              # A dead disk's swap must not stop the boot.
              mountOptions = [ "nofail" ];
            };
          };
          zfs = {
            size = "100%";
            content = {
              type = "zfs";
              pool = "rpool";
            };
          };
        };
      };
    };
    zpool.rpool = {
      type = "zpool";
      # The ZFS partition of every disk, in one raidz1 vdev: any one disk can fail.
      mode = "raidz1";
      options.ashift = "12";
      rootFsOptions = {
        compression = "zstd";
        acltype = "posixacl";
        xattr = "sa";
        atime = "off";
        mountpoint = "none";
        "com.sun:auto-snapshot" = "false";
      };
      # disko's own mount step imports with `zpool import -l`, which fails
      # while rpool/crypt's key is still inside the closed credstore: import
      # without mounting or loading keys first (the credstore below loads it).
      # zvol_wait: the credstore's /dev/zvol link appears after the import.
      preMountHook = ''
        if ! zpool list rpool >/dev/null 2>&1; then
          zpool import -N -R ${config.disko.rootMountPoint} rpool
          zvol_wait
        fi
      '';
      # disko creates and mounts datasets in name order: "credstore" comes
      # before "crypt".
      datasets = {
        credstore = {
          type = "zfs_volume";
          size = "100M";
          content = {
            type = "luks";
            name = "credstore";
            passwordFile = "/tmp/secret.key";
            # Unlock with the TPM2 once enrolled, ask for the password
            # otherwise. tpm2-measure-pcr=yes measures the volume key into
            # PCR 15 once opened, but systemd does so only on a UKI boot
            # measured by systemd-stub (it skips silently otherwise, as on
            # GRUB today); with PCR 15 in the enrolled policy, nothing later
            # in that boot could unseal the key again.
            # tries=0: a wrong password asks again, for ever (the default,
            # 3, fails the boot into the initrd's locked emergency mode).
            # x-systemd.device-timeout: the zvol appears only once
            # zfs-import-rpool imported the pool, which waits for udev to
            # settle and up to a minute for every disk, and fails the boot
            # itself when it cannot; the default 90 s, counted from early
            # boot, would fail it on slow disks.
            settings.crypttabExtraOpts = [
              "tpm2-device=auto"
              "tpm2-measure-pcr=yes"
              "tries=0"
              "x-systemd.device-timeout=infinity"
            ];
            # After disko opened the credstore to mount the pool: load
            # rpool/crypt's key from it if it is not loaded, then close it
            # again (an open credstore would keep rpool busy).
            postMountHook = ''
              if [ "$(zfs get -H -o value keystatus rpool/crypt)" = unavailable ]; then
                mkdir -p ${installDir}
                mount -t ext4 -o ro /dev/mapper/credstore ${installDir}
                zfs load-key -L file://${installDir}/${keyFile} rpool/crypt
                umount ${installDir}
              fi
              cryptsetup close credstore
            '';
            content = {
              type = "filesystem";
              format = "ext4";
            };
          };
        };
        crypt = {
          type = "zfs_fs";
          # Without keylocation here: disko v1.12.0 unloads the key of a
          # dataset with one by its short name (`zfs unload-key crypt`), which
          # fails; the hook below sets it.
          options = {
            mountpoint = "none";
            encryption = "aes-256-gcm";
            keyformat = "raw";
          };
          # The credstore is open (disko just formatted it). Make the key in
          # it and create rpool/crypt with it; never a second key for a
          # dataset that exists.
          preCreateHook = ''
            if ! zfs list -H -o name rpool/crypt >/dev/null 2>&1; then
              mkdir -p ${installDir}
              if ! mountpoint -q ${installDir}; then
                mount -t ext4 /dev/mapper/credstore ${installDir}
              fi
              if [ ! -e ${installDir}/${keyFile} ]; then
                (umask 077 && dd if=/dev/urandom of=${installDir}/${keyFile} bs=32 count=1 status=none)
              fi
              zfs create -u -o encryption=aes-256-gcm -o keyformat=raw \
                -o keylocation=file://${installDir}/${keyFile} -o mountpoint=none rpool/crypt
              # Where the booted initrd finds it (rpool-crypt-load-key below
              # names the file itself).
              zfs set keylocation=file:///etc/credstore/${keyFile} rpool/crypt
              umount ${installDir}
            fi
          '';
        };
        "crypt/root" = {
          type = "zfs_fs";
          mountpoint = "/";
        };
        "crypt/nix" = {
          type = "zfs_fs";
          mountpoint = "/nix";
        };
        "crypt/home" = {
          type = "zfs_fs";
          mountpoint = "/home";
          # One owner per dataset: home.mount (disko's fileSystems entry,
          # then without zfsutil), never also zfs-mount.service, which
          # skips legacy datasets; the two race otherwise. / and /nix are
          # mounted in the initrd, before zfs-mount.service runs.
          options.mountpoint = "legacy";
        };
      };
    };
  };

  # GRUB for UEFI and BIOS firmware alike; disko points it at the EF02
  # partition, and the removable EFI path needs no NVRAM entry.
  boot.loader.grub = {
    enable = true;
    efiSupport = true;
    efiInstallAsRemovable = true;
  };
  # Boot from any disk: GRUB into each disk's BIOS boot partition and its
  # own ESP (grub.nix mirroredBoots: one entry a disk, efiSysMountPoint is
  # the path). disko lists every disk with a BIOS boot partition in
  # boot.loader.grub.devices, from which grub.nix would make one more entry
  # writing every disk's boot code for /boot alone: emptied here.
  boot.loader.grub.devices = lib.mkForce [ ];
  boot.loader.grub.mirroredBoots = [
    {
      path = "/boot";
      devices = [ "/dev/disk/by-id/ata-WDC_WD40EFZX-68AWUN0_WD-WX12D80K1234" ];
    }
    {
      path = "/boot1";
      devices = [ "/dev/disk/by-id/ata-WDC_WD40EFZX-68AWUN0_WD-WX22D80K1234" ];
    }
    {
      path = "/boot2";
      devices = [ "/dev/disk/by-id/ata-WDC_WD40EFZX-68AWUN0_WD-WX32D80K1234" ];
    }
  ];
  # Virtio disks without a serial have no /dev/disk/by-id link; every GPT
  # partition has a by-partuuid one. A default, so disko's install test
  # can set its own.
  boot.zfs.devNodes = lib.mkDefault "/dev/disk/by-partuuid";
  services.zfs.autoScrub.enable = true;

  # The boot, in the systemd initrd (crypttab's tpm2-device= needs it):
  #   zfs-import-rpool.service (NixOS's) imports rpool without mounting it;
  #   rpool-crypt-check.service checks that the datasets the boot mounts
  #   are encrypted by rpool/crypt, else exports rpool and stops the boot;
  #   the zvol rpool/credstore appears, and
  #   systemd-cryptsetup@credstore.service (from the crypttab line disko's
  #   luks entry gives) opens it by TPM2 or by the password on the console;
  #   etc-credstore.mount mounts it read-only at /etc/credstore;
  #   rpool-crypt-load-key.service loads the key into rpool/crypt;
  #   sysroot.mount mounts / and the boot goes on; before switch-root the
  #   mount and the credstore are stopped, so it is closed in the real system.
  # Nothing the switch-root transaction starts may need the credstore:
  # initrd-switch-root.service requires initrd-nixos-activation, which
  # needs /sysroot/run and so sysroot.mount. A unit sysroot.mount requires
  # would be started by that transaction while its Conflicts= stops it, and
  # systemd then drops the switch-root (the boot stops at "Reached target
  # Switch Root"). So the key loader hangs off initrd.target instead.
  boot.initrd.systemd.enable = true;
  # The TPM2 units and the tpm-tis/tpm-crb modules in the initrd (the
  # default when the initrd's systemd has TPM2 support; said here because
  # this layout depends on it).
  boot.initrd.systemd.tpm2.enable = true;
  # The credstore's filesystem.
  boot.initrd.supportedFilesystems = [ "ext4" ];
  # NixOS's import would try `zfs load-key` on rpool/crypt before the
  # credstore is open; rpool-crypt-load-key does it.
  boot.zfs.requestEncryptionCredentials = false;
  # Import without -f: ZFS's hostid guard stays (nixos-anywhere exports the
  # pool after the install, so the first boot imports it cleanly).
  boot.zfs.forceImportRoot = false;

  boot.initrd.systemd.mounts = [
    {
      # The opened credstore, read-only, only for the key.
      what = "/dev/mapper/credstore";
      where = "/etc/credstore";
      type = "ext4";
      options = "ro,nodev,nosuid,noexec";
      requires = [ "systemd-cryptsetup@credstore.service" ];
      after = [ "systemd-cryptsetup@credstore.service" ];
      # Unmounted before switch-root.
      conflicts = [ "initrd-switch-root.target" ];
      before = [ "initrd-switch-root.target" ];
      unitConfig.DefaultDependencies = false;
    }
  ];

  boot.initrd.systemd.services = {
    # The generator's unit for the credstore gets a drop-in: it is stopped
    # (systemd-cryptsetup detach) before switch-root, after the mount above.
    "systemd-cryptsetup@credstore" = {
      overrideStrategy = "asDropin";
      conflicts = [ "initrd-switch-root.target" ];
      before = [ "initrd-switch-root.target" ];
    };
    # Stop jobs run in reverse order: udevd stops only after the credstore
    # is closed (the detach waits for one last udev update, and without it
    # can stall, leaving the credstore open in the real system).
    systemd-udevd.before = [ "systemd-cryptsetup@credstore.service" ];

    # ZFS does not authenticate dataset metadata: whoever can write the
    # disk can put an unencrypted dataset of their own in place of
    # rpool/crypt/root, which would be handed the key and booted. Before
    # the credstore is opened (no password is asked for such a pool) and
    # the key loaded, every dataset the host mounts must have rpool/crypt as
    # its encryption root; otherwise the pool is exported and the boot stops.
    rpool-crypt-check = {
      description = "Check that rpool's datasets are encrypted by rpool/crypt";
      requiredBy = [
        "systemd-cryptsetup@credstore.service"
        "rpool-crypt-load-key.service"
      ];
      before = [
        "systemd-cryptsetup@credstore.service"
        "rpool-crypt-load-key.service"
      ];
      requires = [ "zfs-import-rpool.service" ];
      after = [ "zfs-import-rpool.service" ];
      unitConfig.DefaultDependencies = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        # On the console, where the person at the machine looks.
        StandardOutput = "journal+console";
      };
      script = ''
        for ds in ${builtins.concatStringsSep " " mounted}; do
          root=$(zfs get -H -o value encryptionroot "$ds") || root="nothing (no such dataset)"
          if [ "$root" != rpool/crypt ]; then
            echo "keystone: the encryption root of $ds is $root, not rpool/crypt: it may have been replaced; exporting rpool, loading no key" >&2
            zpool export rpool || echo "keystone: could not export rpool" >&2
            exit 1
          fi
        done
      '';
    };

    # The key as a systemd credential: systemd copies the file into this
    # unit's private credentials directory (%d), zfs reads it from there,
    # and the copy goes away when the unit stops: with /etc/credstore's
    # mount (RequiresMountsFor= passes its stop on), before switch-root.
    rpool-crypt-load-key = {
      description = "Load the key of rpool/crypt from the credstore";
      # Not required by sysroot.mount (see above); remains active until
      # switch-root, so nothing starts it twice.
      requiredBy = [ "initrd.target" ];
      before = [
        "sysroot.mount"
        "initrd.target"
      ];
      requires = [ "zfs-import-rpool.service" ];
      after = [ "zfs-import-rpool.service" ];
      unitConfig = {
        DefaultDependencies = false;
        RequiresMountsFor = "/etc/credstore";
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        LoadCredential = "${keyFile}:/etc/credstore/${keyFile}";
        # zfs.nix puts zfs in the systemd initrd's /bin (extraBin).
        ExecStart = "/bin/zfs load-key -L file://%d/${keyFile} rpool/crypt";
      };
    };
  };
}
