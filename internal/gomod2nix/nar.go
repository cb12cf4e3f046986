package gomod2nix

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// WriteNAR writes the Nix archive of path: Nix's canonical serialisation of
// a file tree (regular files with an executable bit, symlinks, folders with
// entries sorted by name), which store path hashes are taken over.
// gomod2nix skips .DS_Store files; module zips never hold one.
func WriteNAR(w io.Writer, path string) error {
	n := narWriter{w: w}
	n.str("nix-archive-1")
	n.node(path)
	return n.err
}

type narWriter struct {
	w   io.Writer
	err error
}

func (n *narWriter) str(s string) {
	if n.err != nil {
		return
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(len(s)))
	pad := (8 - len(s)%8) % 8
	_, n.err = n.w.Write(append(append(b[:], s...), make([]byte, pad)...))
}

func (n *narWriter) node(path string) {
	fi, err := os.Lstat(path)
	if err != nil {
		n.err = err
		return
	}
	n.str("(")
	n.str("type")
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			n.err = err
			return
		}
		n.str("symlink")
		n.str("target")
		n.str(target)
	case fi.IsDir():
		n.str("directory")
		entries, err := os.ReadDir(path)
		if err != nil {
			n.err = err
			return
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		for _, name := range names {
			n.str("entry")
			n.str("(")
			n.str("name")
			n.str(name)
			n.str("node")
			n.node(filepath.Join(path, name))
			n.str(")")
		}
	default:
		n.str("regular")
		if fi.Mode()&0o100 != 0 {
			n.str("executable")
			n.str("")
		}
		data, err := os.ReadFile(path)
		if err != nil {
			n.err = err
			return
		}
		n.str("contents")
		n.str(string(data))
	}
	n.str(")")
}
