package diskpw

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/hint"
)

// TestRead: what a boot prompt cannot take is refused with what to do,
// and no message holds the password.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	file := func(name, data string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(data), 0o600)
		return p
	}
	for _, tc := range []struct {
		name, path, says, hint string
	}{
		{"missing", filepath.Join(dir, "nope"), "nope: no such file or directory", "give a readable file"},
		{"folder", dir, "is a folder", "give a readable file"},
		{"empty", file("empty", ""), "is empty", "printf %s"},
		{"newline", file("nl", "s3cret-pw\n"), "ends with a newline, which the password typed at the boot prompt does not have", `printf %s "$(cat `},
		{"crlf", file("crlf", "s3cret-pw\r\n"), "ends with a newline", `printf %s "$(cat `},
		{"two lines", file("two", "s3cret-pw\nmore"), "holds more than one line; a disk password is one", "only the password"},
		{"too big", file("big", strings.Repeat("s3cret", 1<<18)), "larger than 1 MiB", "give a readable file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.HasPrefix(err.Error(), "--disk-password-file "+tc.path) ||
				!strings.Contains(hint.Of(err), tc.hint) {
				t.Errorf("%v (hint %q), want %q and a hint with %q", err, hint.Of(err), tc.says, tc.hint)
			}
			if err != nil && strings.Contains(err.Error()+hint.Of(err), "s3cret") {
				t.Error("the password is in the message")
			}
		})
	}
	// A pipe is read once; its fix cannot be a file's.
	r, w, _ := os.Pipe()
	w.Write([]byte("s3cret-pw\n"))
	w.Close()
	defer r.Close()
	_, err := Read(fmt.Sprintf("/proc/self/fd/%d", r.Fd()))
	if err == nil || strings.Contains(hint.Of(err), "cat") || !strings.Contains(hint.Of(err), "tr -d") {
		t.Errorf("a pipe with a newline: %v, hint %q", err, hint.Of(err))
	}
	r, w, _ = os.Pipe()
	w.Write([]byte("s3cret-pw"))
	w.Close()
	defer r.Close()
	if got, err := Read(fmt.Sprintf("/proc/self/fd/%d", r.Fd())); err != nil || string(got) != "s3cret-pw" {
		t.Errorf("a good pipe: %q, %v", got, err)
	}
	if got, err := Read(file("ok", "s3cret pw with spaces")); err != nil || string(got) != "s3cret pw with spaces" {
		t.Errorf("a good file: %q, %v", got, err)
	}
}
