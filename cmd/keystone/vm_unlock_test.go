package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/vm"
)

// standinInitrdSSHD stands in for the initrd's sshd in the Debian guest:
// it runs before the boot's disk password prompt (systemd-cryptsetup of
// the spare volume, asking through systemd's password agent protocol as
// in the initrd), on 2222 with its own host key, and says it is an initrd
// the way the NixOS initrd does (/etc/initrd-release). standinSwitchRoot
// stops it once the volume is open and before the system's sshd starts,
// as the isolate at switch-root stops the initrd's (initrd-ssh.nix:
// wantedBy initrd.target).
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

// vmUnlockBoot reboots web1 into a boot that waits for the spare volume's
// password, with the initrd's sshd stand-in reachable through vm up's
// forward, and gives the password with keystone unlock: a changed initrd
// key is refused with both fingerprints, a wrong password is told apart,
// the right one lets the boot go on to the system. The password is never
// in the guest's process list (sampled), its console, its journal or
// keystone's output.
func vmUnlockBoot(t *testing.T, dir string, g *testhost.VMGuest, st vm.Info, password, pwFile string) {
	start := time.Now()
	initrd, initrdPriv := testhost.GenerateKey(t)
	// A file's text, quoted for the guest's shell.
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'" }
	g.MustRun(t, "umask 077 && printf '%s' "+q(string(initrdPriv))+" > /etc/ssh/initrd_ssh_host_ed25519_key")
	g.MustRun(t, "printf 'spare PARTLABEL=spare none luks,tries=0\\n' > /etc/crypttab && printf '%s' "+
		q("#!/usr/sbin/nft -f\n"+testhost.Ruleset([]int{22, 2222}))+" > /etc/nftables.conf")
	g.MustRun(t, "printf '%s' "+q(standinInitrdSSHD)+" > /etc/systemd/system/standin-initrd-sshd.service && "+
		"printf '%s' "+q(standinSwitchRoot)+" > /etc/systemd/system/standin-switch-root.service && "+
		"mkdir -p /etc/systemd/system/sysinit.target.wants /etc/systemd/system/multi-user.target.wants && "+
		"ln -sf ../standin-initrd-sshd.service /etc/systemd/system/sysinit.target.wants/ && "+
		"ln -sf ../standin-switch-root.service /etc/systemd/system/multi-user.target.wants/")

	flake := t.TempDir()
	pins := filepath.Join(flake, "vms/web1")
	os.MkdirAll(pins, 0o755)
	os.WriteFile(filepath.Join(pins, "ssh_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(g.HostKey), 0o644)
	other, _ := testhost.GenerateKey(t)
	os.WriteFile(filepath.Join(pins, "ssh_initrd_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(other.PublicKey()), 0o644)
	cfg := filepath.Join(t.TempDir(), "keystone.json")
	data, _ := json.Marshal(map[string]any{"vm": true,
		"deploy": map[string]any{"targetHost": "127.0.0.1", "targetUser": "root", "sshPort": 22},
		"unlock": map[string]any{"ssh": map[string]any{"enable": true, "port": 2222}},
		"lint":   map[string]any{"hostName": testhost.VMHostname}})
	os.WriteFile(cfg, data, 0o644)
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not-the-password"), 0o600)
	var output strings.Builder
	unlock := func(pw string) int {
		t.Helper()
		start := time.Now()
		code, stdout, stderr := keystone(t, "unlock", "web1", "--config", cfg, "--flake", flake, "--target", "root@127.0.0.1:"+strconv.Itoa(st.Port),
			"--initrd-port", strconv.Itoa(st.UnlockPort), "-i", g.Image.ClientKeyPath, "--disk-password-file", pw, "--wait", "4m")
		t.Logf("keystone unlock: exit %d after %v\n%s%s", code, time.Since(start).Round(time.Second), stdout, stderr)
		output.WriteString(stdout + stderr)
		return code
	}

	console, err := vm.ConsoleLog(dir, "web1")
	if err != nil {
		t.Fatal(err)
	}
	logged := func() string { b, _ := os.ReadFile(console); return string(b) }
	from := len(logged())
	g.Run(t, "systemctl reboot")
	// Until the old boot is gone its sshd still answers: wait for the
	// stand-in's banner.
	waitFor(t, 4*time.Minute, "the stand-in initrd's sshd", func() bool {
		return strings.HasPrefix(tcpBanner(st.UnlockPort), "SSH-2.0-")
	})

	// The initrd's key is not the pinned one: refused, both fingerprints.
	if code := unlock(pwFile); code != 2 || !strings.Contains(output.String(), ssh.FingerprintSHA256(initrd.PublicKey())) ||
		!strings.Contains(output.String(), ssh.FingerprintSHA256(other.PublicKey())) {
		t.Errorf("a changed initrd key: exit %d, want 2 naming both fingerprints", code)
	}
	os.WriteFile(filepath.Join(pins, "ssh_initrd_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(initrd.PublicKey()), 0o644)

	// The guest's process list, sampled every 20 ms from inside the
	// stand-in initrd until it goes.
	c, err := ssh.Dial("tcp", "127.0.0.1:"+strconv.Itoa(st.UnlockPort), &ssh.ClientConfig{User: "root",
		Auth: []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			key, err := os.ReadFile(g.Image.ClientKeyPath)
			if err != nil {
				return nil, err
			}
			s, err := ssh.ParsePrivateKey(key)
			return []ssh.Signer{s}, err
		})},
		HostKeyCallback: ssh.FixedHostKey(initrd.PublicKey()), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("the stand-in initrd's sshd: %v", err)
	}
	s, _ := c.NewSession()
	s.Run("setsid sh -c 'while :; do ps -eww -o args; sleep 0.02; done >/run/ps.log 2>&1' </dev/null >/dev/null 2>&1 &")
	c.Close()

	if code := unlock(wrong); code != 4 || !strings.Contains(output.String(), "the host asked again: the password is wrong") {
		t.Errorf("a wrong password: exit %d, want 4", code)
	}
	if code := unlock(pwFile); code != 0 || !strings.Contains(output.String(), "web1: unlocked: the system answers on") {
		t.Errorf("the right password: exit %d, want 0", code)
	}
	g.MustRun(t, "cryptsetup status spare >/dev/null && test ! -e /etc/initrd-release")
	ps := g.MustRun(t, "cat /run/ps.log")
	if !strings.Contains(ps, "systemd-cryptsetup") {
		t.Errorf("the sampled process list never shows systemd-cryptsetup:\n%.2000s", ps)
	}
	journal := g.MustRun(t, "journalctl -b --no-pager -o cat")
	for where, text := range map[string]string{"process list": ps, "console": logged()[from:], "journal": journal, "keystone's output": output.String()} {
		if strings.Contains(text, password) || strings.Contains(text, "not-the-password") {
			t.Errorf("a password is in the guest's %s", where)
		}
	}
	g.MustRun(t, "rm -f /etc/crypttab /etc/ssh/initrd_ssh_host_ed25519_key /etc/systemd/system/standin-*.service "+
		"/etc/systemd/system/sysinit.target.wants/standin-initrd-sshd.service /etc/systemd/system/multi-user.target.wants/standin-switch-root.service")
	t.Logf("the unlock boot took %v", time.Since(start).Round(time.Second))
}
