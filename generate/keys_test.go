package generate

import (
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/hint"
)

type keySet struct {
	ed25519, ed25519b, ecdsa, rsa2048, rsa1024, dsa, cert string
	private                                               []byte
}

var (
	keysOnce sync.Once
	keys     keySet
)

// testKeys returns authorized_keys lines (with a comment) of fresh keys.
func testKeys(t testing.TB) keySet {
	keysOnce.Do(func() {
		line := func(pub any, comment string) string {
			pk, err := ssh.NewPublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " " + comment
		}
		edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
		edPub2, _, _ := ed25519.GenerateKey(rand.Reader)
		ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		r2, _ := rsa.GenerateKey(rand.Reader, 2048)
		r1, _ := rsa.GenerateKey(rand.Reader, 1024)
		var d dsa.PrivateKey
		dsa.GenerateParameters(&d.Parameters, rand.Reader, dsa.L1024N160)
		dsa.GenerateKey(&d, rand.Reader)
		signer, _ := ssh.NewSignerFromKey(edPriv)
		edSSH, _ := ssh.NewPublicKey(edPub)
		cert := &ssh.Certificate{Key: edSSH, CertType: ssh.UserCert, ValidBefore: ssh.CertTimeInfinity}
		cert.SignCert(rand.Reader, signer)
		block, _ := ssh.MarshalPrivateKey(edPriv, "me@laptop")
		keys = keySet{
			ed25519:  line(edPub, "me@laptop"),
			ed25519b: line(edPub2, "ci@example"),
			ecdsa:    line(&ec.PublicKey, "ec@host"),
			rsa2048:  line(&r2.PublicKey, "rsa@host"),
			rsa1024:  line(&r1.PublicKey, "old@host"),
			dsa:      line(&d.PublicKey, "dsa@host"),
			cert:     strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))),
			private:  pem.EncodeToMemory(block),
		}
	})
	return keys
}

func putFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKeys(t *testing.T) {
	k := testKeys(t)
	dir := t.TempDir()
	pub := putFile(t, dir, "id.pub", k.ed25519+"\n")
	several := putFile(t, dir, "authorized_keys", "# team\n\n"+k.ed25519+"\r\n"+k.ecdsa+"\n"+`from="10.0.0.0/8,192.168.0.0/16",no-pty `+k.rsa2048+"\n")
	priv := putFile(t, dir, "id_ed25519", string(k.private))
	putFile(t, dir, "id_ed25519.pub", k.ed25519)
	privNoPub := putFile(t, dir, "lonely", string(k.private))
	empty := putFile(t, dir, "empty.pub", "# nothing\n\n")
	garbage := putFile(t, dir, "garbage.pub", k.ed25519+"\nhello world\n")
	knownHosts := putFile(t, dir, "known_hosts", "github.com "+k.ed25519+"\n")
	bom := putFile(t, dir, "bom.pub", "\uFEFF"+k.ed25519+"\n")
	spaced := putFile(t, dir, "My Keys.pub", k.ed25519+"\n")
	body := strings.Join(strings.Split(strings.TrimSpace(string(k.private)), "\n")[1:], "\n") // no armour
	body = body[:strings.LastIndex(body, "\n")]
	putty := "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: me\nPublic-Lines: 2\nAAAA\nBBBB\nPrivate-Lines: 1\nSECRETSECRET\nPrivate-MAC: 00\n"
	puttyFile := putFile(t, dir, "id.ppk", putty)

	for _, tc := range []struct {
		name      string
		specs     []string
		want      int
		msg, hint string
	}{
		{"pub file", []string{pub}, 1, "", ""},
		{"literal", []string{k.ed25519}, 1, "", ""},
		{"authorized_keys file", []string{several}, 3, "", ""},
		{"duplicates dropped", []string{pub, k.ed25519, several}, 3, "", ""},
		{"rsa 2048", []string{k.rsa2048}, 1, "", ""},
		{"none", nil, 0, "at least one --key is required", "--key ~/.ssh/id_ed25519.pub"},
		{"missing file", []string{filepath.Join(dir, "nope.pub")}, 0, "no such file", "quoted key line"},
		{"private key file", []string{priv}, 0, "is a private key; it was not used or stored", "pass the public half: " + priv + ".pub"},
		{"private key without pub", []string{privNoPub}, 0, "is a private key", "ssh-keygen -y -f"},
		{"private key literal", []string{string(k.private)}, 0, "was given a private key", "public half"},
		{"empty file", []string{empty}, 0, "holds no public keys", "ssh-keygen -t ed25519"},
		{"directory", []string{dir}, 0, "is a directory", ""},
		{"garbage line", []string{garbage}, 0, "garbage.pub line 2: not an SSH public key", "ssh-keygen"},
		{"garbage literal", []string{"ssh-ed25519 notbase64"}, 0, "not an SSH public key", ""},
		{"dsa", []string{k.dsa}, 0, "DSA keys are refused", "ed25519"},
		{"rsa 1024", []string{k.rsa1024}, 0, "RSA key of 1024 bits is refused; the minimum is 2048", "ed25519"},
		{"certificate", []string{k.cert}, 0, "is a certificate", "TrustedUserCAKeys"},
		{"a second key in the comment stays a comment", []string{k.ed25519 + " " + k.ecdsa}, 1, "", ""},
		{"known_hosts line", []string{knownHosts}, 0, `"github.com" is not an authorized_keys option`, "known_hosts line?"},
		{"unknown option", []string{"bogus-option " + k.ed25519}, 0, `"bogus-option" is not an authorized_keys option`, ""},
		{"options in any case", []string{`NO-PTY,From="10.0.0.1" ` + k.ed25519}, 1, "", ""},
		{"byte order mark", []string{bom}, 1, "", ""},
		{"path with a space", []string{spaced}, 1, "", ""},
		{"missing path with a space", []string{filepath.Join(dir, "My Keyz.pub")}, 0, "My Keyz.pub: no such file", ""},
		{"several lines pasted", []string{k.ed25519 + "\n" + k.ecdsa}, 0, `--key "ssh-ed25519 …" holds more than one line`, "put several keys in a file"},
		{"unarmoured private key", []string{body}, 0, "was given a private key", "public half"},
		{"putty private key", []string{putty}, 0, "was given a private key", "public half"},
		{"putty private key file", []string{puttyFile}, 0, "is a private key", "public half"},
		{"age secret key", []string{"AGE-SECRET-KEY-1" + strings.Repeat("Q", 58)}, 0, "was given a private key", ""},
		{"missing file under ssh-keys/", []string{"ssh-keys/admin.pub"}, 0, "--key ssh-keys/admin.pub: no such file", ""},
	} {
		got, _, err := LoadKeys(tc.specs)
		wantErr(t, tc.name, err, tc.msg, tc.hint)
		if err == nil && len(got) != tc.want && tc.want != 0 {
			t.Errorf("%s: %d keys, want %d", tc.name, len(got), tc.want)
		}
		if err != nil && (strings.Contains(err.Error()+hint.Of(err), "PRIVATE KEY") || strings.Contains(err.Error()+hint.Of(err), "SECRET") || strings.Contains(err.Error()+hint.Of(err), "QQQQ") ||
			strings.Contains(err.Error()+hint.Of(err), body[:40])) {
			t.Errorf("%s: error shows key material: %v", tc.name, err)
		}
	}
}

func TestLoadKeysNotesDuplicates(t *testing.T) {
	k := testKeys(t)
	got, notes, err := LoadKeys([]string{k.ed25519, k.ed25519b, k.ed25519})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(notes) != 1 || !strings.Contains(notes[0], "dropped a duplicate of key SHA256:") {
		t.Errorf("got %d keys and notes %q, want 2 keys and one note about the duplicate", len(got), notes)
	}
}

func TestLoadKeysKeepsOptionsAndComment(t *testing.T) {
	k := testKeys(t)
	in := `no-pty,command="echo \"hi\" ${USER}" ` + k.ed25519 + ` quote" back\slash ${x} ''`
	got, _, err := LoadKeys([]string{in})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Line != in {
		t.Errorf("line\n got %s\nwant %s", got[0].Line, in)
	}
}

func TestLoadKeysRefusesControlCharacters(t *testing.T) {
	k := testKeys(t)
	_, _, err := LoadKeys([]string{k.ed25519 + "\x00evil"})
	wantErr(t, "NUL in comment", err, "control character", "")
	_, _, err = LoadKeys([]string{k.ed25519 + " a\rb"})
	wantErr(t, "CR in comment", err, "control character", "")
	_, _, err = LoadKeys([]string{k.ed25519 + " admin\u202Egpj.exe"})
	wantErr(t, "right-to-left override in comment", err, "bidirectional control character", "")
}

func TestLoadKeysExpandsHome(t *testing.T) {
	k := testKeys(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	putFile(t, home, "My Keys.pub", k.ed25519+"\n")
	if got, _, err := LoadKeys([]string{"~/My Keys.pub"}); err != nil || len(got) != 1 {
		t.Errorf("~/My Keys.pub: %v, %v", got, err)
	}
}
