package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// keystone runs the CLI in-process and returns its exit code and output.
func keystone(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := run(context.Background(), append([]string{"keystone"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func writeExpect(t *testing.T, hostname string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "expect.json")
	data := `{"hostname": "` + hostname + `", "services": [], "firewall": {"enable": true, "backend": "nftables", "tcp": [22], "udp": [5353]},
		"sshd": null, "zfs": null, "luks": null, "mounts": [], "mdns": null}`
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyCLI(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	knownHosts := filepath.Join(t.TempDir(), "ssh", "known_hosts") // accept-new makes the folder
	expect := writeExpect(t, h.Name)
	base := []string{"verify", "--expect", expect, "--target", "root@" + h.Address(), "-i", key,
		"--known-hosts", knownHosts, "--only", "installer,hostname,firewall,exposure", "--ports", "20-23,8080"}

	// An unknown host key is refused, and nothing is recorded.
	code, _, stderr := keystone(t, base...)
	if code != 2 || !strings.Contains(stderr, "is not in "+knownHosts) || !strings.Contains(stderr, "hint: pass --accept-new") {
		t.Errorf("unknown key: exit %d, stderr %q; want 2 and a hint", code, stderr)
	}
	if _, err := os.Stat(filepath.Dir(knownHosts)); err == nil {
		t.Error("a refused key made the known_hosts folder")
	}

	// --accept-new records it; then every check passes.
	code, stdout, stderr := keystone(t, append(base, "--accept-new")...)
	if code != 0 || !strings.Contains(stdout, "5 checks: 5 PASS") {
		t.Fatalf("accept-new: exit %d\n%s%s", code, stdout, stderr)
	}
	recorded, _ := os.ReadFile(knownHosts)
	if !strings.Contains(string(recorded), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h.HostKey)))) {
		t.Errorf("known_hosts does not hold the host key: %s", recorded)
	}

	// JSON and JUnit carry the same verdicts.
	code, stdout, _ = keystone(t, append(base, "--format", "json")...)
	var doc struct {
		ExitCode int `json:"exitCode"`
		Hosts    []struct {
			Host      string `json:"host"`
			Connected bool   `json:"connected"`
			Results   []struct{ Check, Status, Evidence string }
		}
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != 0 || doc.ExitCode != 0 || len(doc.Hosts) != 1 ||
		len(doc.Hosts[0].Results) != 5 || doc.Hosts[0].Results[2].Check != "hostname" || doc.Hosts[0].Results[2].Status != "PASS" {
		t.Errorf("json: exit %d, %v\n%s", code, err, stdout)
	}
	code, stdout, _ = keystone(t, append(base, "--format", "junit")...)
	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal([]byte(stdout), &suites); err != nil || code != 0 || len(suites.Suites) != 1 || suites.Suites[0].Tests != 5 {
		t.Errorf("junit: exit %d, %v\n%s", code, err, stdout)
	}

	// A failing check is exit 1.
	code, stdout, _ = keystone(t, "verify", "--expect", writeExpect(t, "web1"), "--target", "root@"+h.Address(), "-i", key,
		"--known-hosts", knownHosts, "--only", "hostname")
	if code != 1 || !strings.Contains(stdout, `hostname is "`+h.Name+`", want "web1"`) {
		t.Errorf("wrong hostname: exit %d\n%s", code, stdout)
	}

	// --only ssh: the connection, and nothing else.
	code, stdout, _ = keystone(t, "verify", "--expect", expect, "--target", "root@"+h.Address(), "-i", key,
		"--known-hosts", knownHosts, "--only", "ssh")
	if code != 0 || !strings.Contains(stdout, "1 checks: 1 PASS") {
		t.Errorf("--only ssh: exit %d\n%s", code, stdout)
	}

	// A changed key is exit 2, showing both fingerprints, even with --accept-new.
	old := h.HostKey
	_, newKey := testhost.GenerateKey(t)
	h.SetHostKey(t, newKey)
	code, _, stderr = keystone(t, append(base, "--accept-new")...)
	if code != 2 || !strings.Contains(stderr, ssh.FingerprintSHA256(old)) || !strings.Contains(stderr, ssh.FingerprintSHA256(h.HostKey)) ||
		!strings.Contains(stderr, "ssh-keygen -R") {
		t.Errorf("changed key: exit %d, stderr %q", code, stderr)
	}

	// --insecure-ignore-host-key connects anyway, and says so.
	code, _, stderr = keystone(t, "verify", "--expect", expect, "--target", "root@"+h.Address(), "-i", key,
		"--insecure-ignore-host-key", "--only", "hostname")
	if code != 0 || !strings.Contains(stderr, "warning: --insecure-ignore-host-key") {
		t.Errorf("insecure: exit %d, stderr %q", code, stderr)
	}
}

func TestVerifyCLIRefusals(t *testing.T) {
	expect := writeExpect(t, "web1")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"verify"}, 64, "no host to verify"},
		{[]string{"verify", "--expect", expect}, 64, "--expect without a host name needs --target"},
		{[]string{"verify", "--expect", expect, "--target", "root@"}, 64, "the host is missing"},
		{[]string{"verify", "--expect", expect, "--target", "h", "--timeout", "0"}, 64, "--timeout 0s: it must be more than 0"},
		{[]string{"verify", "--expect", expect, "--target", "h", "--wait", "-1s"}, 64, "--wait -1s: it cannot be negative"},
		{[]string{"verify", "--expect", expect, "--target", "h", "--skip", "ssh"}, 64, "the ssh check cannot be skipped"},
		{[]string{"verify", "--expect", writeFile(t, `{"hostname": "web1\u001b[2J"}`), "--target", "h"}, 3, `hostname "web1\x1b[2J" is not a host name`},
		{[]string{"verify", "--expect", writeFile(t, `{"hostname": "web1", "services": ["--help"]}`), "--target", "h"}, 3, `service "--help" is not a valid name`},
		{[]string{"verify", "--expect", expect, "--target", "h", "--format", "xml"}, 64, `--format "xml" is not supported`},
		{[]string{"verify", "--expect", expect, "--target", "h", "--only", "hostnme"}, 64, `--only: no check named "hostnme"`},
		{[]string{"verify", "--expect", expect, "--target", "h", "--ports", "0-10"}, 64, "--ports"},
		{[]string{"verify", "--expect", "/nonexistent.json", "--target", "h"}, 3, "no such file"},
		{[]string{"verify", "--expect", writeFile(t, `{"hostname": "web1", "sshdd": {}}`), "--target", "h"}, 3, `unknown key "sshdd" (known at the top level: hostname, services,`},
		{[]string{"verify", "--expect", writeFile(t, `{"hostname": "web1", "firewall": {"Enable": true}}`), "--target", "h"}, 3, `unknown key "firewall.Enable"`},
		{[]string{"verify", "a", "b", "--target", "h"}, 64, "--target applies to one host"},
	} {
		code, _, stderr := keystone(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.msg)
		}
	}
}

// TestVerifyAuth logs in the way OpenSSH users expect: a key from
// ssh-agent, and a passphrase-protected -i key is reported, not prompted for.
func TestVerifyAuth(t *testing.T) {
	signer, keyPath := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	t.Setenv("HOME", t.TempDir()) // no default identities
	t.Setenv("SSH_AUTH_SOCK", "")
	args := []string{"verify", "--expect", writeExpect(t, h.Name), "--target", "root@" + h.Address(),
		"--insecure-ignore-host-key", "--only", "hostname"}

	// The authorized key, encrypted: refused with a clear reason.
	pemKey, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(raw, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	locked := filepath.Join(t.TempDir(), "id_locked")
	os.WriteFile(locked, pem.EncodeToMemory(block), 0o600)
	code, _, stderr := keystone(t, append(args, "-i", locked)...)
	if code != 2 || !strings.Contains(stderr, locked+" is passphrase-protected; add it to ssh-agent") {
		t.Errorf("locked key: exit %d, stderr %q", code, stderr)
	}

	// The same key through ssh-agent logs in.
	keyring := agent.NewKeyring()
	keyring.Add(agent.AddedKey{PrivateKey: raw})
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go agent.ServeAgent(keyring, c)
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	code, stdout, stderr := keystone(t, args...)
	if code != 0 {
		t.Errorf("agent: exit %d\n%s%s", code, stdout, stderr)
	}

	// An agent without that key: authentication fails, exit 2.
	keyring.RemoveAll()
	code, _, stderr = keystone(t, args...)
	if code != 2 || !strings.Contains(stderr, "authentication failed") {
		t.Errorf("agent without the key: exit %d, stderr %q", code, stderr)
	}
}
