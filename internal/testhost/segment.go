package testhost

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// Segment is one Ethernet segment of its own: a bridge in a network
// namespace made for it, which test hosts join with a second interface
// (eth1) and a client namespace joins with its only one. Multicast sent on
// it (mDNS) reaches the hosts and the client and nothing else: none of
// the machine's own interfaces is on it. Segments are islands, so each
// uses the same subnet, SegmentNet.
type Segment struct {
	NS         string // the bridge's namespace
	Client     string // the client's namespace: run commands there with Command
	ClientAddr string // the client's IPv4 address on the segment

	mu   sync.Mutex
	next int // the last host number given
}

// SegmentNet is every segment's IPv4 subnet; the client is .1, hosts
// follow in the order they join.
const SegmentNet = "10.214.0.0/24"

// NewSegment makes the bridge and the client namespace; both go when the
// test ends.
func NewSegment(t testing.TB) *Segment {
	t.Helper()
	RequireRoot(t)
	// A Host without sshd stands for each namespace, for its record (so a
	// killed test's segment is swept as its hosts are) and its clean-up.
	ns := func() *Host {
		h := &Host{t: t, Name: "segment", dir: t.TempDir()}
		sweepStale(t)
		h.NS = "ks-" + randomID()
		h.veth = h.NS + "-h" // there is none; the sweep looks for it anyway
		h.record(t, fmt.Sprintf("owner %d %s\n", os.Getpid(), startTime(os.Getpid())))
		t.Cleanup(h.Close)
		h.onClose(func() { os.Remove(filepath.Join(recordDir, h.NS)) })
		if err := cmdRun("ip", "netns", "add", h.NS); err != nil {
			t.Fatal(err)
		}
		h.onClose(func() { logErr(t, cmdRun("ip", "netns", "del", h.NS)) })
		// Addresses are usable at once: no duplicate address detection on
		// an island the test laid out itself.
		for _, s := range [][]string{
			{"ip", "-n", h.NS, "link", "set", "lo", "up"},
			noDAD(h.NS, "default"),
		} {
			if err := cmdRun(s[0], s[1:]...); err != nil {
				t.Fatal(err)
			}
		}
		return h
	}
	bridge, client := ns(), ns()
	s := &Segment{NS: bridge.NS, Client: client.NS, ClientAddr: "10.214.0.1"}
	for _, c := range [][]string{
		{"ip", "-n", s.NS, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", s.NS, "link", "set", "br0", "up"},
		{"ip", "link", "add", "c0", "netns", s.NS, "type", "veth", "peer", "name", "eth0", "netns", s.Client},
		{"ip", "-n", s.NS, "link", "set", "c0", "master", "br0", "up"},
		{"ip", "-n", s.Client, "addr", "add", s.ClientAddr + "/24", "dev", "eth0"},
		{"ip", "-n", s.Client, "link", "set", "eth0", "up"},
	} {
		if err := cmdRun(c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Join gives h a second interface, eth1, on the segment and returns its
// address there. A booted host's daemons (avahi, sshd on any address)
// take it up as it comes.
func (s *Segment) Join(t testing.TB, h *Host) string {
	t.Helper()
	s.mu.Lock()
	s.next++
	n := s.next
	s.mu.Unlock()
	port := "h" + strconv.Itoa(n)
	addr := "10.214.0." + strconv.Itoa(n+1)
	for _, c := range [][]string{
		{"ip", "link", "add", port, "netns", s.NS, "type", "veth", "peer", "name", "eth1", "netns", h.NS},
		noDAD(h.NS, "eth1"),
		{"ip", "-n", s.NS, "link", "set", port, "master", "br0", "up"},
		{"ip", "-n", h.NS, "addr", "add", addr + "/24", "dev", "eth1"},
		{"ip", "-n", h.NS, "link", "set", "eth1", "up"},
	} {
		if err := cmdRun(c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	return addr
}

// Command runs name with args in the client's namespace.
func (s *Segment) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", s.Client, name}, args...)...)
}

// noDAD turns duplicate address detection off for iface in ns (before it
// is up), so its IPv6 link-local address is usable at once.
func noDAD(ns, iface string) []string {
	return []string{"ip", "netns", "exec", ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/" + iface + "/accept_dad"}
}
