// Package lint lints a fleet: what `keystone check` and the flake's lint
// check run, from one JSON evaluation of every host plus a scan of the
// source tree for private key material.
package lint

import (
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/generate"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/target"
)

// Host is one host of the fleet, as nix/lib.nix's fleetInfo writes it.
type Host struct {
	HostName   string   `json:"hostName"`
	HostID     *string  `json:"hostId"`
	Keys       []string `json:"keys"`
	VM         bool     `json:"vm"`
	TargetHost *string  `json:"targetHost"`
	TargetUser string   `json:"targetUser"`
	SSHPort    int      `json:"sshPort"`
	Disks      []string `json:"disks"`
}

// Finding is one problem, about a host or a file.
type Finding struct {
	Where, What string
}

func (f Finding) String() string { return f.Where + ": " + f.What }

// ReadFleet reads the JSON object of hosts by name.
func ReadFleet(r io.Reader) (map[string]Host, error) {
	var fleet map[string]Host
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fleet); err != nil {
		return nil, fmt.Errorf("reading the fleet: %w", err)
	}
	return fleet, nil
}

// Fleet checks every host and what hosts must not share.
func Fleet(fleet map[string]Host) []Finding {
	var out []Finding
	hostNames := map[string][]string{}
	hostIDs := map[string][]string{}
	for _, name := range sortedKeys(fleet) {
		h := fleet[name]
		add := func(format string, args ...any) { out = append(out, Finding{name, fmt.Sprintf(format, args...)}) }
		if err := generate.CheckName(name); err != nil {
			add("host name: %v", err)
		}
		if err := generate.CheckName(h.HostName); err != nil {
			add("networking.hostName: %v", err)
		}
		hostNames[h.HostName] = append(hostNames[h.HostName], name)
		if h.HostID != nil {
			switch id, err := generate.CheckHostID(*h.HostID, name); {
			case err != nil:
				// new-host's hint (leave it out) is wrong here: only new-host derives one.
				add("networking.hostId %q is not 8 hex digits other than 00000000; set one, e.g. `head -c 8 /etc/machine-id`", *h.HostID)
			case id != *h.HostID:
				add("networking.hostId %q has upper-case letters; use %q", *h.HostID, id)
			}
			hostIDs[*h.HostID] = append(hostIDs[*h.HostID], name)
		}
		if len(h.Keys) == 0 {
			add("root has no SSH key: nobody can log in after the install")
		}
		for i, k := range h.Keys {
			if _, err := generate.ParseKey(k); err != nil {
				add("authorized key %d: %v", i+1, err)
			}
		}
		if len(h.Disks) == 0 {
			add("no disko disks: deploy would have nothing to install on")
		}
		seen := map[string]bool{}
		for _, d := range h.Disks {
			if _, err := generate.CheckDisk(d, h.VM); err != nil {
				add("%s", asOption(err, "--disk", "disko disk"))
			}
			if seen[d] {
				add("disko disk %s is named by two disks of the layout; name each disk once", d)
			}
			seen[d] = true
		}
		if h.TargetHost != nil {
			if _, err := target.FromConfig(*h.TargetHost, h.TargetUser, h.SSHPort); err != nil {
				add("%v", err)
			}
		}
	}
	out = append(out, shared("networking.hostName", hostNames)...)
	out = append(out, shared("networking.hostId", hostIDs)...)
	return out
}

// asOption words new-host's error about a flag for the option a fleet
// sets instead, with its hint.
func asOption(err error, flag, option string) string {
	r := strings.NewReplacer(flag, option, "--vm", "keystone.vm = true")
	msg := r.Replace(err.Error())
	if h := hint.Of(err); h != "" {
		msg += "; " + r.Replace(h)
	}
	return msg
}

func shared(what string, by map[string][]string) []Finding {
	var out []Finding
	for _, v := range sortedKeys(by) {
		if hosts := by[v]; len(hosts) > 1 {
			sort.Strings(hosts)
			out = append(out, Finding{strings.Join(hosts, ", "), fmt.Sprintf("%s %q is used by more than one host", what, v)})
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	pemPrivate = regexp.MustCompile(`-----BEGIN ([A-Z0-9 ]+ )?PRIVATE KEY-----[\s\S]*?-----END ([A-Z0-9 ]+ )?PRIVATE KEY-----`)
	ageSecret  = regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]{58}`)
	puttyKey   = regexp.MustCompile(`PuTTY-User-Key-File-\d+: \S+\r?\n(?:[^\n]*\n){0,40}?Private-Lines: \d+\r?\n[A-Za-z0-9+/=\r\n]{16,}`)
)

const (
	maxScan = 4 << 20
	overlap = 64 << 10 // longer than a PEM RSA 16384 key
)

// Secrets walks dir for private key material: PEM private keys that parse
// (or are encrypted, which is still a key), PuTTY keys and age secret keys. Truncated
// or made-up key blocks, as test fixtures hold, do not count.
func Secrets(dir string) ([]Finding, error) {
	var out []Finding
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		pemKey, ageKey, err := scanFile(p)
		if err != nil {
			return err
		}
		if pemKey {
			out = append(out, Finding{rel, "holds a private key; keep only public keys in the repository"})
		}
		if ageKey {
			out = append(out, Finding{rel, "holds an age secret key; keep only public keys in the repository"})
		}
		return nil
	})
	return out, err
}

// scanFile looks for key material in windows of maxScan bytes that
// overlap by more than any key is long, so a big file is read whole
// without being held whole.
func scanFile(path string) (pemKey, ageKey bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	buf := make([]byte, 0, maxScan)
	for {
		n, err := io.ReadFull(f, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		for _, block := range pemPrivate.FindAll(buf, -1) {
			pemKey = pemKey || isKey(block)
		}
		pemKey = pemKey || puttyKey.Match(buf)
		ageKey = ageKey || ageSecret.Match(buf)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return pemKey, ageKey, nil
		}
		if err != nil {
			return pemKey, ageKey, err
		}
		buf = append(buf[:0], buf[len(buf)-overlap:]...)
	}
}

func isKey(block []byte) bool {
	_, err := ssh.ParseRawPrivateKey(block)
	var missing *ssh.PassphraseMissingError
	if err == nil || errors.As(err, &missing) {
		return true
	}
	// PKCS #8 with a passphrase, which x/crypto does not read: a key if
	// it is well-formed DER.
	p, _ := pem.Decode(block)
	var epki struct {
		Algorithm  asn1.RawValue
		Ciphertext []byte
	}
	return p != nil && p.Type == "ENCRYPTED PRIVATE KEY" && isDER(p.Bytes, &epki)
}

// isDER says whether der is exactly one DER value that fits v.
func isDER(der []byte, v any) bool {
	rest, err := asn1.Unmarshal(der, v)
	return err == nil && len(rest) == 0
}

// FromFleet is what the lint reads of hosts the flake evaluated; a host
// whose config could not be read is a finding of its own.
func FromFleet(hosts []fleet.Host) (map[string]Host, []Finding) {
	out := map[string]Host{}
	var findings []Finding
	for _, h := range hosts {
		if !h.Evaluated {
			findings = append(findings, Finding{h.Name, "cannot be evaluated: " + h.Err.Error()})
			continue
		}
		k := h.Config
		out[h.Name] = Host{
			HostName: k.Lint.HostName, HostID: k.Lint.HostID, Keys: k.Lint.Keys, VM: k.VM,
			TargetHost: k.Deploy.TargetHost, TargetUser: k.Deploy.TargetUser, SSHPort: k.Deploy.SSHPort, Disks: k.Deploy.Disks,
		}
	}
	return out, findings
}
