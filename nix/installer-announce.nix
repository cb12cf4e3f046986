# The installer's NixOS module that announces it on the local network as
# _keystone-installer._tcp (mDNS, avahi), for `keystone discover`;
# keystoneVersion is a module argument (installer-iso.nix sets it). Option names checked against
# nixos-25.11's nixos/modules/services/networking/avahi-daemon.nix and
# ssh/sshd.nix (docs/options.md).
#
# The TXT records hold what only the booted machine knows (its new SSH
# host key's fingerprint, UEFI or BIOS, its disks), so the service file
# is written at boot by ./installer-announce.sh, the one source of it: the
# discover tests run the same script in their test hosts.
{
  config,
  pkgs,
  keystoneVersion,
  ...
}:
let
  version = keystoneVersion;
  inherit (pkgs.stdenv.hostPlatform) system;
  quote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  port = toString (builtins.head config.services.openssh.ports);
in
{
  services.avahi = {
    enable = true;
    # avahi publishes static services only with publishing on, and the
    # SRV record names <host>.local, which needs its address records.
    publish.enable = true;
    publish.addresses = true;
    openFirewall = true; # UDP 5353 (its default, said here because discover needs it)
  };

  # The fingerprint that discover shows came over the network: the console
  # is where to check it (the login prompt says how; the unit prints it at boot).
  services.getty.helpLine = ''

    keystone discover shows this machine's SSH host key fingerprint; compare it with:
      ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub
  '';

  systemd.services.keystone-installer-announce = {
    description = "Announce this keystone installer over mDNS";
    wantedBy = [ "multi-user.target" ];
    # The host key is made by sshd-keygen.service (sshd.nix; older
    # releases made it in sshd.service's preStart, hence both), and the
    # announced port answers once sshd runs. avahi-daemon reads
    # /etc/avahi/services when it starts, so the file must be there first.
    wants = [ "sshd-keygen.service" ];
    after = [
      "sshd-keygen.service"
      "sshd.service"
    ];
    before = [ "avahi-daemon.service" ];
    path = [
      pkgs.openssh
      pkgs.util-linux
      pkgs.gawk
      pkgs.gnused
      pkgs.coreutils
    ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      StandardOutput = "journal+console"; # the fingerprint, on the screen
    };
    script = "${pkgs.runtimeShell} ${./installer-announce.sh} ${quote version} ${quote system} ${quote port}";
  };
}
