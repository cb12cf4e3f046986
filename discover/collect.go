package discover

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/mdns"
)

// link is one interface discover asks on, and what tells its link apart.
type link struct {
	Name     string
	Index    int
	Prefixes []netip.Prefix // its addresses with their networks
}

// onLink says whether src may answer on l: RFC 6762 section 11 wants a
// response to a link-local query from the link itself. An IPv6 link-local
// address is on the link it arrived on; any other address must be in one
// of the interface's networks. Anything else was routed here (or forged
// from afar) and is dropped.
func (l link) onLink(src netip.Addr) bool {
	src = src.Unmap()
	if src.Is6() && src.IsLinkLocalUnicast() {
		return true
	}
	for _, p := range l.Prefixes {
		if p.Contains(src.WithZone("")) {
			return true
		}
	}
	return false
}

// instance is what the answers say of one announced installer.
type instance struct {
	name     string // the instance label, as sent
	srv      *mdns.Record
	txt      *mdns.Record
	links    map[string]bool
	problems []string
}

// What one run keeps at most: a link that floods it with names gets the
// rest dropped (and said), not memory and queries without end.
const (
	maxInstances = 64
	maxAddresses = 1024
)

// collector gathers the records of every answer, checking each answer
// before it is used. It is not safe for concurrent use.
type collector struct {
	instances map[string]*instance    // by lower-case full name
	order     []string                // first seen first
	addrs     map[string][]netip.Addr // by lower-case host name
	nAddrs    int
	dropped   map[string]int // why answers were dropped, and how often
}

func newCollector() *collector {
	return &collector{instances: map[string]*instance{}, addrs: map[string][]netip.Addr{}, dropped: map[string]int{}}
}

// add reads one message that arrived on l from src.
func (c *collector) add(l link, src netip.Addr, msg []byte) {
	if !l.onLink(src) {
		c.dropped[fmt.Sprintf("answers from %s, which is not on the link of %s", src, l.Name)]++
		return
	}
	records, err := mdns.Parse(msg)
	if err != nil {
		if err != mdns.ErrNotResponse { // our own and others' queries
			c.dropped[fmt.Sprintf("malformed answers from %s on %s (%v)", src, l.Name, err)]++
		}
		return
	}
	suffix := "." + Service
	for _, r := range records {
		switch {
		case r.Type == mdns.TypePTR && mdns.SameName(r.Name, Service):
			label, ok := cutSuffixFold(r.Target, suffix)
			if !ok || label == "" {
				continue
			}
			c.instance(r.Target, label, l, src)
		case (r.Type == mdns.TypeSRV || r.Type == mdns.TypeTXT) && hasSuffixFold(r.Name, suffix):
			label, _ := cutSuffixFold(r.Name, suffix)
			if label == "" {
				continue
			}
			in := c.instance(r.Name, label, l, src)
			if in == nil {
				continue
			}
			slot := &in.srv
			if r.Type == mdns.TypeTXT {
				slot = &in.txt
			}
			rec := r
			switch {
			case *slot == nil:
				*slot = &rec
			case !sameRecord(**slot, rec):
				p := fmt.Sprintf("conflicting %s answers (one from %s): two machines announce one name, or one lies", strings.TrimPrefix(r.Type.String(), "Type"), src)
				if !slices.Contains(in.problems, p) {
					in.problems = append(in.problems, p)
				}
			}
		case r.Type == mdns.TypeA || r.Type == mdns.TypeAAAA:
			ip := r.IP
			if ip.Is6() && ip.IsLinkLocalUnicast() {
				ip = ip.WithZone(l.Name) // only reachable through this link
			}
			host := strings.ToLower(r.Name)
			switch {
			case slices.Contains(c.addrs[host], ip):
			case c.nAddrs == maxAddresses:
				c.dropped[fmt.Sprintf("addresses from %s beyond the first %d", src, maxAddresses)]++
			default:
				c.addrs[host] = append(c.addrs[host], ip)
				c.nAddrs++
			}
		}
	}
}

// instance is the one named full, new if need be; nil when there are too
// many already.
func (c *collector) instance(full, label string, l link, src netip.Addr) *instance {
	key := strings.ToLower(full)
	in := c.instances[key]
	if in == nil && len(c.order) == maxInstances {
		c.dropped[fmt.Sprintf("installers from %s beyond the first %d", src, maxInstances)]++
		return nil
	}
	if in == nil {
		in = &instance{name: label, links: map[string]bool{}}
		c.instances[key] = in
		c.order = append(c.order, key)
	}
	in.links[l.Name] = true
	return in
}

// missing lists the questions still open: SRV and TXT of each instance
// without them, A and AAAA of each host without an address.
func (c *collector) missing() []mdns.Question {
	var qs []mdns.Question
	for _, key := range c.order {
		in := c.instances[key]
		if in.srv == nil {
			qs = append(qs, mdns.Question{Name: key, Type: mdns.TypeSRV})
		}
		if in.txt == nil {
			qs = append(qs, mdns.Question{Name: key, Type: mdns.TypeTXT})
		}
		if in.srv != nil && len(c.addrs[strings.ToLower(in.srv.Target)]) == 0 {
			qs = append(qs, mdns.Question{Name: in.srv.Target, Type: mdns.TypeA}, mdns.Question{Name: in.srv.Target, Type: mdns.TypeAAAA})
		}
	}
	return qs
}

// installers is what was found, in the order first seen.
func (c *collector) installers() []Installer {
	var out []Installer
	for _, key := range c.order {
		in := c.instances[key]
		m := Installer{Name: in.name, Problems: slices.Clone(in.problems)}
		for l := range in.links {
			m.Links = append(m.Links, l)
		}
		slices.Sort(m.Links)
		if in.srv == nil {
			m.Problems = append(m.Problems, "no SRV answer: its host name and port are unknown")
		} else {
			m.Host, m.Port = in.srv.Target, int(in.srv.Port)
			addrs := slices.Clone(c.addrs[strings.ToLower(in.srv.Target)])
			slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
			for _, a := range addrs {
				m.Addresses = append(m.Addresses, a.String())
			}
			if len(addrs) == 0 {
				m.Problems = append(m.Problems, "no address answer for "+show(in.srv.Target))
			}
		}
		if in.txt == nil {
			m.Problems = append(m.Problems, "no TXT answer: nothing is known of it")
		} else {
			m.readTXT(in.txt.Text)
		}
		if len(in.problems) > 0 && m.Fingerprint != "" {
			m.Problems = append(m.Problems, "the fingerprint is not used: the answers disagree")
			m.Fingerprint = ""
		}
		out = append(out, m)
	}
	return out
}

// What a TXT value must look like to be shown as it is.
var (
	fingerprintRE = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)
	systemRE      = regexp.MustCompile(`^[a-z0-9_]{1,16}-[a-z0-9_]{1,16}$`)
	versionRE     = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,64}$`)
)

// readTXT takes the keys it knows (RFC 6763 section 6: key=value, the
// first of a key wins, keys without case) and says what is wrong with
// each value it cannot take.
func (m *Installer) readTXT(strs []string) {
	seen := map[string]bool{}
	for _, s := range strs {
		k, v, _ := strings.Cut(s, "=")
		k = strings.ToLower(k)
		if seen[k] {
			continue
		}
		seen[k] = true
		bad := func(what string) {
			m.Problems = append(m.Problems, fmt.Sprintf("TXT %s=%s is not %s", show(k), show(v), what))
		}
		switch k {
		case "fingerprint":
			if fingerprintRE.MatchString(v) {
				m.Fingerprint = v
			} else {
				bad("a SHA256 fingerprint")
			}
		case "firmware":
			if v == "uefi" || v == "bios" {
				m.Firmware = v
			} else {
				bad("uefi or bios")
			}
		case "system":
			if systemRE.MatchString(v) {
				m.System = v
			} else {
				bad("a system such as x86_64-linux")
			}
		case "version":
			if versionRE.MatchString(v) {
				m.Version = v
			} else {
				bad("a version")
			}
		case "disks":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 4096 && strconv.Itoa(n) == v {
				m.Disks = &n
			} else {
				bad("a number of disks")
			}
		}
	}
	if m.Fingerprint == "" && !seen["fingerprint"] {
		m.Problems = append(m.Problems, "no fingerprint announced")
	}
}

func sameRecord(a, b mdns.Record) bool {
	return mdns.SameName(a.Target, b.Target) && a.Port == b.Port && slices.Equal(a.Text, b.Text)
}

func hasSuffixFold(s, suffix string) bool {
	_, ok := cutSuffixFold(s, suffix)
	return ok
}

func cutSuffixFold(s, suffix string) (string, bool) {
	if len(s) < len(suffix) || !strings.EqualFold(s[len(s)-len(suffix):], suffix) {
		return "", false
	}
	return s[:len(s)-len(suffix)], true
}

// show prints a string that came from the network so that it can do no
// harm on a terminal or pasted into a shell: as it is when it holds only
// harmless characters, else single-quoted for a shell, with control
// characters and anything outside printable ASCII escaped as Go does.
func show(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:+/=@%,-") == "" {
		return s
	}
	q := strconv.QuoteToASCII(s)
	q = strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
	return "'" + strings.ReplaceAll(q, "'", `'\''`) + "'"
}
