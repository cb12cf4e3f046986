package generate

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/text"
)

// Key is one authorized_keys line for root.
type Key struct {
	Line        string // options, type, base64 and comment, re-encoded
	Fingerprint string // SHA256:…
}

const (
	minRSABits = 2048
	maxKeyFile = 1 << 20
	newKeyHint = "make one with `ssh-keygen -t ed25519` and pass the .pub file"
)

// privateMarks are what private key files hold and public ones never do:
// PEM armour, PuTTY's headers, and the base64 of "openssh-key-v1" that
// starts an OpenSSH key pasted without its armour.
var privateMarks = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File-|Private-Lines:|b3BlbnNzaC1rZXktdjE|AGE-SECRET-KEY-1`)

// keyOptions are the authorized_keys options OpenSSH knows (sshd(8)). sshd
// refuses a whole line with any other, so root could not log in.
var keyOptions = []string{
	"agent-forwarding", "cert-authority", "command", "environment", "expiry-time", "from",
	"no-agent-forwarding", "no-port-forwarding", "no-pty", "no-touch-required", "no-user-rc",
	"no-x11-forwarding", "permitlisten", "permitopen", "port-forwarding", "principals", "pty",
	"restrict", "tunnel", "user-rc", "verify-required", "x11-forwarding",
}

// LoadKeys reads every --key value: a path to a .pub file, an
// authorized_keys file, or a literal key line. Exact duplicates are dropped
// with a note; at least one key must remain.
func LoadKeys(specs []string) (keys []Key, notes []string, err error) {
	if len(specs) == 0 {
		return nil, nil, hint.Errorf("pass --key ~/.ssh/id_ed25519.pub (repeatable); without it nobody can log in",
			"at least one --key is required")
	}
	seen := map[string]bool{}
	for _, spec := range specs {
		lines, err := keyLines(spec)
		if err != nil {
			return nil, nil, err
		}
		for _, l := range lines {
			k, err := ParseKey(l.text)
			if err != nil {
				return nil, nil, fmt.Errorf("--key %s%s: %w", shown(spec), l.where, err)
			}
			if seen[k.Line] {
				notes = append(notes, fmt.Sprintf("dropped a duplicate of key %s (--key %s%s)", k.Fingerprint, shown(spec), l.where))
				continue
			}
			seen[k.Line] = true
			keys = append(keys, k)
		}
	}
	return keys, notes, nil
}

type keyLine struct {
	text  string
	where string // " line N" inside a file, "" for a literal
}

// keyLines returns the candidate key lines of one --key value.
func keyLines(spec string) ([]keyLine, error) {
	if privateMarks.MatchString(spec) {
		return nil, hint.Errorf("pass the public half (the .pub file or `ssh-keygen -y -f KEY`)",
			"--key was given a private key; it was not used or stored")
	}
	name := expandHome(spec)
	if looksLiteral(name) {
		if strings.Contains(spec, "\n") {
			return nil, hint.Errorf("put several keys in a file, one per line, or pass --key once for each",
				"--key %s holds more than one line", shown(spec))
		}
		return []keyLine{{text: spec}}, nil
	}
	data, err := readSmall(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, hint.Errorf("pass a .pub file, an authorized_keys file, or a quoted key line such as \"ssh-ed25519 AAAA… me@laptop\"",
			"--key %s: no such file", shown(spec))
	case err != nil:
		return nil, hint.Wrap(fmt.Errorf("--key %s: %w", shown(spec), err), "pass a .pub file or an authorized_keys file")
	}
	data = bytes.TrimPrefix(data, []byte("\uFEFF")) // a byte order mark from an editor
	if privateMarks.Match(data) {
		h := "pass the public half: " + spec + ".pub"
		if _, err := os.Stat(name + ".pub"); err != nil {
			h = "pass the public half; `ssh-keygen -y -f " + spec + "` prints it"
		}
		return nil, hint.Errorf(h, "--key %s is a private key; it was not used or stored", spec)
	}
	var lines []keyLine
	for i, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, keyLine{l, fmt.Sprintf(" line %d", i+1)})
	}
	if len(lines) == 0 {
		return nil, hint.Errorf(newKeyHint, "--key %s holds no public keys", spec)
	}
	return lines, nil
}

// looksLiteral tells a key line from a file name: a value that is not a
// file and has a key type followed by more among its words
// ("ssh-ed25519 AAAA…"), where a path such as ssh-keys/a.pub has one word.
func looksLiteral(spec string) bool {
	if _, err := os.Stat(spec); err == nil {
		return false
	}
	f := strings.Fields(spec)
	for i := range len(f) - 1 {
		if isKeyType(f[i]) {
			return true
		}
	}
	return false
}

func isKeyType(word string) bool {
	return !strings.Contains(word, "/") &&
		(strings.HasPrefix(word, "ssh-") || strings.HasPrefix(word, "ecdsa-") || strings.HasPrefix(word, "sk-"))
}

func expandHome(spec string) string {
	if rest, ok := strings.CutPrefix(spec, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return spec
}

// shown is how a message names a --key value: a file by its name, a
// literal line by its key type only, since whatever was pasted may be
// secret and is long anyway.
func shown(spec string) string {
	if !looksLiteral(expandHome(spec)) && len(spec) <= 256 && CheckText(spec) == nil {
		return spec
	}
	for _, f := range strings.Fields(spec) {
		if isKeyType(f) {
			return strconv.Quote(f + " …")
		}
	}
	return "(the value given)"
}

func readSmall(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, errors.New("is a directory, not a key file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFile {
		return nil, errors.New("is larger than 1 MiB, too large for a key file")
	}
	return data, nil
}

// ParseKey checks one authorized_keys line and re-encodes it.
func ParseKey(line string) (Key, error) {
	if err := CheckText(line); err != nil {
		return Key{}, fmt.Errorf("the key line %w", err)
	}
	pk, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return Key{}, hint.Wrap(errors.New("not an SSH public key"), newKeyHint)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return Key{}, errors.New("more than one key on a line")
	}
	for _, o := range options {
		name, _, _ := strings.Cut(o, "=")
		if !slices.Contains(keyOptions, strings.ToLower(name)) {
			return Key{}, hint.Errorf("a line of authorized_keys starts with its options or its key type; is this a known_hosts line?",
				"%q is not an authorized_keys option, and sshd would refuse the line", text.OneLine(name))
		}
	}
	if _, ok := pk.(*ssh.Certificate); ok {
		return Key{}, hint.Wrap(errors.New("is a certificate, not a key"), "pass the plain public key; certificates go in TrustedUserCAKeys")
	}
	switch pk.Type() {
	case ssh.KeyAlgoDSA:
		return Key{}, hint.Wrap(errors.New("DSA keys are refused: OpenSSH has disabled them"), newKeyHint)
	case ssh.KeyAlgoRSA:
		bits := pk.(ssh.CryptoPublicKey).CryptoPublicKey().(*rsa.PublicKey).N.BitLen()
		if bits < minRSABits {
			return Key{}, hint.Wrap(fmt.Errorf("RSA key of %d bits is refused; the minimum is %d", bits, minRSABits), newKeyHint)
		}
	}
	parts := []string{}
	if len(options) > 0 {
		parts = append(parts, strings.Join(options, ","))
	}
	parts = append(parts, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))))
	if comment != "" {
		parts = append(parts, comment)
	}
	return Key{Line: strings.Join(parts, " "), Fingerprint: ssh.FingerprintSHA256(pk)}, nil
}
