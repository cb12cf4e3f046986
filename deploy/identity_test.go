package deploy

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/hint"
)

func TestCheckIdentity(t *testing.T) {
	dir := t.TempDir()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	plain, _ := ssh.MarshalPrivateKey(priv, "me")
	locked, _ := ssh.MarshalPrivateKeyWithPassphrase(priv, "me", []byte("secret words"))
	signer, _ := ssh.NewSignerFromKey(priv)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, mode)
		os.Chmod(p, mode)
		return p
	}
	for _, tc := range []struct {
		path, msg, hint string
	}{
		{write("ok", pem.EncodeToMemory(plain), 0o600), "", ""},
		{write("ro", pem.EncodeToMemory(plain), 0o400), "", ""},
		// Defect 4: ssh-keygen -y would ask for it where nobody can type.
		{write("locked", pem.EncodeToMemory(locked), 0o600), "needs its passphrase", "use ssh-agent without -i, or a key file without a passphrase"},
		// Defect 5: ssh refuses it, after the local build.
		{write("group", pem.EncodeToMemory(plain), 0o640), "can be read by group or others (mode 0640)", "chmod 600"},
		{write("world", pem.EncodeToMemory(plain), 0o604), "mode 0604", "chmod 600"},
		{write("pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600), "is not an SSH private key", "not the .pub"},
		{filepath.Join(dir, "missing"), "no such file", "private key file"},
		{dir, "is not a regular file", "private key file"},
	} {
		err := CheckIdentity(tc.path)
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("%s: %v", tc.path, err)
		case tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(hint.Of(err), tc.hint)):
			t.Errorf("%s: %v (hint %q), want %q, hint %q", tc.path, err, hint.Of(err), tc.msg, tc.hint)
		case err != nil && strings.Contains(err.Error()+hint.Of(err), "PRIVATE KEY"):
			t.Errorf("%s: the message shows the key: %v", tc.path, err)
		}
	}
}
