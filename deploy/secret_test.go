package deploy

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/hint"
)

func TestOpenPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(data), mode)
		return p
	}
	for _, tc := range []struct {
		path, msg string
		others    bool
	}{
		{write("ok", "correct horse", 0o600), "", false},
		{write("readable", "correct horse", 0o644), "", true},
		{write("empty", "", 0o600), "is empty", false},
		{write("newline", "correct horse\n", 0o600), "ends with a newline, which the password typed at the boot prompt does not have", false},
		{write("crlf", "correct horse\r\n", 0o600), "ends with a newline", false},
		{write("lines", "correct\nhorse", 0o600), "holds more than one line", false},
		{filepath.Join(dir, "missing"), "no such file", false},
		{dir, "is a folder", false},
	} {
		pf, err := OpenPasswordFile(tc.path)
		switch {
		case tc.msg == "" && (err != nil || pf.Path != tc.path || pf.OthersCanRead != tc.others):
			t.Errorf("%s: %+v, %v", tc.path, pf, err)
		case tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg) || hint.Of(err) == ""):
			t.Errorf("%s: %v, want %q and a hint", tc.path, err, tc.msg)
		case err != nil && strings.Contains(err.Error()+hint.Of(err), "correct horse"):
			t.Errorf("%s: the error shows the password: %v", tc.path, err)
		}
	}
}

// A pipe gives its contents once; nixos-anywhere gets a private copy.
func TestOpenPasswordFileFromAPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.WriteString("correct horse"); w.Close() }()
	defer r.Close()
	pf, err := OpenPasswordFile("/dev/fd/" + strconv.Itoa(int(r.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(pf.Path)
	st, _ := os.Stat(pf.Path)
	if string(data) != "correct horse" || st.Mode().Perm() != 0o600 {
		t.Errorf("copy holds %q, mode %v", data, st.Mode())
	}
	pf.Remove()
	if _, err := os.Stat(pf.Path); err == nil {
		t.Error("the copy is still there after Remove")
	}
}

func TestNewHostKey(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o077)) // a careful user's umask
	k, err := NewHostKey("root@web1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "etc", "etc/ssh"} {
		if st, err := os.Stat(filepath.Join(k.ExtraFiles, d)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("extra-files folder %q: %v, mode %v; want 0755, it becomes the new system's", d, err, st.Mode())
		}
	}
	priv := filepath.Join(k.ExtraFiles, "etc/ssh/ssh_host_ed25519_key")
	st, err := os.Stat(priv)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key %v mode %v, want 0600", err, st.Mode())
	}
	data, _ := os.ReadFile(priv)
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil || string(signer.PublicKey().Marshal()) != string(k.Public.Marshal()) {
		t.Fatalf("private key does not match the public one: %v", err)
	}
	pub, _ := os.ReadFile(priv + ".pub")
	if string(pub) != string(k.AuthorizedLine("root@web1")) || !strings.HasSuffix(string(pub), " root@web1\n") {
		t.Errorf(".pub is %q", pub)
	}
	k.Remove()
	if _, err := os.Stat(priv); !os.IsNotExist(err) {
		t.Errorf("Remove left the private key: %v", err)
	}
}
