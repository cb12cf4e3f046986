package remote_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/testhost"
)

// A host with doas and no sudo, as nixos-anywhere's get-facts finds it
// (hasDoas=y, hasSudo=n): commands run under `doas -n`.
func TestRunAsDoas(t *testing.T) {
	bin := t.TempDir()
	record := filepath.Join(t.TempDir(), "doas-argv")
	// doas takes -n as sudo does: fail rather than ask.
	doas := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + record + "\n[ \"$1\" = -n ] || exit 1\nshift\nexec \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "doas"), []byte(doas), 0o755); err != nil {
		t.Fatal(err)
	}
	signer, _ := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
		ExtraSSHDConfig: []string{"SetEnv PATH=" + bin + ":/usr/sbin:/usr/bin:/sbin:/bin"}})
	c := h.Dial(t, signer)
	r := remote.New(c, true, 10*time.Second)
	if r.Via() != "sudo" {
		t.Errorf("New(sudo) runs under %q", r.Via())
	}
	d := r.As("doas")
	out := d.Run(context.Background(), "echo hi")
	if out.Err != nil || out.Exit != 0 || out.Stdout != "hi\n" || d.Via() != "doas" {
		t.Fatalf("under doas: %+v", out)
	}
	argv, _ := os.ReadFile(record)
	if got := strings.Join(strings.Split(strings.TrimSpace(string(argv)), "\n"), " "); got != "-n timeout -k 2 10 sh -c echo hi" {
		t.Errorf("doas got %q", got)
	}
	if out := r.As("").Run(context.Background(), "echo plain"); out.Stdout != "plain\n" {
		t.Errorf("as the login user: %+v", out)
	}
}

// RunSecret's file is private while the command runs and gone after it.
func TestRunSecret(t *testing.T) {
	signer, _ := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	r := remote.New(h.Dial(t, signer), false, 10*time.Second)
	secret := []byte("s3cret 'with' $quotes\\")
	out := r.RunSecret(context.Background(), "keystone-test", `stat -c %a "$f"; echo "$f"; cat "$f"`, secret)
	lines := strings.SplitN(out.Stdout, "\n", 3)
	if out.Err != nil || out.Exit != 0 || len(lines) != 3 || lines[0] != "600" || lines[2] != string(secret) ||
		!strings.HasPrefix(lines[1], "/run/keystone-test.") {
		t.Fatalf("RunSecret: %+v", out)
	}
	if _, err := os.Stat(lines[1]); !os.IsNotExist(err) {
		t.Errorf("%s is left after the command: %v", lines[1], err)
	}
	if out := r.RunSecret(context.Background(), "keystone-test", `rm -- "$f"; exit 3`, secret); out.Exit != 3 {
		t.Errorf("a failing command's status: %+v", out)
	}
}
