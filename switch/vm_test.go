package switcher

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/unlock"
	"github.com/keystone-nix/keystone/vm"
)

// TestSwitchBootVM is the boot path on a QEMU VM, with real reboots of an
// encrypted host: every boot waits at the stand-in initrd for the spare
// volume's password (testhost.StandInInitrd, systemd-cryptsetup asking
// through the password agent protocol, an sshd with its own key on the
// initrd port), and a unit activates the boot default as NixOS's stage 2
// does. switch --boot with a disk password answers the initrd at each
// reboot over the forwarded port, pinned to the initrd key:
//   - a password that does not open the volume is refused before anything
//     changes;
//   - a system that opens 8080 is rebooted into, unlocked, and fails
//     verify: the old generation is made the default again and the host
//     reboots into it, unlocked again.
//
// A kept reboot is TestSwitch's, on nspawn: every VM boot costs a minute.
//
// The password is never in switch's output nor in the guest's journal.
func TestSwitchBootVM(t *testing.T) {
	testhost.RequireRoot(t)
	img := testhost.BuildVMImage(t)
	w := newWorld(t)
	start := time.Now()
	dir := t.TempDir()
	t.Cleanup(func() {
		vm.Down(context.Background(), dir, "switch", 5*time.Second, nil)
		t.Logf("the VM test took %v", time.Since(start).Round(time.Second))
	})
	// SeaBIOS and direct kernel boot: the fast way, as it boots three times.
	bios := true
	st, err := vm.Up(context.Background(), vm.Options{Dir: dir, Name: "switch", Image: img.Disk, BIOS: &bios, Memory: "1G", CPUs: 1,
		Kernel: img.Kernel, Initrd: img.Initrd, Append: img.Cmdline})
	if err != nil {
		t.Fatalf("vm up: %v", err)
	}
	g := img.Guest(st.Port)
	t.Logf("the VM is up after %v", time.Since(start).Round(time.Second))
	g.MustRun(t, "printf '%s' '"+string(ssh.MarshalAuthorizedKey(w.signer.PublicKey()))+"' >> /root/.ssh/authorized_keys")

	// The encrypted boot.
	const password = "pw-switch-Vq72"
	g.MustRun(t, "printf %s '"+password+"' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - "+testhost.SpareDevice)
	initrdKey, initrdPriv := testhost.GenerateKey(t)
	g.StandInInitrd(t, initrdPriv)
	for _, name := range []string{"base", "web"} {
		k := w.config(name, testhost.VMHostname, "127.0.0.1", st.Port, "sshd.service")
		k["unlock"] = map[string]any{"ssh": map[string]any{"enable": true, "port": testhost.InitrdPort}}
		k["verify"].(map[string]any)["expectations"].(map[string]any)["luks"] = map[string]any{"devices": []string{},
			"volumes": []map[string]any{{"name": "spare", "device": testhost.SpareDevice, "tpm2": false}}}
		w.write(t, name, k, img.HostKey)
		mustWrite(t, filepath.Join(w.flake, "vms", name, unlock.PinName), string(ssh.MarshalAuthorizedKey(initrdKey.PublicKey())), 0o644)
	}
	base := w.installWith(t, "base", " && "+stage2+" && /nix/var/nix/profiles/system/bin/switch-to-configuration boot",
		func(cmd string) (string, error) { return g.Run(t, cmd) })
	// What the guest runs, what its profile and its boot default are, and
	// its boot.
	onGuest := func() string {
		return g.MustRun(t, "readlink /run/current-system; readlink -f /nix/var/nix/profiles/system; cat /boot/keystone-default; cat /proc/sys/kernel/random/boot_id")
	}
	bootOf := func(s string) string { return strings.Fields(s)[3] }
	var output strings.Builder
	boot := func(name, pw string) Result {
		t.Helper()
		pwFile := filepath.Join(t.TempDir(), "pw")
		os.WriteFile(pwFile, []byte(pw), 0o600)
		password, err := unlock.FilePassword(pwFile)
		if err != nil {
			t.Fatal(err)
		}
		o := opts(time.Minute)
		o.Boot, o.RebootWait, o.DiskPassword, o.InitrdPort = true, 4*time.Minute, password, st.UnlockPort
		results, u := run(t, w, o, name)
		output.WriteString(u.String())
		return results[0]
	}

	before := onGuest()
	if r := boot("web", "not-the-password"); r.Outcome != Refused || r.ExitCode != ExitRefused ||
		!strings.Contains(r.Reason, "the disk password does not open spare") {
		t.Errorf("a wrong disk password: %+v, want refused", r)
	}
	if after := onGuest(); after != before {
		t.Errorf("the refused switch changed the host:\n%s\n%s", before, after)
	}
	if !strings.HasPrefix(before, strings.Repeat(base+"\n", 3)) {
		t.Fatalf("installed: %s, want %s", before, base)
	}

	r := boot("web", password)
	if r.Outcome != RolledBack || r.ExitCode != ExitVerifyFailed || !strings.Contains(r.Reason, "firewall") {
		t.Fatalf("web --boot: %+v", r)
	}
	back := onGuest()
	if !strings.HasPrefix(back, strings.Repeat(base+"\n", 3)) || bootOf(back) == bootOf(before) {
		t.Errorf("after web --boot failed, the host runs, boots and booted:\n%s", back)
	}
	g.MustRun(t, "cryptsetup status spare >/dev/null && test ! -e /etc/initrd-release")
	if open := g.MustRun(t, "nft list ruleset | grep -c 8080 || true"); strings.TrimSpace(open) != "0" {
		t.Errorf("8080 is still open after the rollback")
	}

	out := output.String()
	if n := strings.Count(out, "password accepted; waiting for the system"); n != 2 {
		t.Errorf("switch answered the initrd %d times, want 2 (into web, and back):\n%s", n, out)
	}
	for _, want := range []string{"at each reboot, answer its initrd's password request over SSH at 127.0.0.1:", "(the password opens spare)", "web: up again; verifying", "rolled back: web runs and boots"} {
		if !strings.Contains(out, want) {
			t.Errorf("switch's output lacks %q", want)
		}
	}
	journal := g.MustRun(t, "journalctl --no-pager -o cat")
	for where, text := range map[string]string{"switch's output": out, "the guest's journal": journal} {
		if strings.Contains(text, password) || strings.Contains(text, "not-the-password") {
			t.Errorf("a disk password is in %s", where)
		}
	}
}
