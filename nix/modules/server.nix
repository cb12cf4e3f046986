# keystone.server: the Keystone server profile. Key-only SSH, mDNS by avahi,
# a firewall that opens only SSH (and avahi's UDP 5353), systemd-resolved,
# and a few admin tools. Everything is a default a host can override.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.keystone.server;
  # nixos-25.11's resolved.nix configures resolved through extraConfig; the
  # newer one through services.resolved.settings, and asserts that
  # settings.Resolve.MulticastDNS is false when avahi is on, which a
  # drop-in file cannot satisfy (nixpkgs PR 416720, issue 525388).
  resolvedSettings = options ? services.resolved.settings;
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

    # avahi answers mDNS; two responders on one host fight over the name
    # (avahi renames itself host-2.local, host-3.local, …). So resolved's
    # mDNS and LLMNR are off: through the option where nixpkgs has it, by a
    # drop-in file, which every resolved reads, where it has not.
    services.resolved =
      {
        enable = lib.mkDefault true;
      }
      // lib.optionalAttrs resolvedSettings {
        settings.Resolve = {
          MulticastDNS = lib.mkDefault false;
          LLMNR = lib.mkDefault false;
        };
      };
    environment.etc = lib.optionalAttrs (!resolvedSettings) {
      "systemd/resolved.conf.d/keystone-mdns.conf".text = ''
        [Resolve]
        MulticastDNS=no
        LLMNR=no
      '';
    };

    networking.firewall.enable = lib.mkDefault true;

    environment.systemPackages = with pkgs; [
      vim
      git
      htop
      tmux
      lsof
    ];

    # A sysctl takes one definition per priority: nixpkgs' sysctl.nix
    # (kptr_restrict) and profiles/hardened.nix set some of these with
    # mkDefault, so ours sit just above that and below a host's own.
    boot.kernel.sysctl = lib.mapAttrs (_: lib.mkOverride 900) {
      "kernel.dmesg_restrict" = 1;
      "kernel.kptr_restrict" = 2;
      "net.ipv4.tcp_syncookies" = 1;
      "net.ipv4.conf.all.accept_redirects" = 0;
      "net.ipv4.conf.default.accept_redirects" = 0;
      "net.ipv6.conf.all.accept_redirects" = 0;
      "net.ipv6.conf.default.accept_redirects" = 0;
      "net.ipv4.conf.all.send_redirects" = 0;
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
