# Disk layout of "web1": ESP and an encrypted ZFS pool "rpool" on "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456".
# disko formats it on install; changing it later needs a reinstall.
#
# Everything lives under rpool/crypt (aes-256-gcm, passphrase). The install
# reads the passphrase from /tmp/secret.key (keystone deploy
# --disk-password-file), then switches the key location to "prompt": the
# boot asks for it on the console.
{ lib, ... }:
{
  disko.devices = {
    disk.main = {
      type = "disk";
      device = "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456";
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
              mountOptions = [ "umask=0077" ];
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
      options.ashift = "12";
      rootFsOptions = {
        compression = "zstd";
        acltype = "posixacl";
        xattr = "sa";
        atime = "off";
        mountpoint = "none";
        "com.sun:auto-snapshot" = "false";
      };
      datasets = {
        crypt = {
          type = "zfs_fs";
          options = {
            mountpoint = "none";
            encryption = "aes-256-gcm";
            keyformat = "passphrase";
            keylocation = "file:///tmp/secret.key";
          };
          postCreateHook = ''
            zfs set keylocation="prompt" rpool/crypt
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
  # Virtio disks without a serial have no /dev/disk/by-id link; every GPT
  # partition has a by-partuuid one. A default, so disko's install test
  # can set its own.
  boot.zfs.devNodes = lib.mkDefault "/dev/disk/by-partuuid";
  # Ask for the passphrase of rpool/crypt in the initrd.
  boot.zfs.requestEncryptionCredentials = true;
  services.zfs.autoScrub.enable = true;
}
