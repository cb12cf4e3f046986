package deploy

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/diskpw"
)

// PasswordFile is a checked disk password in a file nixos-anywhere can
// read: the user's own file, or a private copy of a pipe's contents.
type PasswordFile struct {
	Path          string // what nixos-anywhere reads
	OthersCanRead bool   // the user's file is readable by group or others
	dir           string // the private copy's folder, if any
}

// OpenPasswordFile reads a disk password file (internal/diskpw's rules).
// A pipe (`<(pass web1)`, /dev/stdin) can be read only once, so what it
// gave is kept in a private temporary file. No message ever holds the
// password.
func OpenPasswordFile(path string) (*PasswordFile, error) {
	data, err := diskpw.Read(path)
	if err != nil {
		return nil, err
	}
	defer clear(data)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return &PasswordFile{Path: path, OthersCanRead: fi.Mode().Perm()&0o044 != 0}, nil
	}
	dir, err := os.MkdirTemp("", "keystone-secret-")
	if err != nil {
		return nil, err
	}
	pf := &PasswordFile{Path: filepath.Join(dir, "disk.key"), dir: dir}
	if err := os.WriteFile(pf.Path, data, 0o600); err != nil {
		pf.Remove()
		return nil, err
	}
	return pf, nil
}

// Remove deletes the private copy, if there is one.
func (p *PasswordFile) Remove() error {
	if p == nil || p.dir == "" {
		return nil
	}
	return os.RemoveAll(p.dir)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// HostKey is the ed25519 host key made for a new install: the private half
// lives only in the extra-files folder passed to nixos-anywhere.
type HostKey struct {
	Public     ssh.PublicKey
	ExtraFiles string // root of the tree copied into the new system
	dir        string
}

// NewHostKey makes a key in a private temporary folder laid out for
// --extra-files: etc/ssh/ssh_host_ed25519_key (0600) and its .pub.
func NewHostKey(comment string) (*HostKey, error) {
	dir, err := os.MkdirTemp("", "keystone-deploy-")
	if err != nil {
		return nil, err
	}
	k := &HostKey{ExtraFiles: filepath.Join(dir, "root"), dir: dir}
	if err := k.write(comment); err != nil {
		k.Remove()
		return nil, err
	}
	return k, nil
}

func (k *HostKey) write(comment string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return err
	}
	if k.Public, err = ssh.NewPublicKey(pub); err != nil {
		return err
	}
	sshDir := filepath.Join(k.ExtraFiles, "etc", "ssh")
	if err := os.MkdirAll(sshDir, 0o755); err != nil {
		return err
	}
	// nixos-anywhere tars this tree onto the new root, folders' modes
	// included: under a umask of 077 they would be 0700, and so would /.
	for _, d := range []string{k.ExtraFiles, filepath.Dir(sshDir), sshDir} {
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(sshDir, "ssh_host_ed25519_key"), pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(sshDir, "ssh_host_ed25519_key.pub"), k.AuthorizedLine(comment), 0o644)
}

// AuthorizedLine is the public key as one line, like ssh-keygen's .pub.
func (k *HostKey) AuthorizedLine(comment string) []byte {
	line := ssh.MarshalAuthorizedKey(k.Public)
	if comment != "" {
		line = append(line[:len(line)-1], []byte(" "+comment+"\n")...)
	}
	return line
}

// Remove deletes the private key from disk.
func (k *HostKey) Remove() error { return os.RemoveAll(k.dir) }
