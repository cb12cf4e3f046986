package main

import (
	"encoding/json"
	"errors"
	"fmt"
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

// vmDeploy installs the running VM twice with keystone deploy, through the
// command vm up printed and the stand-in nixos-anywhere. The guest is
// Debian, so deploy takes it for a Linux that nixos-anywhere kexecs, and
// the forwarded port is the one after kexec.
//
// The first installed system leaves port 8080 open (a listener its
// firewall lets in) and has the spare LUKS volume in its crypttab: the
// stand-in reboots the VM into a boot that waits at the disk password
// prompt, where sshd does not answer, until vm unlock types the password
// (a wrong one first); deploy then sees the new boot, and its final verify
// and keystone verify exit 1. The second, with --reinstall, is the system
// as configured, and its install hangs on the way down until vm reset:
// verify passes.
func vmDeploy(t *testing.T, dir string, g *testhost.VMGuest, vmUpOut, password, pwFile string) {
	port := strconv.Itoa(g.Port)
	target := "root@127.0.0.1:" + port
	printed := "keystone deploy web1 --target " + target + " --post-kexec-ssh-port " + port
	if !strings.Contains(vmUpOut, printed) {
		t.Fatalf("vm up did not print %q", printed)
	}
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "nixos-anywhere"), []byte(testhost.NixosAnywhere), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	argvFile := filepath.Join(t.TempDir(), "argv")
	t.Setenv("STANDIN_ARGV", argvFile)
	flake := t.TempDir()
	// The spare volume opens by its password only.
	g.MustRun(t, "systemd-cryptenroll --wipe-slot=tpm2 "+spareDevice)

	disk := "/dev/disk/by-id/virtio-ks-web1"
	size := strings.TrimSpace(g.MustRun(t, "blockdev --getsize64 "+disk))
	expect := map[string]any{
		"hostname": testhost.VMHostname,
		"services": []string{"sshd.service", "systemd-resolved.service", "nftables.service"},
		"firewall": map[string]any{"enable": true, "backend": "nftables", "tcp": []int{22}, "udp": []int{5353}},
		"sshd":     map[string]any{"ports": []int{22}, "permitRootLogin": "prohibit-password"},
		"zfs":      nil, "luks": nil, "mdns": nil,
		"mounts": []string{"/"},
	}
	cfg := filepath.Join(t.TempDir(), "keystone.json")
	data, _ := json.Marshal(map[string]any{"vm": true,
		"deploy": map[string]any{"targetHost": "127.0.0.1", "targetUser": "root", "sshPort": 22, "buildOn": "auto",
			"disks": []string{disk}, "partitionSizes": map[string][]string{disk: {"1M", "500M", "100%"}}, "diskSecret": true},
		"verify": map[string]any{"expectations": expect}})
	os.WriteFile(cfg, data, 0o644)
	expectFile := filepath.Join(t.TempDir(), "expect.json")
	data, _ = json.Marshal(expect)
	os.WriteFile(expectFile, data, 0o644)

	// deploy runs keystone deploy while during does what a user at the
	// VM would, and returns its exit code and stdout.
	deploy := func(system, mode string, during func() error, extra ...string) (int, string) {
		t.Helper()
		t.Setenv("STANDIN_SYSTEM", system)
		t.Setenv("STANDIN_MODE", mode)
		os.Remove(argvFile)
		os.Remove(argvFile + ".done")
		before := g.BootID(t)
		args := append(strings.Fields(printed)[1:], "--config", cfg, "--flake", flake, "-i", g.Image.ClientKeyPath,
			"--disk-password-file", pwFile, "--yes", "--wait", "4m")
		user := make(chan error, 1)
		go func() { user <- during() }()
		start := time.Now()
		code, stdout, stderr := keystone(t, append(args, extra...)...)
		t.Logf("deploy %s: exit %d after %v\n%s%s", strings.Join(extra, " "), code, time.Since(start).Round(time.Second), stdout, stderr)
		if err := <-user; err != nil {
			t.Error(err)
		}
		if strings.Contains(stdout+stderr, password) {
			t.Error("deploy printed the disk password")
		}
		// The new boot answers with the installed host key, now pinned.
		pin, err := os.ReadFile(filepath.Join(flake, "vms/web1/ssh_host_ed25519_key.pub"))
		if err != nil {
			t.Fatalf("no pin after deploy: %v", err)
		}
		if g.HostKey, _, _, _, err = ssh.ParseAuthorizedKey(pin); err != nil {
			t.Fatal(err)
		}
		if after := g.BootID(t); after == before {
			t.Error("the VM did not reboot")
		}
		argv, _ := os.ReadFile(argvFile)
		for _, want := range []string{"--target-host\nroot@127.0.0.1\n", "-p\n" + port + "\n", "--post-kexec-ssh-port\n" + port + "\n"} {
			if !strings.Contains(string(argv), want) {
				t.Errorf("nixos-anywhere argv lacks %q:\n%s", want, argv)
			}
		}
		return code, stdout
	}
	verify := func() (int, string) {
		t.Helper()
		code, stdout, stderr := keystone(t, "verify", "web1", "--expect", expectFile, "--flake", flake, "--target", target, "-i", g.Image.ClientKeyPath)
		t.Logf("verify: exit %d\n%s%s", code, stdout, stderr)
		return code, stdout
	}

	console, err := vm.ConsoleLog(dir, "web1")
	if err != nil {
		t.Fatal(err)
	}
	logged := func() string { b, _ := os.ReadFile(console); return string(b) }
	from := len(logged())
	unlock := func() error {
		prompt := time.Now()
		for !strings.Contains(logged()[from:], "Please enter passphrase for disk spare") {
			if time.Since(prompt) > 4*time.Minute {
				return errors.New("no disk password prompt on the console of the new boot")
			}
			time.Sleep(time.Second)
		}
		time.Sleep(3 * time.Second)
		if g.SSHBanner() {
			return errors.New("sshd answers while the boot waits for the disk password")
		}
		wrong := filepath.Join(t.TempDir(), "wrong")
		os.WriteFile(wrong, []byte("not-the-password"), 0o600)
		if code, out := keystoneVM(t, dir, "unlock", "web1", "--disk-password-file", wrong); code != 1 || !strings.Contains(out, "not accepted") {
			return fmt.Errorf("vm unlock with a wrong password: exit %d", code)
		}
		if code, _ := keystoneVM(t, dir, "unlock", "web1", "--disk-password-file", pwFile); code != 0 {
			return fmt.Errorf("vm unlock: exit %d", code)
		}
		return nil
	}
	code, out := deploy(installedSystem(t, []int{22, 8080}, true), "", unlock)
	// Pre-flight saw the guest's system, RAM and disk.
	for _, want := range []string{"Debian GNU/Linux 12", "GiB RAM", "WIPE       " + disk + " -> /dev/vda", "serial ks-web1",
		"asks for its disk password on its console", "is up with its new system", "opens tcp 22,8080"} {
		if !strings.Contains(out, want) {
			t.Errorf("deploy output lacks %q", want)
		}
	}
	if code != 1 {
		t.Errorf("deploy of a system with port 8080 open: exit %d, want 1 (verify failed)", code)
	}
	if !strings.Contains(out, bytesGiB(size)) {
		t.Errorf("the plan does not show the disk's size %s", bytesGiB(size))
	}
	g.MustRun(t, "cryptsetup status spare >/dev/null")
	if l := logged(); strings.Contains(l, password) || strings.Contains(l, "not-the-password") || !strings.Contains(l[from:], "login:") {
		t.Errorf("the console log holds the password, or no login prompt:\n%s", l[from:])
	}
	if code, out := verify(); code != 1 || !strings.Contains(out, "opens tcp 22,8080") {
		t.Errorf("verify with port 8080 open: exit %d, want 1", code)
	}

	// Installed again (the pinned key answers, so only with --reinstall),
	// and the install hangs on its way down: a hard reset.
	reset := func() error {
		for start := time.Now(); ; time.Sleep(time.Second) {
			if _, err := os.Stat(argvFile + ".done"); err == nil {
				break
			}
			if time.Since(start) > 2*time.Minute {
				return errors.New("the stuck install never finished")
			}
		}
		if code, _ := keystoneVM(t, dir, "reset", "web1"); code != 0 {
			return fmt.Errorf("vm reset: exit %d", code)
		}
		return nil
	}
	if code, out := deploy(installedSystem(t, []int{22}, false), "stuck", reset, "--reinstall"); code != 0 || !strings.Contains(out, "is up with its new system") {
		t.Errorf("deploy --reinstall: exit %d, want 0", code)
	}
	if code, _ := verify(); code != 0 {
		t.Errorf("verify after the reinstall: exit %d, want 0", code)
	}
	if got := g.MustRun(t, "ss -Htln sport = 8080; test ! -e /etc/crypttab"); got != "" {
		t.Errorf("port 8080 still listens after the reinstall: %s", got)
	}
}

// installedSystem is the part of a new system the stand-in installs: the
// nftables firewall (nixos-fw, enabled) opening tcp, and with extra a
// socket unit on port 8080 and the spare LUKS volume in crypttab, opened
// by its password at boot.
func installedSystem(t *testing.T, tcp []int, extra bool) string {
	dir := t.TempDir()
	write := func(p, data string) {
		p = filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(p, to string) {
		p = filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(to, p); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/nftables.conf", "#!/usr/sbin/nft -f\n"+testhost.Ruleset(tcp))
	link("etc/systemd/system/sysinit.target.wants/nftables.service", "/lib/systemd/system/nftables.service")
	if extra {
		write("etc/crypttab", "spare PARTLABEL=spare none luks\n")
		write("etc/systemd/system/keystone-open.socket", "[Socket]\nListenStream=8080\nAccept=yes\n[Install]\nWantedBy=sockets.target\n")
		write("etc/systemd/system/keystone-open@.service", "[Service]\nExecStart=/bin/true\nStandardInput=socket\n")
		link("etc/systemd/system/sockets.target.wants/keystone-open.socket", "../keystone-open.socket")
	}
	return dir
}

// bytesGiB is how the plan writes a size in bytes.
func bytesGiB(bytes string) string {
	n, _ := strconv.ParseFloat(bytes, 64)
	return strconv.FormatFloat(n/(1<<30), 'f', 1, 64) + " GiB"
}
