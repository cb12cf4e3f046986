package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/testhost"
)

type deployEnv struct {
	t        *testing.T
	h        *testhost.Host
	key      string // client private key file
	flake    string // a folder: vms/NAME/ssh_host_ed25519_key.pub lands there
	argvFile string
	password string
	disk     string // a block device inside the target, 20 GiB
}

// newDeployEnv boots a Debian target with a 20 GiB disk and puts the
// stand-in nixos-anywhere first on PATH.
func newDeployEnv(t *testing.T) *deployEnv {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-deploy", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	testhost.AsInstaller(t, h)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "nixos-anywhere"), []byte(testhost.NixosAnywhere), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	e := &deployEnv{t: t, h: h, key: key, flake: t.TempDir(), argvFile: filepath.Join(t.TempDir(), "argv")}
	t.Setenv("STANDIN_ARGV", e.argvFile)
	e.password = filepath.Join(t.TempDir(), "pw")
	os.WriteFile(e.password, []byte("correct horse battery"), 0o600)
	e.disk = testhost.AttachDisk(t, h, 20<<30)
	return e
}

// config writes what nix eval of config.keystone would print for the host.
func (e *deployEnv) config(edit func(k map[string]any)) string {
	deploy := map[string]any{
		"targetHost": e.h.Addr, "targetUser": "root", "sshPort": e.h.Port, "buildOn": "auto",
		"disks": []string{e.disk}, "partitionSizes": map[string][]string{e.disk: {"1M", "1G", "100%"}}, "diskSecret": true,
	}
	k := map[string]any{"vm": true, "deploy": deploy, "verify": map[string]any{"expectations": map[string]any{
		"hostname": e.h.Name,
		"services": []string{"sshd.service", "avahi-daemon.service", "systemd-resolved.service", "nftables.service"},
		"firewall": map[string]any{"enable": true, "backend": "nftables", "tcp": []int{22}, "udp": []int{5353}},
		"sshd":     map[string]any{"ports": []int{22}, "permitRootLogin": "prohibit-password"},
		"mounts":   []string{"/"},
		"mdns":     map[string]any{"publish": true},
	}}}
	if edit != nil {
		edit(k)
	}
	data, _ := json.Marshal(k)
	p := filepath.Join(e.t.TempDir(), "keystone.json")
	os.WriteFile(p, data, 0o644)
	return p
}

func (e *deployEnv) deploy(cfg string, extra ...string) (int, string, string) {
	args := []string{"deploy", "web1", "--config", cfg, "--flake", e.flake, "-i", e.key}
	// Defaults a test may give its own value for: a flag is taken once.
	for _, d := range [][2]string{{"--disk-password-file", e.password}, {"--wait", "60s"}} {
		if !slices.Contains(extra, d[0]) {
			args = append(args, d[0], d[1])
		}
	}
	return keystone(e.t, append(args, extra...)...)
}

func (e *deployEnv) standInCalled() bool {
	_, err := os.Stat(e.argvFile)
	return err == nil
}

func (e *deployEnv) pinned() string {
	return filepath.Join(e.flake, "vms/web1/ssh_host_ed25519_key.pub")
}

func noSecrets(t *testing.T, e *deployEnv, outputs ...string) {
	t.Helper()
	for _, out := range outputs {
		if strings.Contains(out, "correct horse") || strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("output shows a secret:\n%s", out)
		}
	}
}

func TestDeployInstallsPinsAndVerifies(t *testing.T) {
	e := newDeployEnv(t)
	before := e.h.BootIdentity(t)
	oldKey := e.h.HostKey
	code, stdout, stderr := e.deploy(e.config(nil), "--yes", "--", "--print-build-logs")
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"Plan for web1:", "WIPE       " + e.disk, "20.0 GiB", "encrypted, password from " + e.password,
		"### Installing NixOS ###", "asks for its disk password on its console", "is up with its new system", "PASS"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	noSecrets(t, e, stdout, stderr)

	argv, _ := os.ReadFile(e.argvFile)
	args := strings.Split(strings.TrimSpace(string(argv)), "\n")
	joined := strings.Join(args, " ")
	for _, want := range []string{"--flake " + e.flake + "#web1", "--target-host root@" + e.h.Addr, "-i " + e.key,
		"--build-on auto", "--disk-encryption-keys /tmp/secret.key " + e.password, "--print-build-logs"} {
		if !strings.Contains(joined, want) {
			t.Errorf("nixos-anywhere argv %q lacks %q", args, want)
		}
	}
	// The private key it got is gone from this machine.
	for i, a := range args {
		if a == "--extra-files" {
			if _, err := os.Stat(args[i+1]); !os.IsNotExist(err) {
				t.Errorf("the extra-files tree %s with the private host key is still here", args[i+1])
			}
		}
	}

	// The host runs a new boot, with the new key, which is pinned.
	if e.h.BootIdentity(t) == before {
		t.Error("the target did not reboot")
	}
	pin, err := os.ReadFile(e.pinned())
	if err != nil {
		t.Fatal(err)
	}
	pinnedKey, _, _, _, err := ssh.ParseAuthorizedKey(pin)
	if err != nil || string(pinnedKey.Marshal()) == string(oldKey.Marshal()) {
		t.Fatalf("pinned %s: %v", pin, err)
	}
	// verify afterwards uses the pin, without known_hosts.
	code, stdout, stderr = keystone(t, "verify", "--expect", writeExpect(t, e.h.Name), "--target", "root@"+e.h.Addr,
		"--flake", e.flake, "-i", e.key, "--only", "hostname", "web1")
	if code != 0 || !strings.Contains(stdout, ssh.FingerprintSHA256(pinnedKey)) {
		t.Errorf("verify with the pin: exit %d\n%s%s", code, stdout, stderr)
	}

	// Deploying again: the host answers with its pinned key, so it is refused.
	os.Remove(e.argvFile)
	code, _, stderr = e.deploy(e.config(nil), "--yes")
	if code != 3 || !strings.Contains(stderr, "already installed") || e.standInCalled() {
		t.Errorf("redeploy: exit %d, stderr %q", code, stderr)
	}
}

func TestDeployRefusals(t *testing.T) {
	e := newDeployEnv(t)
	small := testhost.AttachDisk(t, e.h, 2<<30)
	newline := filepath.Join(t.TempDir(), "pw-newline")
	os.WriteFile(newline, []byte("correct horse battery\n"), 0o600)
	bootBefore := e.h.BootIdentity(t)

	for _, tc := range []struct {
		name  string
		cfg   func(k map[string]any)
		extra []string
		msg   string
	}{
		{"missing disk", func(k map[string]any) {
			k["deploy"].(map[string]any)["disks"] = []string{"/dev/disk/by-id/nvme-missing"}
		},
			[]string{"--yes"}, "disk /dev/disk/by-id/nvme-missing does not exist on the target"},
		{"too small disk", func(k map[string]any) {
			d := k["deploy"].(map[string]any)
			d["disks"] = []string{small}
			d["partitionSizes"] = map[string][]string{small: {"1M", "1G", "100%"}}
		}, []string{"--yes"}, "is 2.0 GiB; the layout needs at least 5.0 GiB"},
		{"trailing newline", nil, []string{"--yes", "--disk-password-file", newline}, "ends with a newline"},
		{"no password for an encrypted layout", nil, []string{"--yes", "--disk-password-file", ""}, "reads its password at install time"},
		{"no terminal without --yes", nil, nil, "no terminal to confirm on"},
		{"no target", func(k map[string]any) { k["deploy"].(map[string]any)["targetHost"] = nil }, []string{"--yes"},
			"keystone.deploy.targetHost is not set"},
		{"empty target", func(k map[string]any) { k["deploy"].(map[string]any)["targetHost"] = "" }, []string{"--yes"},
			"keystone.deploy.targetHost is not set"},
		{"target with a port", func(k map[string]any) { k["deploy"].(map[string]any)["targetHost"] = e.h.Address() }, []string{"--yes"},
			"is not a DNS name or IP address (the port is sshPort's)"},
		{"password for a layout without one", func(k map[string]any) { k["deploy"].(map[string]any)["diskSecret"] = false }, []string{"--yes"},
			"its disks would not be encrypted with it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := e.deploy(e.config(tc.cfg), tc.extra...)
			if code != 3 || !strings.Contains(stderr, tc.msg) || !strings.Contains(stderr, "keystone: hint:") {
				t.Errorf("exit %d, stderr %q; want 3 and %q", code, stderr, tc.msg)
			}
			if e.standInCalled() {
				t.Error("nixos-anywhere was called")
			}
			if _, err := os.Stat(e.pinned()); err == nil {
				t.Error("a host key was pinned")
			}
			noSecrets(t, e, stdout, stderr)
		})
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"web1", "web2"}, "deploy takes one host name, got 2"},
		{[]string{"--all", "web1"}, "give a host name or --all, not both"},
		{[]string{"web1", "--build-on", "bogus"}, `--build-on "bogus" is not supported`},
		{[]string{"web1", "--timeout", "0"}, "--timeout and --wait must be more than 0"},
		{[]string{"web1", "--wait", "-1s"}, "--timeout and --wait must be more than 0"},
		{[]string{"web1", "--target", "root@"}, "the host is missing"},
		{[]string{"web1", "-i", "/tmp/other"}, "deploy takes one -i, got 2"},
		{[]string{"--all", "--target", "h"}, "--target applies to one host, not --all"},
		{[]string{"web1", "--", "--flake", ".#other"}, "after --: --flake is keystone's to set"},
		{[]string{"web1", "--", "--target-host", "root@192.0.2.99"}, "after --: --target-host is keystone's to set"},
		{[]string{"web1", "--", "--phases", "kexec,disko"}, "after --: --phases is keystone's to set"},
		{[]string{"web1", "--post-kexec-ssh-port", "70000"}, "--post-kexec-ssh-port 70000 is not a port"},
	} {
		args := append([]string{"deploy", "--config", e.config(nil), "--flake", e.flake, "-i", e.key,
			"--disk-password-file", e.password, "--yes"}, tc.args...)
		code, _, stderr := keystone(t, args...)
		if code != 64 || !strings.Contains(stderr, tc.msg) || e.standInCalled() {
			t.Errorf("%v: exit %d, stderr %q; want 64 and %q", tc.args, code, stderr, tc.msg)
		}
	}

	t.Run("wrong typed hostname", func(t *testing.T) {
		code, _, stderr := withTerminal(t, "web2\n", func() (int, string, string) { return e.deploy(e.config(nil)) })
		if code != 3 || !strings.Contains(stderr, "confirmation did not match; nothing was changed") || e.standInCalled() {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("dry run", func(t *testing.T) {
		code, stdout, _ := e.deploy(e.config(nil), "--dry-run")
		if code != 0 || !strings.Contains(stdout, "nixos-anywhere --flake") || !strings.Contains(stdout, `--extra-files "$EXTRA_FILES"`) ||
			!strings.Contains(stdout, "--disk-encryption-keys /tmp/secret.key "+e.password) ||
			!strings.Contains(stdout, "dry run: nothing was changed") || e.standInCalled() {
			t.Errorf("exit %d\n%s", code, stdout)
		}
	})
	t.Run("the kexec installer's port", func(t *testing.T) {
		// Its sshd listens on 22 whatever -p is; a NAT forward says otherwise.
		for _, tc := range []struct {
			config any
			flags  []string
			want   string
		}{
			{nil, nil, "--post-kexec-ssh-port 22 "},
			{2222, nil, "--post-kexec-ssh-port 2222 "},
			{2222, []string{"--post-kexec-ssh-port", "2200"}, "--post-kexec-ssh-port 2200 "},
		} {
			cfg := e.config(func(k map[string]any) { k["deploy"].(map[string]any)["postKexecSSHPort"] = tc.config })
			code, stdout, stderr := e.deploy(cfg, append([]string{"--dry-run"}, tc.flags...)...)
			if code != 0 || !strings.Contains(stdout, tc.want) || !strings.Contains(stdout, "--target-host root@"+e.h.Addr) {
				t.Errorf("config %v, flags %v: exit %d, want %q\n%s%s", tc.config, tc.flags, code, tc.want, stdout, stderr)
			}
		}
	})
	if e.h.BootIdentity(t) != bootBefore {
		t.Error("the target rebooted")
	}
}

// withTerminal runs f with stdin on a pseudo-terminal that has typed in it.
func withTerminal(t *testing.T, typed string, f func() (int, string, string)) (int, string, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	master.WriteString(typed)
	old := os.Stdin
	os.Stdin = slave
	defer func() { os.Stdin = old }()
	return f()
}

func TestDeployHostThatNeverComesBack(t *testing.T) {
	e := newDeployEnv(t)
	t.Setenv("STANDIN_MODE", "noreboot")
	start := time.Now()
	code, stdout, stderr := e.deploy(e.config(nil), "--yes", "--wait", "5s")
	if code != 5 || !strings.Contains(stderr, "did not come back within 5s") || time.Since(start) > 30*time.Second ||
		!strings.Contains(stderr, "it may be waiting for the disk password") {
		t.Errorf("exit %d after %s, stderr %q\n%s", code, time.Since(start), stderr, stdout)
	}
	noSecrets(t, e, stdout, stderr)

	// A layout without a password has no password to wait for.
	plain := e.config(func(k map[string]any) { k["deploy"].(map[string]any)["diskSecret"] = false })
	code, stdout, stderr = keystone(t, "deploy", "web1", "--config", plain, "--flake", e.flake, "-i", e.key, "--wait", "5s", "--yes")
	if code != 5 || !strings.Contains(stderr, "keystone: hint: look at its console") || strings.Contains(stdout+stderr, "password") {
		t.Errorf("unencrypted: exit %d, stderr %q\n%s", code, stderr, stdout)
	}
}

// A run that fails before the install keeps the old pin: the host still
// has its old key, and verify must keep trusting it.
func TestDeployFailureKeepsThePin(t *testing.T) {
	e := newDeployEnv(t)
	t.Setenv("STANDIN_MODE", "fail")
	old, _ := testhost.ClientKey(t) // any key the host does not have
	pin := ssh.MarshalAuthorizedKey(old.PublicKey())
	os.MkdirAll(filepath.Dir(e.pinned()), 0o755)
	os.WriteFile(e.pinned(), pin, 0o644)
	code, stdout, stderr := e.deploy(e.config(nil), "--yes")
	if code != 4 || !strings.Contains(stderr, `nixos-anywhere failed during "Formatting hard drive with disko"`) {
		t.Errorf("exit %d, stderr %q\n%s", code, stderr, stdout)
	}
	if got, _ := os.ReadFile(e.pinned()); string(got) != string(pin) {
		t.Errorf("the pin changed to %q", got)
	}
	noSecrets(t, e, stdout, stderr)
}

func TestDeployInterruptStopsNixosAnywhere(t *testing.T) {
	e := newDeployEnv(t)
	t.Setenv("STANDIN_MODE", "hang")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for !e.standInCalled() {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		cancel() // what Ctrl-C does through signal.NotifyContext
	}()
	var stdout, stderr strings.Builder
	start := time.Now()
	code := run(ctx, []string{"keystone", "deploy", "web1", "--config", e.config(nil), "--flake", e.flake, "-i", e.key,
		"--disk-password-file", e.password, "--yes"}, &stdout, &stderr)
	if code != 4 || !strings.Contains(stderr.String(), `interrupted during "Installing NixOS"`) ||
		!strings.Contains(stderr.String(), "run deploy again") || time.Since(start) > 30*time.Second {
		t.Errorf("exit %d after %s, stderr %q", code, time.Since(start), stderr.String())
	}
	if out, _ := exec.Command("pgrep", "-f", "sleep 300").Output(); len(out) > 0 {
		t.Errorf("the stand-in's child still runs: %s", out)
	}
	// Stopped during the install: the host may have the new key by now.
	if _, err := os.Stat(e.pinned()); err != nil {
		t.Errorf("no pin after an interrupted install: %v", err)
	}
}

// TestDeployAll installs every host of the flake, two at a time, after one
// confirmation for all of them.
func TestDeployAll(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "nixos-anywhere"), []byte(testhost.NixosAnywhere), 0o755)
	flakeDir, answers := fakeFlake(t)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("STANDIN_ARGV", filepath.Join(t.TempDir(), "argv"))
	for _, name := range []string{"alpha", "beta"} {
		h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-" + name, AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
		testhost.AsInstaller(t, h)
		disk := testhost.AttachDisk(t, h, 20<<30)
		k := map[string]any{"vm": true, "deploy": map[string]any{
			"targetHost": h.Addr, "targetUser": "root", "sshPort": h.Port, "buildOn": "auto", "disks": []string{disk},
			"partitionSizes": map[string][]string{disk: {"1G", "100%"}}, "diskSecret": false,
		}, "verify": map[string]any{"expectations": map[string]any{"hostname": h.Name}}}
		data, _ := json.Marshal(k)
		os.WriteFile(filepath.Join(answers, name+".json"), data, 0o644)
	}
	code, stdout, stderr := keystone(t, "deploy", "--all", "--parallel", "2", "--yes", "--flake", flakeDir, "-i", key, "--wait", "60s")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"Plan for alpha:", "Plan for beta:", "[alpha] ### Installing NixOS ###", "[beta] beta is up with its new system",
		"│ system    │ PASS   │ running /nix/store/"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q\n%s", want, stdout)
		}
	}
	for _, name := range []string{"alpha", "beta"} {
		if _, err := os.Stat(filepath.Join(flakeDir, "vms", name, "ssh_host_ed25519_key.pub")); err != nil {
			t.Errorf("%s: no pinned key: %v", name, err)
		}
	}
}

// A fleet's pre-flight reports each host's problem on its own line and
// exits with the worst; nothing is installed anywhere.
func TestDeployAllPreflightErrors(t *testing.T) {
	_, key := testhost.ClientKey(t)
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "nixos-anywhere"), []byte(testhost.NixosAnywhere), 0o755)
	flakeDir, answers := fakeFlake(t)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	argv := filepath.Join(t.TempDir(), "argv")
	t.Setenv("STANDIN_ARGV", argv)
	gone := testhost.SSHD(t, testhost.SSHDOptions{})
	gone.StopSSHD(t)
	addHost(t, flakeDir, answers, "gone", gone.Name, gone) // cannot connect: 2
	addHost(t, flakeDir, answers, "lost", "lost", gone)
	lost, _ := os.ReadFile(filepath.Join(answers, "lost.json"))
	os.WriteFile(filepath.Join(answers, "lost.json"), []byte(strings.Replace(string(lost), `"targetHost":"`+gone.Addr+`"`, `"targetHost":null`, 1)), 0o644) // refused: 3

	code, stdout, stderr := keystone(t, "deploy", "--all", "--yes", "--flake", flakeDir, "-i", key)
	if code != 3 || !strings.Contains(stderr, "keystone: error: gone: cannot reach") ||
		!strings.Contains(stderr, "keystone: error: lost: no target") || strings.Contains(stderr, "?") {
		t.Errorf("exit %d, stderr %q\n%s", code, stderr, stdout)
	}
	if _, err := os.Stat(argv); err == nil {
		t.Error("nixos-anywhere was called")
	}

	code, _, stderr = keystone(t, "deploy", "nope", "--yes", "--flake", flakeDir, "-i", key)
	if code != 3 || !strings.Contains(stderr, "does not provide attribute 'nixosConfigurations.nope'") {
		t.Errorf("deploy nope: exit %d, stderr %q", code, stderr)
	}
}

// TestDeployInitrdKey: with keystone.unlock.ssh, pre-flight reads the card
// the target is reached through (a veth here: module veth) and refuses a
// config whose initrd lacks its driver; with it, deploy makes the initrd's
// own key, installs it at keystone.unlock.ssh.hostKey (0600) and pins it,
// and its first-boot unlock finds the system already up (no initrd here).
func TestDeployInitrdKey(t *testing.T) {
	e := newDeployEnv(t)
	withUnlock := func(modules []string) func(map[string]any) {
		return func(k map[string]any) {
			k["unlock"] = map[string]any{"ssh": map[string]any{"enable": true, "port": 2222,
				"hostKey": "/etc/ssh/initrd_ssh_host_ed25519_key", "initrdModules": modules}}
			// What nix/expectations.nix adds: verify scans 2222 and
			// compares the key on the host with the pin.
			k["verify"].(map[string]any)["expectations"].(map[string]any)["unlock"] = map[string]any{
				"port": 2222, "hostKey": "/etc/ssh/initrd_ssh_host_ed25519_key"}
		}
	}
	// The card's driver is what the target's /sys says: in a container,
	// this machine's own eth0's.
	driver, err := e.h.Run(t, "sh", "-c", `basename "$(readlink -f /sys/class/net/eth0/device/driver)"`)
	driver = strings.TrimSpace(driver)
	if err != nil || driver == "" || driver == "driver" {
		t.Fatalf("reading the target's network driver: %q, %v", driver, err)
	}
	code, stdout, stderr := e.deploy(e.config(withUnlock([]string{"nvme"})), "--yes")
	if code != 3 || e.standInCalled() || !strings.Contains(stderr, "the initrd would have no driver for eth0, the card this host is reached through ("+driver+")") ||
		!strings.Contains(stderr, `hint: add keystone.unlock.ssh.networkModules = [ "`+driver+`" ];`) {
		t.Fatalf("a config without the card's driver: exit %d, nixos-anywhere called %v\nstdout:\n%s\nstderr:\n%s", code, e.standInCalled(), stdout, stderr)
	}

	// Through a forward (--initrd-port), as a VM's initrd is reached; the
	// password from a pipe, which gives it once, for the install and the
	// first boot's unlock both.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	password, _ := os.ReadFile(e.password)
	pw.Write(password)
	pw.Close()
	code, stdout, stderr = e.deploy(e.config(withUnlock([]string{"nvme", driver})), "--yes", "--initrd-port", "2223",
		"--disk-password-file", fmt.Sprintf("/proc/self/fd/%d", pr.Fd()))
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"unlock     the initrd's sshd on port 2222 (reached at " + e.h.Addr + ":2223)", "initrd    │ PASS   │ /etc/ssh/initrd_ssh_host_ed25519_key, mode 600, the pinned SHA256:", "network card eth0 (" + driver + ")", "the initrd's host key is SHA256:",
		"pinned the initrd's host key in", "web1: already unlocked"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	noSecrets(t, e, stdout, stderr)
	pin, err := os.ReadFile(filepath.Join(e.flake, "vms/web1/ssh_initrd_host_ed25519_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey(pin)
	if err != nil {
		t.Fatal(err)
	}
	mode, err := e.h.Run(t, "stat", "-c", "%a", "/etc/ssh/initrd_ssh_host_ed25519_key")
	if err != nil || strings.TrimSpace(mode) != "600" {
		t.Errorf("the initrd key on the host: mode %q, %v; want 600", mode, err)
	}
	priv, err := e.h.Run(t, "cat", "/etc/ssh/initrd_ssh_host_ed25519_key")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(priv))
	if err != nil {
		t.Fatal(err)
	}
	if string(signer.PublicKey().Marshal()) != string(pinned.Marshal()) {
		t.Error("the initrd key on the host is not the pinned one")
	}
	main, _ := os.ReadFile(e.pinned())
	if mainKey, _, _, _, _ := ssh.ParseAuthorizedKey(main); mainKey == nil || string(mainKey.Marshal()) == string(pinned.Marshal()) {
		t.Error("the initrd key is the main host key")
	}
}
