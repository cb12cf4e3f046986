package sshx

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/keystone-nix/keystone/internal/hint"
)

// HostKeys says which host keys a connection trusts. The first that is set
// wins: Pinned, then Announced, then KnownHosts; Insecure trusts anything.
type HostKeys struct {
	Pinned     ssh.PublicKey // vms/NAME/ssh_host_ed25519_key.pub
	PinnedFrom string        // where Pinned came from, for messages
	// Announced is the SHA256 fingerprint of the ed25519 key an installer
	// announced over mDNS (discover): only that key is accepted. Anyone
	// on the link can announce anything, so this only holds the
	// connection to what was announced; it proves nothing.
	Announced  string
	KnownHosts string // a known_hosts file
	AcceptNew  bool   // record an unknown key in KnownHosts (never a changed one)
	Insecure   bool
}

// ErrHostKey is the class of every host key refusal: unknown or changed.
var ErrHostKey = errors.New("host key not trusted")

// ReadPinned reads a one-line public key file such as ssh_host_ed25519_key.pub.
func ReadPinned(path string) (ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not a public key: %w", path, err)
	}
	return key, nil
}

// config returns the host key callback and the algorithms to ask for: the
// server must present the kind of key we hold, or a host with several keys
// would look changed.
func (h HostKeys) config(addr string) (ssh.HostKeyCallback, []string, error) {
	switch {
	case h.Pinned != nil:
		return h.pinned, algorithmsFor(h.Pinned.Type()), nil
	case h.Announced != "":
		return h.announced, []string{ssh.KeyAlgoED25519}, nil
	case h.Insecure:
		return ssh.InsecureIgnoreHostKey(), nil, nil
	case h.KnownHosts == "":
		return nil, nil, errors.New("no host key to check against: give a pinned key or a known_hosts file")
	}
	// A missing file knows no host; it is made only to record one.
	var files []string
	if _, err := os.Stat(h.KnownHosts); err == nil {
		files = append(files, h.KnownHosts)
	}
	cb, err := knownhosts.New(files...)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", h.KnownHosts, err)
	}
	algos := knownAlgorithms(cb, addr)
	if len(algos) == 0 {
		// A host we know no key of: ask for its ed25519 key first, the one
		// users compare (and deploy pins), not Go's first choice, ECDSA.
		algos = unknownHostAlgorithms
	}
	return h.knownHosts(cb), algos, nil
}

// unknownHostAlgorithms: ed25519 first, then the plain keys of Go's
// default list (golang.org/x/crypto/ssh common.go, defaultHostKeyAlgos),
// without DSA.
var unknownHostAlgorithms = []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSA}

// describe names a key as ssh-keygen -l does, type included: a user who
// compares it with the one on the host's console must know which of its
// keys to look at.
func describe(key ssh.PublicKey) string {
	return key.Type() + " " + ssh.FingerprintSHA256(key)
}

// hostKeyFile is where OpenSSH keeps the public host key of a type.
func hostKeyFile(keyType string) string {
	name := map[string]string{ssh.KeyAlgoED25519: "ed25519", ssh.KeyAlgoRSA: "rsa",
		ssh.KeyAlgoECDSA256: "ecdsa", ssh.KeyAlgoECDSA384: "ecdsa", ssh.KeyAlgoECDSA521: "ecdsa"}[keyType]
	if name == "" {
		return "/etc/ssh/ssh_host_*_key.pub"
	}
	return "/etc/ssh/ssh_host_" + name + "_key.pub"
}

// knownAlgorithms asks the known_hosts callback which keys it holds for
// addr, by showing it a key it cannot know.
func knownAlgorithms(cb ssh.HostKeyCallback, addr string) []string {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	probe, _ := ssh.NewPublicKey(priv.Public())
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{}, probe); !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	for _, w := range ke.Want {
		algos = append(algos, algorithmsFor(w.Key.Type())...)
	}
	return algos
}

func (h HostKeys) pinned(hostname string, remote net.Addr, key ssh.PublicKey) error {
	if bytes.Equal(key.Marshal(), h.Pinned.Marshal()) {
		return nil
	}
	return hint.Wrap(fmt.Errorf("%w: %s answered with host key %s, but %s pins %s: the host was reinstalled, or this is not the host",
		ErrHostKey, hostname, ssh.FingerprintSHA256(key), h.PinnedFrom, ssh.FingerprintSHA256(h.Pinned)),
		"if the host was reinstalled without keystone deploy, replace "+h.PinnedFrom+" with its new key after checking it on the console")
}

func (h HostKeys) announced(hostname string, _ net.Addr, key ssh.PublicKey) error {
	if fp := ssh.FingerprintSHA256(key); fp != h.Announced {
		return fmt.Errorf("%w: %s answered with host key %s, not the %s it announced: another machine answers at its address",
			ErrHostKey, hostname, fp, h.Announced)
	}
	return nil
}

func (h HostKeys) knownHosts(cb ssh.HostKeyCallback) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			if err != nil {
				return fmt.Errorf("%w: %v", ErrHostKey, err)
			}
			return nil
		}
		if len(ke.Want) > 0 {
			var known []string
			for _, w := range ke.Want {
				known = append(known, fmt.Sprintf("%s (%s line %d)", describe(w.Key), w.Filename, w.Line))
			}
			return hint.Wrap(fmt.Errorf("%w: %s answered with host key %s, but known_hosts has %s: the host was reinstalled, or this is not the host",
				ErrHostKey, hostname, describe(key), strings.Join(known, ", ")),
				"check the new key on the host's console, then remove the old line: ssh-keygen -R "+knownhosts.Normalize(hostname)+" -f "+h.KnownHosts)
		}
		if !h.AcceptNew {
			return hint.Wrap(fmt.Errorf("%w: %s is not in %s (its host key is %s)", ErrHostKey, hostname, h.KnownHosts, describe(key)),
				"pass --accept-new to record it, after comparing it with ssh-keygen -lf "+hostKeyFile(key.Type())+" on the host's console")
		}
		line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key)
		if err := os.MkdirAll(filepath.Dir(h.KnownHosts), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(h.KnownHosts, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = fmt.Fprintln(f, line)
		return err
	}
}

func algorithmsFor(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}
