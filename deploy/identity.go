package deploy

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/hint"
)

// CheckIdentity refuses an -i key file nixos-anywhere cannot use without
// a person at a terminal, before anything is built. nixos-anywhere copies
// it and runs `ssh-keygen -y -f` on the copy (uploadSshKey in
// src/nixos-anywhere.sh, 1.12.0 and 1.13.0): a passphrase would be asked
// for where nobody can type it, even when ssh-agent holds the key, and
// ssh refuses a key file that group or others can read ("UNPROTECTED
// PRIVATE KEY FILE"). Nothing of the key is ever in a message.
func CheckIdentity(path string) error {
	fi, err := os.Stat(path)
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: is not a regular file", path)
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return hint.Wrap(fmt.Errorf("-i: %w", unwrapPath(err)), "give the private key file the target accepts")
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return hint.Errorf("chmod 600 "+path,
			"-i %s can be read by group or others (mode %04o), and ssh refuses such a key", path, perm)
	}
	_, err = ssh.ParseRawPrivateKey(data)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return hint.Errorf("use ssh-agent without -i, or a key file without a passphrase",
			"-i %s needs its passphrase, which nixos-anywhere would ask for where nobody can type it", path)
	case err != nil:
		return hint.Errorf("give the private key file, not the .pub", "-i %s is not an SSH private key", path)
	}
	return nil
}
