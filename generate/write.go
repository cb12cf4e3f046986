package generate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/keystone-nix/keystone/internal/hint"
)

// Check says whether dir/name can be written, without writing: a new
// folder, or an existing one with force. exists is true for the latter.
func Check(dir, name string, force bool) (exists bool, err error) {
	if dir == "" {
		return false, hint.Errorf("leave --dir out for vms, or name a folder", "--dir is empty")
	}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() || errors.Is(err, syscall.ENOTDIR) {
		return false, hint.Errorf("pick another --dir", "--dir %s is not a folder", dir)
	}
	hostDir := filepath.Join(dir, name)
	st, err := os.Lstat(hostDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !st.IsDir():
		return false, hint.Errorf("move it away or pick another --dir", "%s exists and is not a folder", hostDir)
	case !force:
		return false, hint.Errorf("pass --force to replace its "+ConfigFile+" and "+DiskFile+" (other files there are kept)",
			"%s already exists", hostDir)
	}
	for _, f := range []string{ConfigFile, DiskFile} {
		p := filepath.Join(hostDir, f)
		if st, err := os.Lstat(p); err == nil && !st.Mode().IsRegular() {
			return false, hint.Errorf("move it away; --force replaces files only", "%s is not a file", p)
		}
	}
	return true, nil
}

// Write puts files into dir/name. A new folder appears whole or not at all
// (built beside it, then renamed into place). An existing folder is refused
// unless force, which replaces only the given files and keeps the rest
// (a pinned host key, facter.json), all of them or none. It returns the
// paths it replaced.
func Write(dir, name string, files []File, force bool) (replaced []string, err error) {
	exists, err := Check(dir, name, force)
	if err != nil {
		return nil, err
	}
	hostDir := filepath.Join(dir, name)
	defer func() {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// Name the host folder, not a temporary file in it.
			err = fmt.Errorf("cannot write %s: %w", hostDir, pe.Err)
		}
	}()
	if !exists {
		return nil, writeNew(dir, name, files)
	}
	for _, f := range files {
		p := filepath.Join(hostDir, f.Name)
		if _, err := os.Lstat(p); err == nil {
			replaced = append(replaced, p)
		}
	}
	return replaced, replaceFiles(hostDir, files)
}

func writeNew(dir, name string, files []File) (err error) {
	created, err := mkdirAll(dir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created != "" {
			os.RemoveAll(created)
		}
	}()
	tmp, err := os.MkdirTemp(dir, "."+name+".new-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(tmp, f.Name), f.Data); err != nil {
			return err
		}
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// mkdirAll is os.MkdirAll that returns the topmost folder it created, so a
// failure can take it away again.
func mkdirAll(dir string) (created string, err error) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = d
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return created, nil
}

func replaceFiles(hostDir string, files []File) (err error) {
	var temps, olds []string
	defer func() {
		for _, t := range append(temps, olds...) {
			if t != "" {
				os.Remove(t)
			}
		}
	}()
	for _, f := range files {
		t, err := os.CreateTemp(hostDir, "."+f.Name+".new-")
		if err != nil {
			return err
		}
		temps = append(temps, t.Name())
		t.Close()
		if err := writeFile(t.Name(), f.Data); err != nil {
			return err
		}
		// A second name for the file being replaced, to put it back.
		old := filepath.Join(hostDir, "."+f.Name+".old-"+strings.TrimPrefix(filepath.Base(t.Name()), "."+f.Name+".new-"))
		if err := os.Link(filepath.Join(hostDir, f.Name), old); err == nil {
			olds = append(olds, old)
		} else if errors.Is(err, fs.ErrNotExist) {
			olds = append(olds, "")
		} else {
			return err
		}
	}
	for i, f := range files {
		if err := os.Rename(temps[i], filepath.Join(hostDir, f.Name)); err != nil {
			for j := range i { // put back what was replaced
				if olds[j] != "" {
					os.Rename(olds[j], filepath.Join(hostDir, files[j].Name))
				} else {
					os.Remove(filepath.Join(hostDir, files[j].Name))
				}
			}
			return err
		}
		temps[i] = "" // renamed: nothing to clean up
	}
	return nil
}

func writeFile(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(name, 0o644) // CreateTemp made it 0600
}
