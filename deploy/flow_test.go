package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/testhost"
)

// ui plays the person at the terminal: it records what deploy writes and
// asks, and types answer.
type ui struct {
	mu        sync.Mutex
	out       bytes.Buffer
	warnings  []string
	questions []string
	answer    string
}

func (u *ui) Write(p []byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.out.Write(p)
}

func (u *ui) Warn(msg string) { u.warnings = append(u.warnings, msg) }

func (u *ui) Ask(q string) (string, error) {
	u.questions = append(u.questions, q)
	if u.answer == "" {
		return "", deploy.ErrNoTerminal
	}
	return u.answer, nil
}

// TestRun drives a whole deploy without the CLI: a Debian target, the
// stand-in nixos-anywhere, the typed confirmation through the UI, the pin,
// the wait for the new boot and the verify.
func TestRun(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-flow", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	testhost.AsInstaller(t, h)
	disk := testhost.AttachDisk(t, h, 20<<30)
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "nixos-anywhere"), []byte(testhost.NixosAnywhere), 0o755)
	argv := filepath.Join(t.TempDir(), "argv")
	t.Setenv("STANDIN_ARGV", argv)
	before := h.BootIdentity(t)

	var k fleet.Keystone
	k.Deploy.Disks = []string{disk}
	k.Deploy.PartitionSizes = map[string][]string{disk: {"1M", "1G", "100%"}}
	k.Deploy.BuildOn = "local"
	k.Verify.Expectations, _ = json.Marshal(map[string]any{"hostname": h.Name, "mounts": []string{"/"}})
	flakeDir := t.TempDir()
	host := fleet.Host{
		Name: "web1", Flake: flakeDir, Target: target.Target{User: "root", Host: h.Addr, Port: h.Port},
		Config: k, Evaluated: true, Expectations: k.Verify.Expectations, Identities: []string{key},
		PinFile: filepath.Join(flakeDir, "vms/web1", fleet.PinnedKeyFile),
	}
	o := deploy.Options{Wait: 90 * time.Second, Timeout: 5 * time.Minute, Parallel: 1, Program: filepath.Join(bin, "nixos-anywhere")}

	// Nobody at the terminal: refused before anything runs.
	u := &ui{}
	err := deploy.Run(context.Background(), []fleet.Host{host}, o, u)
	if exit.Code(err) != deploy.ExitRefused || !strings.Contains(err.Error(), "no terminal to confirm on") {
		t.Fatalf("without a terminal: %v (exit %d)", err, exit.Code(err))
	}
	if _, err := os.Stat(argv); err == nil {
		t.Fatal("nixos-anywhere ran without a confirmation")
	}

	u = &ui{answer: "web1\n"}
	if err := deploy.Run(context.Background(), []fleet.Host{host}, o, u); err != nil {
		t.Fatalf("deploy: %v\n%s", err, u.out.String())
	}
	out := u.out.String()
	if len(u.questions) != 1 || !strings.Contains(u.questions[0], "Type web1 to go on") {
		t.Errorf("asked %q", u.questions)
	}
	for _, want := range []string{"Plan for web1:", "WIPE       " + disk, "build on   local", "### Installing NixOS ###",
		"pinned the new host key in " + host.PinFile, "is up with its new system", "hostname"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if h.BootIdentity(t) == before {
		t.Error("the target did not reboot")
	}
	pin, err := os.ReadFile(host.PinFile)
	if err != nil {
		t.Fatal(err)
	}
	if pinned, _, _, _, err := ssh.ParseAuthorizedKey(pin); err != nil || string(pinned.Marshal()) == string(h.HostKey.Marshal()) {
		t.Errorf("pin %q: %v", pin, err)
	}
	if args, _ := os.ReadFile(argv); !strings.Contains(string(args), "--build-on\nlocal\n") {
		t.Errorf("nixos-anywhere got %q", args)
	}
}

// TestRunRefusesBeforeConnecting: what the options and the config alone
// show to be wrong is refused before any connection (the targets here
// answer nothing).
func TestRunRefusesBeforeConnecting(t *testing.T) {
	var encrypted, plain fleet.Keystone
	encrypted.Deploy.Disks, encrypted.Deploy.DiskSecret = []string{"/dev/vda"}, true
	plain.Deploy.Disks = []string{"/dev/vda"}
	encrypted.Verify.Expectations = []byte(`{"hostname": "web1"}`)
	plain.Verify.Expectations = encrypted.Verify.Expectations
	nowhere := target.Target{User: "root", Host: "192.0.2.1", Port: 22}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("secret"), 0o600)
	for _, tc := range []struct {
		name string
		host fleet.Host
		o    deploy.Options
		err  string
	}{
		{"--hardware-config with a remote flake", fleet.Host{Name: "web1", Flake: "github:me/fleet", Config: plain, Target: nowhere},
			deploy.Options{HardwareConfig: true}, "--hardware-config needs a flake in a local folder, not github:me/fleet"},
		{"no password for an encrypted layout", fleet.Host{Name: "web1", Flake: ".", Config: encrypted, Target: nowhere},
			deploy.Options{}, "web1: the disk layout is encrypted"},
		{"a password for a plain layout", fleet.Host{Name: "web1", Flake: ".", Config: plain, Target: nowhere},
			deploy.Options{PasswordFile: pw}, "web1: the disk layout reads no password"},
		{"a host fleet could not read", fleet.Host{Name: "web1", Err: errors.New("nix eval failed")},
			deploy.Options{}, "web1: nix eval failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Program, tc.o.Yes = "/bin/false", true
			err := deploy.Run(context.Background(), []fleet.Host{tc.host}, tc.o, &ui{})
			if exit.Code(err) != deploy.ExitRefused || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v (exit %d), want exit 3 and %q", err, exit.Code(err), tc.err)
			}
		})
	}
}
