# Disk layout of "web1": ESP and a plain ext4 root on "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456", with
# no encryption: for throwaway VMs. disko formats it on install; changing it
# later needs a reinstall.
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
          swap = {
            size = "4G";
            content.type = "swap";
          };
          root = {
            size = "100%";
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

  # GRUB for UEFI and BIOS firmware alike; disko points it at the EF02
  # partition, and the removable EFI path needs no NVRAM entry.
  boot.loader.grub = {
    enable = true;
    efiSupport = true;
    efiInstallAsRemovable = true;
  };
}
