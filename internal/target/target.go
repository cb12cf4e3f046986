// Package target parses the [USER@]HOST[:PORT] form every command takes for
// --target.
package target

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/hint"
)

// Target is where a host is reached over SSH.
type Target struct {
	User string
	Host string // DNS name or IP literal, without brackets
	Port int
}

const form = "--target takes [USER@]HOST[:PORT], e.g. root@192.0.2.10, admin@web1.example.com:2222 or [2001:db8::1]:22"

var (
	user    = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	dnsName = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	dotted  = regexp.MustCompile(`^[0-9.]+$`)
)

// Parse reads s; the user defaults to root and the port to 22.
func Parse(s string) (*Target, error) {
	t := &Target{User: "root", Port: 22}
	if strings.Contains(s, "://") {
		return nil, hint.Errorf(form, "--target %q is a URL", s)
	}
	hostport := s
	if u, rest, ok := strings.Cut(s, "@"); ok {
		if !user.MatchString(u) {
			return nil, hint.Errorf("a user name is lower-case letters, digits, '_' and '-'", "--target %q: %q is not a user name", s, u)
		}
		t.User, hostport = u, rest
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return nil, hint.Errorf(form, "--target %q: %s", s, err.Error())
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
			return nil, hint.Errorf("a port is a number from 1 to 65535", "--target %q: port %q is not valid", s, port)
		}
		t.Port = n
	}
	if err := checkHost(host); err != nil {
		return nil, hint.Errorf(form, "--target %q: %s", s, err.Error())
	}
	t.Host = host
	return t, nil
}

// FromConfig checks what keystone.deploy.{targetHost,targetUser,sshPort}
// say, which no --target parser has seen.
func FromConfig(host, u string, port int) (*Target, error) {
	switch {
	case !user.MatchString(u):
		return nil, fmt.Errorf("keystone.deploy.targetUser %q is not a user name", u)
	case port < 1 || port > 65535:
		return nil, fmt.Errorf("keystone.deploy.sshPort %d is not a port from 1 to 65535", port)
	}
	if _, err := netip.ParseAddr(host); err != nil && strings.Contains(host, ":") {
		return nil, fmt.Errorf("keystone.deploy.targetHost %q is not a DNS name or IP address (the port is sshPort's)", host)
	}
	if err := checkHost(host); err != nil {
		return nil, fmt.Errorf("keystone.deploy.targetHost %q: %w", host, err)
	}
	return &Target{User: u, Host: host, Port: port}, nil
}

type parseError string

func (e parseError) Error() string { return string(e) }

func splitHostPort(s string) (host, port string, err error) {
	if rest, ok := strings.CutPrefix(s, "["); ok {
		host, after, ok := strings.Cut(rest, "]")
		if !ok {
			return "", "", parseError("missing ']'")
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", "", parseError("only an IPv6 address goes in brackets")
		}
		if after == "" {
			return host, "", nil
		}
		port, ok := strings.CutPrefix(after, ":")
		if !ok || port == "" {
			return "", "", parseError("expected :PORT after ']'")
		}
		return host, port, nil
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", nil
	case 1:
		host, port, _ := strings.Cut(s, ":")
		if port == "" {
			return "", "", parseError("empty port after ':'")
		}
		return host, port, nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
		return s, "", nil
	}
	return "", "", parseError("one port at most, and an IPv6 address with a port goes in brackets")
}

// zone is an interface name, as in fe80::1%eth0.
var zone = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

func checkHost(h string) error {
	switch {
	case h == "":
		return parseError("the host is missing")
	case strings.Contains(h, ":"):
		// An IPv6 address, parsed by splitHostPort; netip takes any zone.
		a, _ := netip.ParseAddr(h)
		a = a.Unmap() // ::ffff:224.0.0.1 is 224.0.0.1
		if z := a.Zone(); z != "" && (!zone.MatchString(z) || !(a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast())) {
			return parseError("only a link-local address takes a zone, and a zone is an interface name such as %eth0")
		}
		if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return parseError("host " + strconv.Quote(h) + " is not one host's address")
		}
		return nil
	case dotted.MatchString(h):
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is4() {
			return parseError("host " + strconv.Quote(h) + " is not an IPv4 address")
		}
		if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return parseError("host " + strconv.Quote(h) + " is not one host's address")
		}
		return nil
	case len(h) > 253 || !dnsName.MatchString(h):
		return parseError("host " + strconv.Quote(h) + " is not a DNS name or IP address")
	}
	return nil
}

// Addr is host:port for dialing.
func (t *Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// String is the [USER@]HOST[:PORT] form, with the port only when not 22.
func (t *Target) String() string {
	h := t.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if t.Port != 22 {
		h += ":" + strconv.Itoa(t.Port)
	}
	return t.User + "@" + h
}
