package unlock

import (
	"bytes"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/diskpw"
	"github.com/keystone-nix/keystone/internal/hint"
)

// FilePassword reads the password once from path (internal/diskpw's
// rules). It has no second attempt.
func FilePassword(path string) (func(int) ([]byte, error), error) {
	data, err := diskpw.Read(path)
	if err != nil {
		return nil, err
	}
	return func(attempt int) ([]byte, error) {
		if attempt > 0 {
			return nil, ErrNoPassword
		}
		return bytes.Clone(data), nil
	}, nil
}

// TerminalPassword asks on the terminal in, echo off, for each attempt.
func TerminalPassword(in *os.File, out io.Writer) (func(int) ([]byte, error), error) {
	fd := int(in.Fd())
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return nil, hint.Errorf("give --disk-password-file FILE", "stdin is not a terminal to type the disk password on")
	}
	return func(attempt int) ([]byte, error) {
		prompt := "disk password: "
		if attempt > 0 {
			prompt = "disk password (again): "
		}
		io.WriteString(out, prompt)
		defer io.WriteString(out, "\n")
		return readNoEcho(fd)
	}, nil
}

// readNoEcho reads one line from the terminal fd with echo off.
func readNoEcho(fd int) ([]byte, error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	var line []byte
	var b [1]byte
	for {
		n, err := unix.Read(fd, b[:])
		if n == 0 || err != nil || b[0] == '\n' {
			if len(line) == 0 {
				return nil, errors.New("no password was typed")
			}
			return line, nil
		}
		line = append(line, b[0])
	}
}
