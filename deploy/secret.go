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

	"github.com/keystone-nix/keystone/internal/hint"
)

// CheckPasswordFile accepts a disk password file that is readable and not
// empty and has no trailing newline. It never reads the password into a
// message.
func CheckPasswordFile(path string) error {
	data, err := os.ReadFile(path)
	switch {
	case err != nil:
		return hint.Wrap(fmt.Errorf("--disk-password-file: %w", unwrapPath(err)), "give a readable file holding only the password")
	case len(data) == 0:
		return hint.Errorf("write the password with `printf %s 'PASSWORD' > FILE`", "--disk-password-file %s is empty", path)
	case data[len(data)-1] == '\n' || data[len(data)-1] == '\r':
		// The install would use the newline as part of the key, and typing
		// the password at the boot prompt never matches it.
		return hint.Errorf("write it without one: printf %s \"$(cat FILE)\" > FILE.new",
			"--disk-password-file %s ends with a newline, which would become part of the disk key and never match the password typed at boot", path)
	}
	return nil
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
