package fleet_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/testhost"
)

func write(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadWithoutNix: what the command line says stands in for the flake,
// and nix is never asked (PATH holds none).
func TestLoadWithoutNix(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("HOME", "/home/someone")
	dir := t.TempDir()
	expect := write(t, dir, "expect.json", `{"hostname": "web1"}`)
	config := write(t, dir, "keystone.json", `{"deploy": {"targetHost": "192.0.2.10", "targetUser": "admin", "sshPort": 2222, "disks": ["/dev/vda"]}}`)
	noTarget := write(t, dir, "bare.json", `{"deploy": {"targetHost": null}}`)
	signer, _ := testhost.GenerateKey(t)
	flakeDir := t.TempDir()
	write(t, flakeDir, "vms/pinned/"+fleet.PinnedKeyFile, string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	write(t, flakeDir, "vms/broken/"+fleet.PinnedKeyFile, "not a key\n")

	for _, tc := range []struct {
		name   string
		o      fleet.Options
		target string // what Host.Target says
		keys   string // pinned, known_hosts FILE, or insecure
		err    string // Host.Err
	}{
		{"--expect and --target", fleet.Options{Expect: expect, Target: "192.0.2.9"}, "root@192.0.2.9:22", "known_hosts /home/someone/.ssh/known_hosts", ""},
		{"their own known_hosts", fleet.Options{Names: []string{"x"}, Expect: expect, Target: "h:22", KnownHosts: "kh", AcceptNew: true}, "root@h:22", "known_hosts kh", ""},
		{"insecure", fleet.Options{Names: []string{"x"}, Expect: expect, Target: "h", Insecure: true}, "root@h:22", "insecure", ""},
		{"--config", fleet.Options{Names: []string{"web1"}, Config: config}, "admin@192.0.2.10:2222", "known_hosts /home/someone/.ssh/known_hosts", ""},
		{"--config, --target wins", fleet.Options{Names: []string{"web1"}, Config: config, Target: "[2001:db8::1]:22"}, "root@[2001:db8::1]:22", "known_hosts /home/someone/.ssh/known_hosts", ""},
		{"no target", fleet.Options{Names: []string{"web1"}, Config: noTarget}, "@:0", "", "no target: keystone.deploy.targetHost is not set"},
		{"the pin wins", fleet.Options{Flake: flakeDir, Names: []string{"pinned"}, Expect: expect, Target: "h", KnownHosts: "kh"}, "root@h:22", "pinned", ""},
		{"a broken pin", fleet.Options{Flake: flakeDir, Names: []string{"broken"}, Expect: expect, Target: "h"}, "root@h:22", "", "not a public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts, err := fleet.Load(context.Background(), tc.o)
			if err != nil || len(hosts) != 1 {
				t.Fatalf("%d hosts, %v", len(hosts), err)
			}
			h := hosts[0]
			if tc.err != "" {
				if h.Err == nil || !strings.Contains(h.Err.Error(), tc.err) || strings.HasPrefix(h.Err.Error(), h.Name) {
					t.Errorf("Err %v, want %q, without the host's name", h.Err, tc.err)
				}
				return
			}
			if h.Err != nil {
				t.Fatal(h.Err)
			}
			if got := h.Target.User + "@" + h.Target.Addr(); got != tc.target {
				t.Errorf("target %s, want %s", got, tc.target)
			}
			keys := "known_hosts " + h.HostKeys.KnownHosts
			switch {
			case h.HostKeys.Insecure:
				keys = "insecure"
			case h.HostKeys.Pinned != nil:
				keys = "pinned"
			}
			if keys != tc.keys || (tc.o.AcceptNew != h.HostKeys.AcceptNew) {
				t.Errorf("host keys %s (accept new %v), want %s", keys, h.HostKeys.AcceptNew, tc.keys)
			}
		})
	}
}

func TestLoadRefusals(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	dir := t.TempDir()
	expect := write(t, dir, "expect.json", `{"hostname": "web1"}`)
	for _, tc := range []struct {
		name string
		o    fleet.Options
		code int
		err  string
	}{
		{"--expect alone", fleet.Options{Expect: expect}, exit.Usage, "--expect without a host name needs --target"},
		{"no such --expect", fleet.Options{Expect: filepath.Join(dir, "nope.json"), Target: "h"}, exit.Failed, "no such file"},
		{"a bad --target", fleet.Options{Names: []string{"a"}, Target: "root@"}, exit.Usage, "the host is missing"},
		{"--target for two", fleet.Options{Names: []string{"a", "b"}, Expect: expect, Target: "h"}, exit.Usage, "--target applies to one host, but 2 were given"},
		{"no nix", fleet.Options{Names: []string{"a"}}, exit.Failed, "nix is not installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts, err := fleet.Load(context.Background(), tc.o)
			if err == nil || exit.Code(err) != tc.code || !strings.Contains(err.Error(), tc.err) || hint.Of(err) == "" {
				t.Errorf("%d hosts, error %v (exit %d, hint %q); want exit %d and %q", len(hosts), err, exit.Code(err), hint.Of(err), tc.code, tc.err)
			}
		})
	}
}

func TestNamed(t *testing.T) {
	err := fleet.Named("web1", hint.Errorf("do this", "that failed"))
	if err.Error() != "web1: that failed" || hint.Of(err) != "do this" {
		t.Errorf("%q, hint %q", err, hint.Of(err))
	}
	if fleet.Named("web1", nil) != nil {
		t.Error("Named(nil) is not nil")
	}
}

func TestHostDir(t *testing.T) {
	for ref, want := range map[string]string{
		".": "vms/web1", "./fleet": "fleet/vms/web1", "/srv/fleet": "/srv/fleet/vms/web1", "path:/srv/f": "/srv/f/vms/web1",
		"github:me/fleet": "", "git+https://example.com/f": "",
	} {
		if got := fleet.HostDir(ref, "web1"); got != want {
			t.Errorf("HostDir(%q) = %q, want %q", ref, got, want)
		}
	}
}
