# Host "web1", rendered by `keystone new-host`; this file is yours now.
#
# Safe to change and redeploy at any time: keys, packages, services,
# keystone.deploy.*. Changing disk-config.nix, the layout or
# networking.hostId needs a reinstall (keystone deploy --reinstall),
# which wipes the disk.
{ modulesPath, ... }:
{
  imports = [
    ./disk-config.nix
  ];

  networking.hostName = "web1";
  # ZFS will not import a pool last used by another hostId.
  networking.hostId = "9e9fd68e";
  nixpkgs.hostPlatform = "x86_64-linux";

  # Storage and USB drivers most servers boot from; add yours if the
  # initrd cannot find the disk (see `lspci -k` on the target).
  boot.initrd.availableKernelModules = [ "nvme" "xhci_pci" "ahci" "usbhid" "usb_storage" "sd_mod" ];
  hardware.enableRedistributableFirmware = true;

  # The initrd runs sshd on port 2222 for `keystone unlock` (the disk
  # password from afar); it needs the driver of the network card the host
  # is reached through.
  # A nixos-facter report (deploy --hardware-config) adds it; without one,
  # name it here (`lspci -k` on the target), such as:
  # keystone.unlock.ssh.networkModules = [ "igb" ];

  # The Keystone server profile: key-only SSH, mDNS, a firewall with only
  # SSH open, systemd-resolved.
  keystone.server.enable = true;

  users.users.root.openssh.authorizedKeys.keys = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6d9Bt6FtzY8O0GiDWS2ZDMEY5LHg6xnZaRBPYgdFzK demo@keystone"
  ];

  # The release this host was installed with; leave it as it is.
  system.stateVersion = "25.11";
}
