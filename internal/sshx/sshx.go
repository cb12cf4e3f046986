// Package sshx dials SSH the way OpenSSH users expect: ssh-agent and
// identity files for auth, a pinned key or known_hosts for the host, and
// errors that say which of those failed.
package sshx

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/hint"
)

// Options says how to reach one host.
type Options struct {
	Addr       string // host:port
	User       string
	Identities []string // private key files; empty means OpenSSH's defaults
	HostKeys   HostKeys
	Timeout    time.Duration // for the TCP connect, the handshake and each keepalive's answer
	// Keepalive is how often an SSH keepalive asks the server whether it
	// is still there; 0 means DefaultKeepalive, negative none.
	Keepalive time.Duration
}

// DefaultKeepalive is how often a connection asks the server for a sign
// of life when Options leaves Keepalive zero.
const DefaultKeepalive = 2 * time.Second

// agentTimeout bounds asking ssh-agent for its keys: a socket that accepts
// and never answers must not hang the dial. A variable for tests.
var agentTimeout = 5 * time.Second

// DefaultTimeout bounds the TCP connect and the handshake when Options
// leaves Timeout zero.
const DefaultTimeout = 10 * time.Second

// ErrAuth is the class of authentication failures.
var ErrAuth = errors.New("authentication failed")

// Client is a connection and the host key the server proved it holds.
type Client struct {
	*ssh.Client
	HostKey ssh.PublicKey
	// RTT is how long the TCP connect took: one round trip, a first
	// sample for anything that needs to know how far the host is.
	RTT time.Duration

	addr      string
	timeout   time.Duration
	stop      chan struct{}
	closeOnce sync.Once
	mu        sync.Mutex
	lost      error
}

// ErrStoppedAnswering is the class of a connection that was up and then
// went silent: the server did not answer a keepalive in time.
var ErrStoppedAnswering = errors.New("stopped answering")

// Close closes the connection and stops its keepalives.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.stop) })
	return c.Client.Close()
}

// Lost is why the connection was given up on, or nil while it lives (or
// was closed by its owner).
func (c *Client) Lost() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost
}

// Alive asks the server for a sign of life and waits at most the dial
// timeout. A server that does not answer in time is given up on: the
// connection is closed, so that every wait on it ends, and Lost says why.
func (c *Client) Alive() error {
	if err := c.Lost(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			c.giveUp(fmt.Errorf("the connection to %s was lost: %w", c.addr, err))
		}
	case <-timer.C:
		c.giveUp(fmt.Errorf("the connection to %s %w (no answer to a keepalive within %s)", c.addr, ErrStoppedAnswering, c.timeout))
	case <-c.stop:
		return nil
	}
	return c.Lost()
}

func (c *Client) giveUp(err error) {
	c.mu.Lock()
	if c.lost == nil {
		select {
		case <-c.stop: // closed by its owner: not lost
		default:
			c.lost = err
		}
	}
	c.mu.Unlock()
	c.Client.Close()
}

func (c *Client) keepalive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if c.Alive() != nil {
				return
			}
		}
	}
}

// Dial connects and authenticates. Every error it returns means "cannot
// connect": the network, the host key (ErrHostKey) or auth (ErrAuth).
func Dial(ctx context.Context, o Options) (*Client, error) {
	timeout := cmp.Or(o.Timeout, DefaultTimeout)
	deadline := time.Now().Add(timeout)
	auth, notes, closeAgent := authMethods(o.Identities, deadline)
	defer closeAgent()
	if len(auth) == 0 {
		why := "no ssh-agent, and no ~/.ssh/id_ed25519, id_ecdsa or id_rsa"
		if len(notes) > 0 {
			why = strings.Join(notes, "; ")
		}
		return nil, hint.Wrap(fmt.Errorf("%w: no usable SSH key (%s)", ErrAuth, why),
			"start ssh-agent and ssh-add your key, or pass -i with an unencrypted key")
	}
	cb, algos, err := o.HostKeys.config(o.Addr)
	if err != nil {
		return nil, err
	}
	var hostKey ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: o.User,
		Auth: auth,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			hostKey = key
			return cb(hostname, remote, key)
		},
		HostKeyAlgorithms: algos,
		Timeout:           timeout,
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	start := time.Now()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", o.Addr, unwrapOp(err))
	}
	rtt := time.Since(start)
	if k := kernelRTT(conn); k > 0 {
		rtt = k
	}
	// The handshake has no context: a deadline bounds it, and closing the
	// connection ends it when ctx is cancelled.
	conn.SetDeadline(deadline)
	heard := &firstBytes{Conn: conn}
	handshakeDone := make(chan struct{})
	go func() {
		select {
		case <-dctx.Done():
			conn.Close()
		case <-handshakeDone:
		}
	}()
	c, chans, reqs, err := ssh.NewClientConn(heard, o.Addr, cfg)
	close(handshakeDone)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh handshake with %s: %w", o.Addr, ctx.Err())
		}
		switch {
		case errors.Is(err, ErrHostKey):
			return nil, err
		case strings.Contains(err.Error(), "unable to authenticate"):
			why := ""
			if len(notes) > 0 {
				why = " (" + strings.Join(notes, "; ") + ")"
			}
			return nil, hint.Wrap(fmt.Errorf("%w: %s@%s accepted none of the keys tried%s", ErrAuth, o.User, o.Addr, why),
				"check that the user's authorized keys on the host hold one of your keys")
		}
		// At the deadline the connection may be closed under the read
		// ("use of closed network connection") as well as time out.
		timedOut := errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed)
		if err := heard.explain(o.Addr, timeout, timedOut, errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", o.Addr, err)
	}
	conn.SetDeadline(time.Time{})
	client := &Client{Client: ssh.NewClient(c, chans, reqs), HostKey: hostKey, RTT: rtt,
		addr: o.Addr, timeout: timeout, stop: make(chan struct{})}
	if every := cmp.Or(o.Keepalive, DefaultKeepalive); every > 0 {
		go client.keepalive(every)
	}
	return client, nil
}

// firstBytes keeps the first bytes the server sent, to say what went
// wrong when the handshake did not finish: nothing at all, something that
// is not SSH, or a greeting and then silence.
type firstBytes struct {
	net.Conn
	mu   sync.Mutex
	head []byte
}

func (f *firstBytes) Read(p []byte) (int, error) {
	n, err := f.Conn.Read(p)
	f.mu.Lock()
	if len(f.head) < 256 {
		f.head = append(f.head, p[:min(n, 256-len(f.head))]...)
	}
	f.mu.Unlock()
	return n, err
}

// explain says what a failed handshake's first bytes show: nothing at
// all, something that is not SSH, or a greeting and then silence; nil when
// they explain nothing.
func (f *firstBytes) explain(addr string, timeout time.Duration, timedOut, closed bool) error {
	f.mu.Lock()
	head := string(f.head)
	f.mu.Unlock()
	line, _, _ := strings.Cut(head, "\n")
	line = strings.TrimSpace(line)
	switch {
	case head != "" && !strings.HasPrefix(head, "SSH-"):
		return hint.Errorf("check the port: an SSH server's greeting starts with SSH-",
			"%s is not an SSH server: it answered %q", addr, line)
	case timedOut && head == "":
		return hint.Errorf("check that sshd runs there and listens on that port",
			"no SSH greeting from %s in %s: something accepted the connection and said nothing", addr, timeout)
	case timedOut:
		return fmt.Errorf("ssh handshake with %s: no answer within %s after its greeting %q", addr, timeout, line)
	case closed && head == "":
		return hint.Errorf("sshd may be refusing connections (MaxStartups, a firewall or TCP wrappers)",
			"%s closed the connection without an SSH greeting", addr)
	}
	return nil
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// authMethods collects ssh-agent's keys and the identity files. Notes say
// why a file was not used, such as a passphrase, which we never prompt for.
// Every exchange with ssh-agent is bounded: listing its keys by
// agentTimeout, signing during the handshake by deadline.
func authMethods(identities []string, deadline time.Time) (methods []ssh.AuthMethod, notes []string, closeAgent func()) {
	closeAgent = func() {}
	var signers []ssh.Signer
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if conn, err := net.DialTimeout("unix", sock, agentTimeout); err == nil {
			closeAgent = func() { conn.Close() }
			listBy := time.Now().Add(agentTimeout)
			conn.SetDeadline(listBy)
			s, err := agent.NewClient(conn).Signers()
			switch {
			// The agent package formats the cause away: the clock says it.
			case err != nil && !time.Now().Before(listBy):
				notes = append(notes, fmt.Sprintf("ssh-agent at %s does not answer", sock))
			case err != nil:
				notes = append(notes, fmt.Sprintf("ssh-agent at %s: %v", sock, err))
			default:
				for _, signer := range s {
					if as, ok := signer.(ssh.AlgorithmSigner); ok {
						signer = agentSigner{as, sock, deadline}
					}
					signers = append(signers, signer)
				}
			}
			conn.SetDeadline(deadline)
		}
	}
	explicit := len(identities) > 0
	if !explicit {
		if home, err := os.UserHomeDir(); err == nil {
			for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				identities = append(identities, filepath.Join(home, ".ssh", name))
			}
		}
	}
	for _, path := range identities {
		data, err := os.ReadFile(path)
		if err != nil {
			if explicit {
				notes = append(notes, fmt.Sprintf("%s: %v", path, unwrapPath(err)))
			}
			continue
		}
		s, err := ssh.ParsePrivateKey(data)
		var missing *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &missing):
			notes = append(notes, path+" is passphrase-protected; add it to ssh-agent with ssh-add")
		case err != nil && strings.HasSuffix(path, ".pub"):
			notes = append(notes, fmt.Sprintf("%s is a public key; -i takes the private one, %s", path, strings.TrimSuffix(path, ".pub")))
		case err != nil:
			notes = append(notes, fmt.Sprintf("%s: not a private key: %v", path, err))
		default:
			signers = append(signers, s)
		}
	}
	if len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	return methods, notes, closeAgent
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// kernelRTT is the kernel's round-trip estimate for a TCP connection, or 0:
// unlike a stopwatch around the connect it leaves out how long this
// process took to notice, which on a busy verifier can be far longer.
func kernelRTT(conn net.Conn) time.Duration {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var rtt time.Duration
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			rtt = time.Duration(info.Rtt) * time.Microsecond
		}
	})
	return rtt
}

// agentSigner says which agent failed when a signature does not come
// before the dial's deadline (an agent waiting for a touch or a prompt
// that never comes).
type agentSigner struct {
	ssh.AlgorithmSigner
	sock     string
	deadline time.Time
}

func (s agentSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return s.SignWithAlgorithm(rand, data, "")
}

func (s agentSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	sig, err := s.AlgorithmSigner.SignWithAlgorithm(rand, data, algorithm)
	if err != nil && !time.Now().Before(s.deadline) {
		return nil, fmt.Errorf("ssh-agent at %s does not answer", s.sock)
	}
	return sig, err
}
