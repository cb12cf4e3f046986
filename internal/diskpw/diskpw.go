// Package diskpw reads a disk password from the file --disk-password-file
// names, with one set of rules for every command that takes one (deploy,
// enroll, unlock, switch, vm unlock): what a boot prompt takes.
package diskpw

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/keystone-nix/keystone/internal/hint"
)

// maxSize is more than any disk password, and bounds what a mistaken path
// (a disk image, /dev/zero) makes keystone read.
const maxSize = 1 << 20

// Read reads the password in path, once: a pipe (`<(pass web1)`,
// /dev/stdin) gives it only once. It must not be empty and must be one
// line without a trailing newline: the install would take the newline as
// part of the key, and nobody types one at the boot prompt. No error holds
// the password.
func Read(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err == nil && fi.IsDir() {
		err = errors.New("is a folder")
	}
	var data []byte
	if err == nil {
		data, err = readAtMost(path, maxSize)
	}
	if err == nil && len(data) > maxSize {
		err = errors.New("larger than 1 MiB, which no disk password is")
	}
	switch {
	case err != nil:
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, hint.Wrap(fmt.Errorf("--disk-password-file %s: %w", path, err), "give a readable file holding only the disk password")
	case len(data) == 0:
		return nil, hint.Errorf("write the password with printf %s 'PASSWORD' > FILE", "--disk-password-file %s is empty", path)
	case data[len(data)-1] == '\n' || data[len(data)-1] == '\r':
		clear(data)
		fix := "drop it where the password comes from, e.g. | tr -d '\\n'"
		if fi.Mode().IsRegular() {
			fix = fmt.Sprintf(`write it without one: printf %%s "$(cat %s)" > %s.new`, path, path)
		}
		return nil, hint.Errorf(fix, "--disk-password-file %s ends with a newline, which the password typed at the boot prompt does not have", path)
	case bytes.ContainsAny(data, "\r\n"):
		clear(data)
		return nil, hint.Errorf("give a file holding only the password", "--disk-password-file %s holds more than one line; a disk password is one", path)
	}
	return data, nil
}

func readAtMost(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n+1))
}
