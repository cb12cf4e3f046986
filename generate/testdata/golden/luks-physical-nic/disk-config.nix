# Disk layout of "web1": ESP and LUKS2 with ext4 inside, on "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456".
# disko formats it on install; changing it later needs a reinstall.
#
# The install reads the LUKS password from /tmp/secret.key (keystone deploy
# --disk-password-file). The boot asks for it, or, once a TPM2 is enrolled
# with `systemd-cryptenroll --tpm2-device=auto /dev/disk/by-partlabel/disk-main-luks`,
# unlocks without asking.
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
          luks = {
            size = "100%";
            content = {
              type = "luks";
              name = "crypted";
              passwordFile = "/tmp/secret.key";
              settings = {
                allowDiscards = true;
                # Unlock with the TPM2 once enrolled; ask for the password
                # otherwise, again after a wrong one, for ever (tries=0; the
                # default, 3, fails the boot into a locked emergency mode).
                crypttabExtraOpts = [
                  "tpm2-device=auto"
                  "tries=0"
                ];
              };
              content = {
                type = "filesystem";
                format = "ext4";
                mountpoint = "/";
              };
            };
          };
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
  # crypttab options such as tpm2-device= need the systemd initrd.
  boot.initrd.systemd.enable = true;
}
