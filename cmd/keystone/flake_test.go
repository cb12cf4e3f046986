package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// testFlake is a flake without inputs, which Debian's nix evaluates
// offline: nixosConfigurations.NAME.config holds hosts/NAME.json as
// config.keystone, and a host NAME.throw throws, as a broken module would.
const testFlake = `{
  outputs = { self }: {
    nixosConfigurations = builtins.listToAttrs (map (f:
      let name = builtins.head (builtins.split "\\." f); in {
        inherit name;
        value.config = if builtins.match ".*\\.throw" f != null then throw "broken host ${name}"
          else { keystone = builtins.fromJSON (builtins.readFile (./hosts + "/${f}")); networking.hostName = name;
            system.build.toplevel = derivation { name = "nixos-system-${name}"; system = "x86_64-linux"; builder = "/bin/sh"; }; };
      }) (builtins.attrNames (builtins.readDir ./hosts)));
  };
}
`

// countingNix is nix, in a store of the test's own, and it counts its calls.
const countingNix = `#!/bin/sh
echo call >> "$NIX_CALLS"
exec /usr/bin/nix "$@"
`

// fakeFlake puts a counting nix on PATH and returns a flake folder and the
// folder its hosts come from.
func fakeFlake(t *testing.T) (flakeDir, answers string) {
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "nix"), []byte(countingNix), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("NIX_REMOTE", "local?root="+t.TempDir())
	t.Setenv("NIX_CONFIG", "build-users-group =")
	t.Setenv("NIX_CALLS", filepath.Join(bin, "calls"))
	flakeDir = t.TempDir()
	os.WriteFile(filepath.Join(flakeDir, "flake.nix"), []byte(testFlake), 0o644)
	answers = filepath.Join(flakeDir, "hosts")
	os.Mkdir(answers, 0o755)
	return flakeDir, answers
}

// nixCalls is how many times nix ran since the last call.
func nixCalls(t *testing.T) int {
	data, _ := os.ReadFile(os.Getenv("NIX_CALLS"))
	os.Remove(os.Getenv("NIX_CALLS"))
	return strings.Count(string(data), "\n")
}

// addHost makes name a host of the fake flake, reached at h, with its key
// pinned as deploy would.
func addHost(t *testing.T, flakeDir, answers, name, hostname string, h *testhost.Host) {
	k := map[string]any{"vm": true, "deploy": map[string]any{
		"targetHost": h.Addr, "targetUser": "root", "sshPort": h.Port, "buildOn": "auto", "disks": []string{"/dev/vda"},
		"partitionSizes": map[string]any{}, "diskSecret": false,
	}, "verify": map[string]any{"expectations": map[string]any{
		"hostname": hostname,
		"firewall": map[string]any{"enable": true, "backend": "nftables", "tcp": []int{22}, "udp": []int{5353}},
	}}}
	data, _ := json.Marshal(k)
	os.WriteFile(filepath.Join(answers, name+".json"), data, 0o644)
	pin := filepath.Join(flakeDir, "vms", name, "ssh_host_ed25519_key.pub")
	os.MkdirAll(filepath.Dir(pin), 0o755)
	os.WriteFile(pin, ssh.MarshalAuthorizedKey(h.HostKey), 0o644)
}

// TestVerifyThroughTheFlake is `nix run .#verify -- a b` and `--all`: names,
// targets and expectations from nix eval, host keys from the pins.
func TestVerifyThroughTheFlake(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	web := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	db := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	flakeDir, answers := fakeFlake(t)
	addHost(t, flakeDir, answers, "web", web.Name, web)
	addHost(t, flakeDir, answers, "db", db.Name, db)
	only := []string{"--flake", flakeDir, "-i", key, "--only", "installer,hostname,firewall"}

	code, stdout, stderr := keystone(t, append([]string{"verify", "web", "db"}, only...)...)
	if code != 0 || !strings.Contains(stdout, "web (root@"+web.Address()+")") || !strings.Contains(stdout, "db (root@"+db.Address()+")") ||
		strings.Count(stdout, "4 checks: 4 PASS") != 2 {
		t.Errorf("verify web db: exit %d\n%s%s", code, stdout, stderr)
	}
	if n := nixCalls(t); n != 1 {
		t.Errorf("verify web db ran nix %d times, want 1", n)
	}

	// --drift: the flake's toplevel out path, from the same one evaluation,
	// against the host's /run/current-system (an sshd test host has none).
	code, stdout, stderr = keystone(t, "verify", "web", "--drift", "--flake", flakeDir, "-i", key, "--only", "system")
	if code != 1 || !strings.Contains(stdout, "not a NixOS host") {
		t.Errorf("verify --drift: exit %d\n%s%s", code, stdout, stderr)
	}
	nixCalls(t)
	code, stdout, _ = keystone(t, "verify", "web", "--flake", flakeDir, "-i", key, "--only", "system")
	if code != 0 || !strings.Contains(stdout, "not asked (--drift)") {
		t.Errorf("verify without --drift: exit %d\n%s", code, stdout)
	}
	if n := nixCalls(t); n != 1 {
		t.Errorf("verify --drift ran nix %d times, want 1", n)
	}

	// --all, and one host wrong: exit 1, and the other still passes.
	addHost(t, flakeDir, answers, "db", "not-"+db.Name, db)
	code, stdout, _ = keystone(t, append([]string{"verify", "--all"}, only...)...)
	if code != 1 || !strings.Contains(stdout, `want "not-`+db.Name+`"`) || strings.Count(stdout, "4 checks: 4 PASS") != 1 {
		t.Errorf("verify --all: exit %d\n%s", code, stdout)
	}

	// Any attribute name is a string to Nix: quotes, backslashes and ${
	// in one reach nix eval as data, never as code.
	odd := `we"b\${abort "x"}`
	addHost(t, flakeDir, answers, odd, web.Name, web)
	code, stdout, stderr = keystone(t, append([]string{"verify", odd}, only...)...)
	if code != 0 || !strings.Contains(stdout, "4 checks: 4 PASS") {
		t.Errorf("verify %s: exit %d\n%s%s", odd, code, stdout, stderr)
	}
	os.Remove(filepath.Join(answers, odd+".json"))

	// A host the flake does not have.
	code, _, stderr = keystone(t, append([]string{"verify", "mail"}, only...)...)
	if code != 3 || !strings.Contains(stderr, "does not provide attribute 'nixosConfigurations.mail'") {
		t.Errorf("verify mail: exit %d, stderr %q", code, stderr)
	}
	// ... among others: they are still verified, and it is a host not checked.
	code, stdout, stderr = keystone(t, append([]string{"verify", "web", "mail", "--format", "json"}, only...)...)
	var doc struct {
		ExitCode int `json:"exitCode"`
		Hosts    []struct {
			Host     string `json:"host"`
			ExitCode int    `json:"exitCode"`
			Error    string `json:"error"`
		}
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != 3 || doc.ExitCode != 3 || len(doc.Hosts) != 2 ||
		doc.Hosts[0].ExitCode != 0 || doc.Hosts[1].ExitCode != 3 || !strings.HasPrefix(doc.Hosts[1].Error, "not checked: ") ||
		!strings.Contains(stderr, "keystone: error: mail: ") {
		t.Errorf("verify web mail: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}

	// A pin that no longer matches: exit 2.
	os.WriteFile(filepath.Join(flakeDir, "vms/web/ssh_host_ed25519_key.pub"), ssh.MarshalAuthorizedKey(db.HostKey), 0o644)
	code, _, stderr = keystone(t, append([]string{"verify", "web"}, only...)...)
	if code != 2 || !strings.Contains(stderr, "pins "+ssh.FingerprintSHA256(db.HostKey)) {
		t.Errorf("changed pin: exit %d, stderr %q", code, stderr)
	}
	// The pin wins over a known_hosts that would take the key.
	kh := filepath.Join(t.TempDir(), "known_hosts")
	code, _, stderr = keystone(t, append([]string{"verify", "web", "--known-hosts", kh, "--accept-new"}, only...)...)
	if code != 2 || !strings.Contains(stderr, "pins "+ssh.FingerprintSHA256(db.HostKey)) {
		t.Errorf("changed pin, --known-hosts: exit %d, stderr %q", code, stderr)
	}
}

// TestFleetEvaluatesOnce: a fleet costs one nix eval, for verify and
// deploy alike, and a host whose config throws costs one more, for its
// message, without hiding the others.
func TestFleetEvaluatesOnce(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	flakeDir, answers := fakeFlake(t)
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
		addHost(t, flakeDir, answers, name, h.Name, h)
	}
	only := []string{"--flake", flakeDir, "-i", key, "--only", "hostname"}
	code, stdout, stderr := keystone(t, append([]string{"verify", "--all"}, only...)...)
	if code != 0 || strings.Count(stdout, "2 checks: 2 PASS") != 5 {
		t.Errorf("verify --all: exit %d\n%s%s", code, stdout, stderr)
	}
	if n := nixCalls(t); n != 1 {
		t.Errorf("verify --all of 5 hosts ran nix %d times, want 1", n)
	}

	// deploy reads the same fleet the same way (pre-flight then refuses
	// the hosts for their made-up disks).
	code, _, stderr = keystone(t, "deploy", "--all", "--dry-run", "--flake", flakeDir, "-i", key)
	if code != 3 || strings.Count(stderr, "keystone: error: ") != 5 {
		t.Errorf("deploy --all --dry-run: exit %d\n%s", code, stderr)
	}
	if n := nixCalls(t); n != 1 {
		t.Errorf("deploy --all of 5 hosts ran nix %d times, want 1", n)
	}

	os.WriteFile(filepath.Join(answers, "f.throw"), nil, 0o644)
	code, stdout, stderr = keystone(t, append([]string{"verify", "--all"}, only...)...)
	if code != 3 || strings.Count(stdout, "2 checks: 2 PASS") != 5 || !strings.Contains(stderr, "keystone: error: f: ") ||
		!strings.Contains(stderr, "broken host f") {
		t.Errorf("verify --all with a broken host: exit %d\n%s%s", code, stdout, stderr)
	}
	if n := nixCalls(t); n != 2 {
		t.Errorf("verify --all with a broken host ran nix %d times, want 2", n)
	}
}
