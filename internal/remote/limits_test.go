package remote_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/testhost"
)

// A server that refuses sessions beyond its remote.MaxSessions ("open failed")
// slows the commands down but fails none of them.
func TestRefusedSessionsAreRetried(t *testing.T) {
	signer, _ := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
		ExtraSSHDConfig: []string{"MaxSessions 2"}})
	r := remote.New(h.Dial(t, signer), false, 20*time.Second)
	outs := make([]remote.Output, remote.MaxSessions)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = r.Run(context.Background(), "sleep 0.3; echo ok")
		}()
	}
	wg.Wait()
	retries := 0
	for i, o := range outs {
		if o.Err != nil || strings.TrimSpace(o.Stdout) != "ok" {
			t.Errorf("command %d: %q, %v", i, o.Stdout, o.Err)
		}
		retries += o.Retries
	}
	if retries == 0 {
		t.Error("no session was refused: the test does not test anything")
	}
}

// A command that prints without end is stopped at remote.MaxOutput, and says so.
func TestOutputIsCapped(t *testing.T) {
	signer, _ := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	r := remote.New(h.Dial(t, signer), false, 20*time.Second)
	start := time.Now()
	o := r.Run(context.Background(), "yes failed-unit-name.service")
	if o.Err != nil || !o.Cut || len(o.Stdout) != remote.MaxOutput {
		t.Errorf("err %v, cut %v, %d bytes; want no error, cut at %d", o.Err, o.Cut, len(o.Stdout), remote.MaxOutput)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s", took)
	}
	// The connection is still good for the next command.
	if o := r.Run(context.Background(), "echo ok"); strings.TrimSpace(o.Stdout) != "ok" {
		t.Errorf("after the cut: %q, %v", o.Stdout, o.Err)
	}
}
