# keystone.server: the Keystone server profile. Key-only SSH, mDNS by avahi,
# a firewall that opens only SSH (and avahi's UDP 5353), systemd-resolved,
# and a few admin tools. Everything is a default a host can override.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.keystone.server;
in
{
  options.keystone.server.enable = lib.mkEnableOption "the Keystone server profile: key-only SSH, mDNS, a firewall with only SSH open, systemd-resolved";

  config = lib.mkIf cfg.enable {
    services.openssh = {
      enable = lib.mkDefault true;
      openFirewall = lib.mkDefault true;
      settings = {
        PermitRootLogin = lib.mkDefault "prohibit-password";
        PasswordAuthentication = lib.mkDefault false;
        KbdInteractiveAuthentication = lib.mkDefault false;
      };
    };

    services.avahi = {
      enable = lib.mkDefault true;
      nssmdns4 = lib.mkDefault true;
      openFirewall = lib.mkDefault true;
      publish = {
        enable = lib.mkDefault true;
        addresses = lib.mkDefault true;
      };
    };

    services.resolved.enable = lib.mkDefault true;
    # avahi answers mDNS; two responders on one host fight over the name
    # (avahi renames itself host-2.local, host-3.local, …). A drop-in,
    # because 25.11 configures resolved through extraConfig and 26.05
    # through settings (nixpkgs PR 416720, issue 525388).
    environment.etc."systemd/resolved.conf.d/keystone-mdns.conf".text = ''
      [Resolve]
      MulticastDNS=no
      LLMNR=no
    '';

    networking.firewall.enable = lib.mkDefault true;

    environment.systemPackages = with pkgs; [
      vim
      git
      htop
      tmux
      lsof
    ];

    boot.kernel.sysctl = {
      "kernel.dmesg_restrict" = lib.mkDefault 1;
      # nixpkgs' sysctl.nix has mkDefault 1, and two definitions at one
      # priority conflict; 900 beats it and still yields to a host's own.
      "kernel.kptr_restrict" = lib.mkOverride 900 2;
      "net.ipv4.tcp_syncookies" = lib.mkDefault 1;
      "net.ipv4.conf.all.accept_redirects" = lib.mkDefault 0;
      "net.ipv4.conf.default.accept_redirects" = lib.mkDefault 0;
      "net.ipv6.conf.all.accept_redirects" = lib.mkDefault 0;
      "net.ipv6.conf.default.accept_redirects" = lib.mkDefault 0;
      "net.ipv4.conf.all.send_redirects" = lib.mkDefault 0;
    };

    nix.settings.experimental-features = [
      "nix-command"
      "flakes"
    ];
    nix.gc = {
      automatic = lib.mkDefault true;
      dates = lib.mkDefault "weekly";
      options = lib.mkDefault "--delete-older-than 30d";
    };
  };
}
