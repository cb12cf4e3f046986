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

// fakeNix answers the two evaluations keystone asks of a flake, from
// $FAKE_NIX/NAME.json files: the host names, and one host's
// config.keystone. Anything else fails, as an unknown attribute would.
const fakeNix = `#!/bin/bash
set -eu
while [ $# -gt 0 ]; do
  case "$1" in
    --extra-experimental-features) shift ;;
    eval|--json) ;;
    --apply) apply=$2; shift ;;
    *) installable=$1 ;;
  esac
  shift
done
attr=${installable#*#}
case "$attr" in
  nixosConfigurations)
    [ "${apply:-}" = builtins.attrNames ] || { echo "error: fake nix cannot apply ${apply:-}" >&2; exit 1; }
    printf '['; sep=; for f in "$FAKE_NIX"/*.json; do n=$(basename "$f" .json); printf '%s"%s"' "$sep" "$n"; sep=,; done; echo ']' ;;
  nixosConfigurations.*.config.keystone)
    name=${attr#nixosConfigurations.}; name=${name%.config.keystone}
    [ -f "$FAKE_NIX/$name.json" ] || { echo "error: flake does not provide attribute 'nixosConfigurations.$name'" >&2; exit 1; }
    cat "$FAKE_NIX/$name.json" ;;
  *) echo "error: fake nix does not know $attr" >&2; exit 1 ;;
esac
`

// fakeFlake puts the fake nix on PATH and returns a flake folder and the
// folder its answers come from.
func fakeFlake(t *testing.T) (flakeDir, answers string) {
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "nix"), []byte(fakeNix), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	answers = t.TempDir()
	t.Setenv("FAKE_NIX", answers)
	return t.TempDir(), answers
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

	// --all, and one host wrong: exit 1, and the other still passes.
	addHost(t, flakeDir, answers, "db", "not-"+db.Name, db)
	code, stdout, _ = keystone(t, append([]string{"verify", "--all"}, only...)...)
	if code != 1 || !strings.Contains(stdout, `want "not-`+db.Name+`"`) || strings.Count(stdout, "4 checks: 4 PASS") != 1 {
		t.Errorf("verify --all: exit %d\n%s", code, stdout)
	}

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
