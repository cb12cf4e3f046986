package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// CryptStatus is what `cryptsetup status NAME` says of a dm-crypt mapping.
type CryptStatus struct {
	Name   string
	Active bool   // "is active" or "is active and is in use"
	InUse  bool   // "is active and is in use": something holds it open (a mounted file system)
	Type   string // "LUKS2", "LUKS1", "PLAIN", …
	Cipher string // "aes-xts-plain64"
	// KeyBits is "keysize: 512 bits" (cryptsetup < 2.7) or
	// "keysize: 512 [bits]" (later).
	KeyBits int
	Device  string // the backing device, "/dev/vda2"
	Mode    string // "read/write", "readonly", "read/write (suspended)"
}

// ParseCryptsetupStatus reads `cryptsetup status NAME` (src/cryptsetup.c,
// action_status): a first line "/dev/mapper/NAME is active[ and is in
// use]." or "… is inactive." (cryptsetup then exits 4), and indented
// "key: value" lines.
func ParseCryptsetupStatus(name, out string) (CryptStatus, error) {
	st := CryptStatus{Name: name}
	seen := false
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		t := strings.TrimSpace(line)
		if !seen {
			subject, state, ok := cutStatusLine(t)
			if !ok {
				continue
			}
			if subject != name && subject != "/dev/mapper/"+name && !strings.HasSuffix(subject, "/"+name) {
				return st, fmt.Errorf("status is for %s, not %s", subject, name)
			}
			seen = true
			st.Active = state != "inactive"
			st.InUse = state == "active and is in use"
			continue
		}
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "type":
			st.Type = v
		case "cipher":
			st.Cipher = v
		case "keysize":
			n, _, _ := strings.Cut(v, " ")
			st.KeyBits, _ = strconv.Atoi(n)
		case "device":
			st.Device = v
		case "mode":
			st.Mode = v
		}
	}
	if !seen {
		return st, errors.New("no \"is active\" or \"is inactive\" line")
	}
	return st, nil
}

// cutStatusLine splits "/dev/mapper/x is active and is in use." into its
// subject and state.
func cutStatusLine(t string) (subject, state string, ok bool) {
	t = strings.TrimSuffix(t, ".")
	for _, s := range []string{"active and is in use", "active", "inactive"} {
		if sub, found := strings.CutSuffix(t, " is "+s); found {
			return sub, s, true
		}
	}
	return "", "", false
}

// Mount is one file system from findmnt.
type Mount struct{ Target, Source, FSType string }

// ParseFindmntJSON reads `findmnt -J -o TARGET,SOURCE,FSTYPE [TARGET]`,
// flattening the tree (its "children") in findmnt's order. findmnt prints
// nothing (and exits 1) when TARGET is not a mount point: empty output is
// no mounts, not an error.
func ParseFindmntJSON(out []byte) ([]Mount, error) {
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil, nil
	}
	type fs struct {
		Target, Source, FSType string
		Children               []fs
	}
	var doc struct {
		Filesystems *[]fs `json:"filesystems"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("not findmnt JSON: %v", err)
	}
	if doc.Filesystems == nil {
		return nil, errors.New("not findmnt JSON: no \"filesystems\" list")
	}
	var mounts []Mount
	var walk func([]fs)
	walk = func(list []fs) {
		for _, f := range list {
			mounts = append(mounts, Mount{Target: f.Target, Source: f.Source, FSType: f.FSType})
			walk(f.Children)
		}
	}
	walk(*doc.Filesystems)
	return mounts, nil
}

// Usage is how full one mounted file system is.
type Usage struct {
	Target  string
	Percent int
}

// ParseDf reads `df -P [-B1] [MOUNT…]` (the mount point is everything
// after the Capacity column, spaces and all) or `df
// --output=target,pcent`. A file system whose use df prints as "-" (no
// size) is left out.
func ParseDf(out string) ([]Usage, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return nil, errors.New("empty df output")
	}
	header := strings.Fields(lines[0])
	targetFirst := false
	switch {
	case len(header) >= 6 && header[0] == "Filesystem":
	case len(header) == 3 && header[0] == "Mounted" && header[1] == "on":
		targetFirst = true
	default:
		return nil, fmt.Errorf("unknown df header %q: want df -P or df --output=target,pcent", lines[0])
	}
	var us []Usage
	for i, line := range lines[1:] {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		var target, pct string
		if targetFirst {
			t := strings.TrimRight(line, " ")
			j := strings.LastIndexAny(t, " \t")
			if j < 0 {
				return nil, fmt.Errorf("line %d: too few columns: %q", i+2, line)
			}
			target, pct = strings.TrimSpace(t[:j]), t[j+1:]
		} else {
			rest := line
			for k := 0; k < 4; k++ { // Filesystem, size, used, available
				rest = strings.TrimLeft(rest, " \t")
				j := strings.IndexAny(rest, " \t")
				if j < 0 {
					return nil, fmt.Errorf("line %d: too few columns: %q", i+2, line)
				}
				rest = rest[j:]
			}
			rest = strings.TrimLeft(rest, " \t")
			var ok bool
			pct, target, ok = strings.Cut(rest, " ")
			if !ok {
				return nil, fmt.Errorf("line %d: too few columns: %q", i+2, line)
			}
			target = strings.TrimSpace(target)
		}
		if pct == "-" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(pct, "%"))
		if err != nil || !strings.HasSuffix(pct, "%") {
			return nil, fmt.Errorf("line %d: bad use %q", i+2, pct)
		}
		us = append(us, Usage{Target: target, Percent: n})
	}
	return us, nil
}

// ParseOSRelease reads /etc/os-release (os-release(5)): KEY=VALUE lines,
// values optionally in double or single quotes, with \" \\ \$ \` escapes
// inside double quotes. Comments and blank lines are skipped. NixOS has
// ID=nixos; its installer adds VARIANT_ID=installer.
func ParseOSRelease(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		switch {
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			var b strings.Builder
			in := v[1 : len(v)-1]
			for i := 0; i < len(in); i++ {
				if in[i] == '\\' && i+1 < len(in) && strings.IndexByte("\"\\$`", in[i+1]) >= 0 {
					i++
				}
				b.WriteByte(in[i])
			}
			v = b.String()
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = v[1 : len(v)-1]
		}
		m[k] = v
	}
	return m
}

// ParseAvahiResolve reads the stdout of `avahi-resolve -4 -n NAME.local`,
// which exits 0 even when the name does not resolve (then it prints
// "Failed to resolve host name 'NAME.local': Timeout reached" on stderr and
// nothing on stdout). Success is a "NAME.local<TAB>ADDRESS" line; addr is
// that address.
func ParseAvahiResolve(out string) (addr string, ok bool) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(line, "Failed") {
			continue
		}
		if net.ParseIP(f[1]) != nil {
			return f[1], true
		}
	}
	return "", false
}
