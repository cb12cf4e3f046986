package sshx

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/keystone-nix/keystone/internal/hint"
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

// talker is a TCP server on loopback that sends say to every connection
// and then keeps it open, or closes it with hangUp.
func talker(t *testing.T, say string, hangUp bool) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(say))
			if hangUp {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return l.Addr().String()
}

// TestHandshakeMessages: a handshake that does not finish says what the
// server sent, never Go's "use of closed network connection".
func TestHandshakeMessages(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	_, key := testhost.ClientKey(t)
	silent := testhost.Silent(t)
	for _, tc := range []struct {
		name, addr, says string
	}{
		{"silent", silent, "no SSH greeting from " + silent + " in 1s"},
		{"not SSH", talker(t, "220 mail.example ESMTP\r\n", false), `is not an SSH server: it answered "220 mail.example ESMTP"`},
		{"not SSH, closed", talker(t, "HTTP/1.1 400 Bad Request\r\n\r\n", true), `is not an SSH server: it answered "HTTP/1.1 400 Bad Request"`},
		{"greeting, then nothing", talker(t, "SSH-2.0-OpenSSH_9.6\r\n", false), `no answer within 1s after its greeting "SSH-2.0-OpenSSH_9.6"`},
		{"closed at once", talker(t, "", true), "closed the connection without an SSH greeting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 3 { // the deadline and the close race: each way must read the same
				_, err := Dial(context.Background(), Options{Addr: tc.addr, User: "root", Identities: []string{key},
					HostKeys: HostKeys{Insecure: true}, Timeout: time.Second})
				if err == nil || !strings.Contains(err.Error(), tc.says) || strings.Contains(err.Error(), "closed network connection") {
					t.Errorf("%v, want %q", err, tc.says)
				}
			}
		})
	}
}

// TestUnknownHostKeyIsEd25519: a host known by no key is asked for its
// ed25519 key, the one users compare with the console and deploy pins (Go
// would take ECDSA first), and the message names the key's type.
func TestUnknownHostKeyIsEd25519(t *testing.T) {
	dir := t.TempDir()
	ecdsa := filepath.Join(dir, "ssh_host_ecdsa_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", ecdsa).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, ExtraSSHDConfig: []string{"HostKey " + ecdsa}})
	t.Setenv("SSH_AUTH_SOCK", "")
	kh := filepath.Join(dir, "known_hosts")
	o := Options{Addr: h.Address(), User: "root", Identities: []string{key}, HostKeys: HostKeys{KnownHosts: kh}}
	_, err := Dial(context.Background(), o)
	want := "(its host key is ssh-ed25519 " + ssh.FingerprintSHA256(h.HostKey) + ")"
	if h.HostKey.Type() != ssh.KeyAlgoED25519 || err == nil || !strings.Contains(err.Error(), want) ||
		!strings.Contains(hint.Of(err), "after comparing it with ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub") {
		t.Errorf("%v (hint %q), want %q", err, hint.Of(err), want)
	}
	o.HostKeys.AcceptNew = true
	c, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if line, _ := os.ReadFile(kh); !strings.Contains(string(line), " ssh-ed25519 ") {
		t.Errorf("--accept-new recorded %q", line)
	}
	// Known by its ed25519 key, the host is trusted again.
	o.HostKeys.AcceptNew = false
	if c, err := Dial(context.Background(), o); err != nil {
		t.Error(err)
	} else {
		c.Close()
	}
}
