package sshx

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// An ssh-agent whose socket accepts and never answers must not hang the
// dial, and the error must say which agent it was.
func TestHungAgentIsBounded(t *testing.T) {
	defer func(d time.Duration) { agentTimeout = d }(agentTimeout)
	agentTimeout = 500 * time.Millisecond
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
			defer c.Close() // never answers
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	t.Setenv("HOME", t.TempDir()) // no default identity files
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := Dial(context.Background(), Options{Addr: "127.0.0.1:1", User: "root", HostKeys: HostKeys{Insecure: true}})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "ssh-agent at "+sock+" does not answer") {
			t.Errorf("error %v, want it to say the agent does not answer", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("took %s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial hung on the agent")
	}
}

// A server that accepts TCP and never sends a banner is given up on when
// ctx is cancelled, not when the timeout runs out.
func TestHandshakeEndsWithContext(t *testing.T) {
	addr := testhost.Silent(t)
	t.Setenv("SSH_AUTH_SOCK", "")
	_, key := testhost.ClientKey(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := Dial(ctx, Options{Addr: addr, User: "root", Identities: []string{key},
		HostKeys: HostKeys{Insecure: true}, Timeout: 30 * time.Second})
	if err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("error %v after %s; want an error soon after the cancel", err, time.Since(start))
	}
}

// hangingAgent lists its keys and never signs.
type hangingAgent struct{ agent.Agent }

func (hangingAgent) Sign(ssh.PublicKey, []byte) (*ssh.Signature, error) { select {} }

func (hangingAgent) SignWithFlags(ssh.PublicKey, []byte, agent.SignatureFlags) (*ssh.Signature, error) {
	select {}
}

// An agent that lists a key and never signs with it: the dial ends at its
// timeout and says which agent hung.
func TestAgentThatNeverSignsIsBounded(t *testing.T) {
	signer, pemBytes := testhost.GenerateKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	real := agent.NewKeyring()
	key, err := ssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	real.Add(agent.AddedKey{PrivateKey: key})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go agent.ServeAgent(hangingAgent{real}, c)
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
	t.Setenv("HOME", t.TempDir())
	start := time.Now()
	_, err = Dial(context.Background(), Options{Addr: h.Address(), User: "root", HostKeys: HostKeys{Insecure: true}, Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "ssh-agent at "+sock+" does not answer") || time.Since(start) > 5*time.Second {
		t.Errorf("after %s: %v", time.Since(start), err)
	}
}
