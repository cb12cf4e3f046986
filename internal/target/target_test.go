package target

import (
	"strings"
	"testing"

	"github.com/keystone-nix/keystone/internal/hint"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in             string
		user, host     string
		port           int
		str, msg, hint string
	}{
		{in: "192.0.2.10", user: "root", host: "192.0.2.10", port: 22, str: "root@192.0.2.10"},
		{in: "admin@web1.example.com:2222", user: "admin", host: "web1.example.com", port: 2222, str: "admin@web1.example.com:2222"},
		{in: "web1", user: "root", host: "web1", port: 22},
		{in: "web1.local", user: "root", host: "web1.local", port: 22},
		{in: "[2001:db8::1]:2222", user: "root", host: "2001:db8::1", port: 2222, str: "root@[2001:db8::1]:2222"},
		{in: "[2001:db8::1]", user: "root", host: "2001:db8::1", port: 22},
		{in: "nixos@2001:db8::1", user: "nixos", host: "2001:db8::1", port: 22},
		{in: "fe80::1%eth0", user: "root", host: "fe80::1%eth0", port: 22},
		{in: "[fe80::1%enp1s0]:2222", user: "root", host: "fe80::1%enp1s0", port: 2222},
		{in: "fe80::1%\x1b[31mX", msg: "a zone is an interface name"},
		{in: "fe80::1%a b", msg: "a zone is an interface name"},
		{in: "2001:db8::1%eth0", msg: "only a link-local address takes a zone"},
		{in: "0.0.0.0", msg: "is not one host's address"},
		{in: "255.255.255.255", msg: "is not one host's address"},
		{in: "224.0.0.1", msg: "is not one host's address"},
		{in: "ff02::1", msg: "is not one host's address"},
		{in: "ssh://root@web1", msg: "is a URL", hint: "[USER@]HOST[:PORT]"},
		{in: "web1:22:22", msg: "one port at most"},
		{in: "[::]:22", msg: "is not one host's address"},
		{in: "_ci@h", user: "_ci", host: "h", port: 22},
		{in: "", msg: "the host is missing"},
		{in: "root@", msg: "the host is missing"},
		{in: "a@b@c", msg: `"b@c" is not a DNS name`},
		{in: "Root@h", msg: `"Root" is not a user name`, hint: "lower-case"},
		{in: "h:0", msg: `port "0" is not valid`, hint: "1 to 65535"},
		{in: "h:65536", msg: `port "65536" is not valid`},
		{in: "h:022", msg: `port "022" is not valid`},
		{in: "h:+22", msg: `port "+22" is not valid`},
		{in: "h:ssh", msg: `port "ssh" is not valid`},
		{in: "h:", msg: "empty port"},
		{in: "2001:db8::1:22", user: "root", host: "2001:db8::1:22", port: 22},
		{in: "2001:db8::g:22", msg: "IPv6 address with a port goes in brackets", hint: "[2001:db8::1]:22"},
		{in: "[2001:db8::1", msg: "missing ']'"},
		{in: "[web1]:22", msg: "only an IPv6 address goes in brackets"},
		{in: "[::1]22", msg: "expected :PORT"},
		{in: "999.1.1.1", msg: "is not an IPv4 address"},
		{in: "1.2.3", msg: "is not an IPv4 address"},
		{in: "-web.example", msg: "is not a DNS name"},
		{in: "web_1", msg: "is not a DNS name"},
		{in: `h"; x="`, msg: "is not a DNS name"},
		{in: "h ost", msg: "is not a DNS name"},
		{in: strings.Repeat("a.", 127) + "a", msg: "is not a DNS name"},
	} {
		got, err := Parse(tc.in)
		if tc.msg != "" {
			if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(hint.Of(err), tc.hint) {
				t.Errorf("Parse(%q): error %v, hint %q; want %q, hint with %q", tc.in, err, hint.Of(err), tc.msg, tc.hint)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got.User != tc.user || got.Host != tc.host || got.Port != tc.port {
			t.Errorf("Parse(%q) = %+v, want %s %s %d", tc.in, got, tc.user, tc.host, tc.port)
		}
		if tc.str != "" && got.String() != tc.str {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got.String(), tc.str)
		}
	}
}

func TestFromConfig(t *testing.T) {
	for _, tc := range []struct {
		host, user string
		port       int
		msg        string // "" when accepted
	}{
		{"192.0.2.10", "root", 22, ""},
		{"2001:db8::1", "root", 2222, ""},
		{"fe80::1%eth0", "root", 22, ""},
		{"fe80::1%\x1b", "root", 22, "a zone is an interface name"},
		{"0.0.0.0", "root", 22, `targetHost "0.0.0.0": host "0.0.0.0" is not one host's address`},
		{"224.0.0.1", "root", 22, "is not one host's address"},
		{"::ffff:255.255.255.255", "root", 22, "is not one host's address"},
		{"web1.example.com", "admin", 22, ""},
		{"", "root", 22, `targetHost "": the host is missing`},
		{"127.0.0.1:2222", "root", 22, `targetHost "127.0.0.1:2222" is not`},
		{"[::1]", "root", 22, `is not a DNS name`},
		{"-oProxyCommand=x", "root", 22, "is not a DNS name"},
		{"web1", "", 22, `targetUser "" is not`},
		{"web1", "a b", 22, `targetUser "a b" is not`},
		{"web1", "root", 0, "sshPort 0 is not"},
		{"web1", "root", 65536, "sshPort 65536 is not"},
	} {
		got, err := FromConfig(tc.host, tc.user, tc.port)
		switch {
		case tc.msg == "" && (err != nil || got.Host != tc.host || got.User != tc.user || got.Port != tc.port):
			t.Errorf("FromConfig(%q, %q, %d) = %+v, %v", tc.host, tc.user, tc.port, got, err)
		case tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg)):
			t.Errorf("FromConfig(%q, %q, %d): error %v, want %q", tc.host, tc.user, tc.port, err, tc.msg)
		}
	}
}
