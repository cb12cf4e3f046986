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

// vmUnlockBoot reboots web1 into a boot that waits for the spare volume's
// password, with the initrd's sshd stand-in (testhost.StandInInitrd)
// reachable through vm up's forward, and gives the password with keystone unlock: a changed initrd
// key is refused with both fingerprints, a wrong password is told apart,
// the right one lets the boot go on to the system. The password is never
// in the guest's process list (sampled), its console, its journal or
// keystone's output.
func vmUnlockBoot(t *testing.T, dir string, g *testhost.VMGuest, st vm.Info, password, pwFile string) {
	start := time.Now()
	initrd, initrdPriv := testhost.GenerateKey(t)
	g.StandInInitrd(t, initrdPriv)

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
	g.RemoveStandInInitrd(t)
	t.Logf("the unlock boot took %v", time.Since(start).Round(time.Second))
}
