package testhost

import (
	"testing"

	"github.com/keystone-nix/keystone/internal/remote"
)

// The initrd of an encrypted NixOS host, as a Debian guest stands in for
// it: its boot waits for the spare partition's LUKS password, asked by
// systemd-cryptsetup through systemd's password agent protocol as in the
// initrd, while an sshd on InitrdPort with a host key of its own answers
// and says it is an initrd the way the NixOS initrd does
// (/etc/initrd-release). standinSwitchRoot stops it once the volume is
// open and before the system's sshd starts, as the isolate at switch-root
// stops the initrd's (initrd-ssh.nix: wantedBy initrd.target).
const (
	standinInitrdSSHD = `[Unit]
Description=initrd sshd (stand-in)
DefaultDependencies=no
Wants=systemd-networkd.service
After=systemd-networkd.service nftables.service
[Service]
ExecStartPre=/bin/sh -c "mkdir -p /run/sshd && cp /usr/lib/os-release /etc/initrd-release"
ExecStart=/usr/sbin/sshd -D -p 2222 -o PidFile=none -h /etc/ssh/initrd_ssh_host_ed25519_key
ExecStopPost=/bin/rm -f /etc/initrd-release
`
	standinSwitchRoot = `[Unit]
Description=switch-root (stand-in): the initrd's sshd goes
DefaultDependencies=no
After=cryptsetup.target
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/bin/systemctl stop standin-initrd-sshd.service
`
)

// InitrdPort is where the stand-in initrd's sshd listens in the guest
// (keystone.unlock.ssh.port's default).
const InitrdPort = 2222

// SpareDevice is the image's spare partition.
const SpareDevice = "/dev/disk/by-partlabel/spare"

// StandInInitrd makes the guest's next boots wait at the stand-in initrd:
// the spare partition must already be a LUKS volume; hostKeyPEM is the
// initrd sshd's private key. Until RemoveStandInInitrd, /etc/nftables.conf
// opens 22 and InitrdPort at boot.
func (g *VMGuest) StandInInitrd(t testing.TB, hostKeyPEM []byte) {
	t.Helper()
	g.MustRun(t, "umask 077 && printf '%s' "+remote.Quote(string(hostKeyPEM))+" > /etc/ssh/initrd_ssh_host_ed25519_key")
	g.MustRun(t, "printf 'spare PARTLABEL=spare none luks,tries=0\\n' > /etc/crypttab && printf '%s' "+
		remote.Quote("#!/usr/sbin/nft -f\n"+Ruleset([]int{22, InitrdPort}))+" > /etc/nftables.conf")
	g.MustRun(t, "printf '%s' "+remote.Quote(standinInitrdSSHD)+" > /etc/systemd/system/standin-initrd-sshd.service && "+
		"printf '%s' "+remote.Quote(standinSwitchRoot)+" > /etc/systemd/system/standin-switch-root.service && "+
		"mkdir -p /etc/systemd/system/sysinit.target.wants /etc/systemd/system/multi-user.target.wants && "+
		"ln -sf ../standin-initrd-sshd.service /etc/systemd/system/sysinit.target.wants/ && "+
		"ln -sf ../standin-switch-root.service /etc/systemd/system/multi-user.target.wants/")
}

// RemoveStandInInitrd undoes StandInInitrd (the nftables.conf stays).
func (g *VMGuest) RemoveStandInInitrd(t testing.TB) {
	t.Helper()
	g.MustRun(t, "rm -f /etc/crypttab /etc/ssh/initrd_ssh_host_ed25519_key /etc/systemd/system/standin-*.service "+
		"/etc/systemd/system/sysinit.target.wants/standin-initrd-sshd.service /etc/systemd/system/multi-user.target.wants/standin-switch-root.service")
}
