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
