// Package sshx dials SSH the way OpenSSH users expect: ssh-agent and
// identity files for auth, a pinned key or known_hosts for the host, and
// errors that say which of those failed.
package sshx

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/keystone-nix/keystone/internal/hint"
)

// Options says how to reach one host.
type Options struct {
	Addr       string // host:port
	User       string
	Identities []string // private key files; empty means OpenSSH's defaults
	HostKeys   HostKeys
	Timeout    time.Duration // for the TCP connect and the handshake
}

// DefaultTimeout bounds the TCP connect and the handshake when Options
// leaves Timeout zero.
const DefaultTimeout = 10 * time.Second

// ErrAuth is the class of authentication failures.
var ErrAuth = errors.New("authentication failed")

// Client is a connection and the host key the server proved it holds.
type Client struct {
	*ssh.Client
	HostKey ssh.PublicKey
}

// Dial connects and authenticates. Every error it returns means "cannot
// connect": the network, the host key (ErrHostKey) or auth (ErrAuth).
func Dial(ctx context.Context, o Options) (*Client, error) {
	auth, notes, closeAgent := authMethods(o.Identities)
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
	timeout := cmp.Or(o.Timeout, DefaultTimeout)
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
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", o.Addr, unwrapOp(err))
	}
	// The handshake has no context: a deadline bounds it instead.
	conn.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, o.Addr, cfg)
	if err != nil {
		conn.Close()
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
		return nil, fmt.Errorf("ssh handshake with %s: %w", o.Addr, err)
	}
	conn.SetDeadline(time.Time{})
	return &Client{ssh.NewClient(c, chans, reqs), hostKey}, nil
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
func authMethods(identities []string) (methods []ssh.AuthMethod, notes []string, closeAgent func()) {
	closeAgent = func() {}
	var signers []ssh.Signer
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			closeAgent = func() { conn.Close() }
			if s, err := agent.NewClient(conn).Signers(); err == nil {
				signers = append(signers, s...)
			}
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
