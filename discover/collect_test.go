package discover

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/net/dns/dnsmessage"
)

const (
	fpA = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
	fpB = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
)

var eth0 = link{Name: "eth0", Index: 2, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("fe80::/64")}}

// announce is avahi's answer to a browse for one installer: PTR, SRV, TXT
// and the host's address, all as answers (legacy unicast, avahi's
// server.c generate_response puts the auxiliary records there).
func announce(t testing.TB, instance, host string, ip netip.Addr, txt ...string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true, Authoritative: true})
	b.EnableCompression()
	b.StartAnswers()
	h := func(name string) dnsmessage.ResourceHeader {
		return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Class: dnsmessage.ClassINET, TTL: 10}
	}
	full := instance + "." + Service + "."
	b.PTRResource(h(Service+"."), dnsmessage.PTRResource{PTR: dnsmessage.MustNewName(full)})
	b.SRVResource(h(full), dnsmessage.SRVResource{Port: 22, Target: dnsmessage.MustNewName(host + ".")})
	b.TXTResource(h(full), dnsmessage.TXTResource{TXT: txt})
	if ip.Is4() {
		b.AResource(h(host+"."), dnsmessage.AResource{A: ip.As4()})
	} else {
		b.AAAAResource(h(host+"."), dnsmessage.AAAAResource{AAAA: ip.As16()})
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func good(fp string) []string {
	return []string{"version=0.4.0", "system=x86_64-linux", "firmware=uefi", "fingerprint=" + fp, "disks=2"}
}

type answer struct {
	src string
	msg []byte
}

func TestCollect(t *testing.T) {
	ip := netip.MustParseAddr
	a := announce(t, "installer-aaaa", "nixos", ip("192.0.2.10"), good(fpA)...)
	a6 := announce(t, "installer-aaaa", "nixos", ip("fe80::10"), good(fpA)...)
	b := announce(t, "installer-bbbb", "nixos-2", ip("192.0.2.11"), good(fpB)...)
	for _, tc := range []struct {
		name     string
		answers  []answer
		want     []string // name fingerprint addresses, one a machine
		problems string   // in the problems, all machines' joined
		dropped  string
	}{
		{"two machines", []answer{{"192.0.2.10", a}, {"192.0.2.11", b}},
			[]string{"installer-aaaa " + fpA + " 192.0.2.10", "installer-bbbb " + fpB + " 192.0.2.11"}, "", ""},
		{"one machine on IPv4 and IPv6, answering twice", []answer{{"192.0.2.10", a}, {"fe80::10", a6}, {"192.0.2.10", a}},
			[]string{"installer-aaaa " + fpA + " 192.0.2.10,fe80::10%eth0"}, "", ""},
		{"an answer from off the link", []answer{{"203.0.113.9", a}, {"192.0.2.11", b}},
			[]string{"installer-bbbb " + fpB + " 192.0.2.11"}, "", "answers from 203.0.113.9, which is not on the link of eth0"},
		{"an IPv6 answer from a global address off the link", []answer{{"2001:db8::1", a6}}, nil, "", "not on the link of eth0"},
		{"two machines with one name", []answer{{"192.0.2.10", a}, {"192.0.2.12", announce(t, "installer-aaaa", "nixos", ip("192.0.2.12"), good(fpB)...)}},
			[]string{"installer-aaaa  192.0.2.10,192.0.2.12"}, "conflicting TXT answers (one from 192.0.2.12)", ""},
		{"hostile TXT", []answer{{"192.0.2.10", announce(t, "installer-aaaa", "nixos", ip("192.0.2.10"),
			"fingerprint=SHA256:$(reboot)\x1b[2J", "firmware=uefi;rm -rf ~", "disks=-1", "system=x86_64-linux\n", "version=`id`")}},
			[]string{"installer-aaaa  192.0.2.10"},
			`TXT fingerprint='SHA256:$(reboot)\x1b[2J' is not a SHA256 fingerprint|TXT firmware='uefi;rm -rf ~' is not uefi or bios|` +
				`TXT disks=-1 is not a number of disks|TXT system='x86_64-linux\n' is not a system such as x86_64-linux|TXT version='` + "`id`" + `' is not a version`, ""},
		{"a shell metacharacter in the name", []answer{{"192.0.2.10", announce(t, "x';touch /tmp/p;'", "nixos", ip("192.0.2.10"), good(fpA)...)}},
			[]string{`'x'\'';touch /tmp/p;'\''' ` + fpA + " 192.0.2.10"}, "", ""},
		{"a machine announcing only _ssh._tcp", []answer{{"192.0.2.13", sshOnly(t)}}, nil, "", ""},
		{"malformed", []answer{{"192.0.2.10", a[:len(a)-3]}}, nil, "", "malformed answers from 192.0.2.10 on eth0"},
		{"oversized", []answer{{"192.0.2.10", append(bytes.Clone(a), make([]byte, 9000)...)}}, nil, "", "larger than 9000 bytes"},
		{"no TXT", []answer{{"192.0.2.10", announce(t, "installer-aaaa", "nixos", ip("192.0.2.10"))}},
			[]string{"installer-aaaa  192.0.2.10"}, "no fingerprint announced", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCollector()
			for _, an := range tc.answers {
				c.add(eth0, netip.MustParseAddr(an.src), an.msg)
			}
			var got, problems []string
			for _, m := range c.installers() {
				got = append(got, show(m.Name)+" "+m.Fingerprint+" "+strings.Join(m.Addresses, ","))
				problems = append(problems, m.Problems...)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			all := strings.Join(problems, "|")
			for _, p := range strings.Split(tc.problems, "|") {
				if !strings.Contains(all, p) {
					t.Errorf("problems %q lack %q", all, p)
				}
			}
			if tc.problems == "" && strings.Contains(all, "TXT") {
				t.Errorf("problems: %s", all)
			}
			var dropped []string
			for why := range c.dropped {
				dropped = append(dropped, why)
			}
			if d := strings.Join(dropped, "|"); (tc.dropped == "") != (d == "") || !strings.Contains(d, tc.dropped) {
				t.Errorf("dropped %q, want %q", d, tc.dropped)
			}
		})
	}
}

// sshOnly is what a host answers that announces ssh but not the installer.
func sshOnly(t testing.TB) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true})
	b.StartAnswers()
	b.PTRResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("_ssh._tcp.local."), Class: dnsmessage.ClassINET},
		dnsmessage.PTRResource{PTR: dnsmessage.MustNewName("web1._ssh._tcp.local.")})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// A link that announces without end fills no more than the bounds.
func TestCollectBounds(t *testing.T) {
	c := newCollector()
	for i := range maxInstances + 10 {
		name := "installer-" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		c.add(eth0, netip.MustParseAddr("192.0.2.10"), announce(t, name, "h"+name, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), good(fpA)...))
	}
	if n := len(c.installers()); n != maxInstances {
		t.Errorf("%d installers kept", n)
	}
	if len(c.dropped) == 0 {
		t.Error("nothing said about the ones dropped")
	}
}

func TestShow(t *testing.T) {
	for in, want := range map[string]string{
		"installer-1a2b":    "installer-1a2b",
		"192.0.2.10":        "192.0.2.10",
		"root@[fe80::1%e0]": "'root@[fe80::1%e0]'",
		"a b":               "'a b'",
		"$(reboot)":         "'$(reboot)'",
		"it's":              `'it'\''s'`,
		"\x1b[2J\x00":       `'\x1b[2J\x00'`,
		"é\u202e":           `'\u00e9\u202e'`,
		"":                  "''",
	} {
		if got := show(in); got != want {
			t.Errorf("show(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestMissing(t *testing.T) {
	c := newCollector()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true})
	b.StartAnswers()
	b.PTRResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(Service + "."), Class: dnsmessage.ClassINET},
		dnsmessage.PTRResource{PTR: dnsmessage.MustNewName("i." + Service + ".")})
	msg, _ := b.Finish()
	c.add(eth0, netip.MustParseAddr("192.0.2.10"), msg)
	var got []string
	for _, q := range c.missing() {
		got = append(got, q.Name+" "+q.Type.String())
	}
	if want := "i." + Service + " TypeSRV|i." + Service + " TypeTXT"; strings.Join(got, "|") != want {
		t.Errorf("missing %q, want %q", strings.Join(got, "|"), want)
	}
}

// FuzzCollect: whatever arrives, what is printed holds no control
// character but the newlines between lines.
func FuzzCollect(f *testing.F) {
	f.Add(announce(f, "installer-aaaa", "nixos", netip.MustParseAddr("192.0.2.10"), good(fpA)...))
	f.Add(announce(f, "a\x1b[2J", "nixos", netip.MustParseAddr("fe80::1"), "fingerprint=\x00", "disks=9"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		c := newCollector()
		c.add(eth0, netip.MustParseAddr("192.0.2.10"), msg)
		found := c.installers()
		var out bytes.Buffer
		WriteTable(&out, found)
		for _, r := range out.String() {
			if r != '\n' && (unicode.IsControl(r) || r > unicode.MaxASCII && !unicode.IsPrint(r)) {
				t.Fatalf("printed %q in:\n%s", r, out.String())
			}
		}
	})
}
