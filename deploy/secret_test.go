package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/hint"
)

func TestCheckPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(data), 0o600)
		return p
	}
	for _, tc := range []struct {
		path, msg string
	}{
		{write("ok", "correct horse"), ""},
		{write("empty", ""), "is empty"},
		{write("newline", "correct horse\n"), "ends with a newline, which would become part of the disk key"},
		{write("crlf", "correct horse\r\n"), "ends with a newline"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		err := CheckPasswordFile(tc.path)
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg) || hint.Of(err) == ""):
			t.Errorf("%s: %v, want %q and a hint", tc.path, err, tc.msg)
		case err != nil && strings.Contains(err.Error()+hint.Of(err), "correct horse"):
			t.Errorf("%s: the error shows the password: %v", tc.path, err)
		}
	}
}

func TestNewHostKey(t *testing.T) {
	k, err := NewHostKey("root@web1")
	if err != nil {
		t.Fatal(err)
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
