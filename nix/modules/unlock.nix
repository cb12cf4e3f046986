# keystone.unlock: the disk password over SSH from the initrd, for hosts
# nobody can reach at the console (`keystone unlock NAME`).
#
# nixos-25.11's initrd-ssh.nix runs the initrd's sshd only when
# boot.initrd.network.enable (or boot.initrd.systemd.network.enable) is
# set; with boot.initrd.network.enable, network-interfaces-systemd.nix
# copies the host's own networking.* (DHCP on ethernet, or its static
# addresses) into boot.initrd.systemd.network. The password is answered
# with systemd-tty-ask-password-agent, which systemd/initrd.nix puts in the
# initrd's /bin (initrdBin has the systemd package).
{ config, lib, ... }:
let
  cfg = config.keystone.unlock.ssh;
  initrd = config.boot.initrd;
in
{
  options.keystone.unlock.ssh = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = config.keystone.deploy.diskSecret && initrd.systemd.enable;
      defaultText = lib.literalExpression "config.keystone.deploy.diskSecret && config.boot.initrd.systemd.enable";
      description = "An SSH server in the initrd, so `keystone unlock` can give the disk password of a host whose TPM2 does not open its disk. On by default for the encrypted layouts (they ask for a password at boot and use the systemd initrd).";
    };
    port = lib.mkOption {
      type = lib.types.port;
      default = 2222;
      description = "Port of the initrd's sshd. Not the main sshd's: the initrd has its own host key, and on one port the two keys would collide in known_hosts.";
    };
    hostKey = lib.mkOption {
      # A string, never a path: initrd-ssh.nix copies a path literal into
      # the world-readable store; a string is added to the initrd from the
      # live file system when the bootloader is installed (boot.initrd.secrets).
      type = lib.types.str;
      default = "/etc/ssh/initrd_ssh_host_ed25519_key";
      description = "Where the initrd's ed25519 host key lives on the host, as a string. `keystone deploy` makes this key (never the main host key: it sits unencrypted in the initrd on the ESP), installs it here and pins its public key as vms/NAME/ssh_initrd_host_ed25519_key.pub.";
    };
    networkModules = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "igb" ];
      description = "Kernel modules of the network cards the initrd needs to reach the network (added to boot.initrd.availableKernelModules). With a nixos-facter report (facter.json) nixpkgs' hardware.facter adds them itself; `keystone new-host` sets virtio_net for --vm and the module of --initrd-nic; `keystone deploy` refuses a host whose initrd lacks the driver of the card it is reached through.";
    };
    initrdModules = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      readOnly = true;
      default = initrd.availableKernelModules ++ initrd.kernelModules;
      defaultText = lib.literalExpression "config.boot.initrd.availableKernelModules ++ config.boot.initrd.kernelModules";
      description = "The kernel modules the initrd carries, which deploy compares with the target's network drivers.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = initrd.systemd.enable;
        message = "keystone.unlock.ssh needs the systemd initrd (boot.initrd.systemd.enable = true)";
      }
      {
        assertion = builtins.substring 0 1 cfg.hostKey == "/";
        message = "keystone.unlock.ssh.hostKey must be an absolute path, written as a string";
      }
      {
        assertion = cfg.port != 22 && !(builtins.elem cfg.port config.services.openssh.ports);
        message = "keystone.unlock.ssh.port must differ from the main sshd's ports, so the initrd's host key has its own known_hosts entry";
      }
    ];
    boot.initrd.network.enable = true;
    boot.initrd.network.ssh = {
      enable = true;
      port = cfg.port;
      hostKeys = [ cfg.hostKey ];
      # authorizedKeys defaults to users.users.root.openssh.authorizedKeys.keys.
    };
    boot.initrd.availableKernelModules = cfg.networkModules;
  };
}
