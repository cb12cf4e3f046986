package testhost

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// testNet6 holds every test host's IPv6 subnet; a blackhole route for it
// keeps traffic to a host whose veth is gone on this machine.
const testNet6 = "fd00:254::/32"

// addIPv6 gives the host's veth pair a /64 from testNet6, the host ::2
// and the root namespace ::1, without duplicate address detection, so the
// address works at once. The caller holds the subnet lock.
func (h *Host) addIPv6(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("ip", "-6", "route", "add", "blackhole", testNet6).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("File exists")) {
		t.Fatalf("ip -6 route add blackhole %s: %v: %s", testNet6, err, out)
	}
	used, _ := exec.Command("ip", "-6", "-o", "addr", "show").Output()
	var prefix string
	for range 100 {
		b := make([]byte, 4)
		rand.Read(b)
		prefix = fmt.Sprintf("fd00:254:%x:%x", uint16(b[0])<<8|uint16(b[1]), uint16(b[2])<<8|uint16(b[3]))
		if !bytes.Contains(used, []byte(" "+prefix+"::1/")) {
			break
		}
	}
	h.Addr6 = prefix + "::2"
	for _, s := range [][]string{
		{"ip", "addr", "add", prefix + "::1/64", "dev", h.veth, "nodad"},
		{"ip", "-n", h.NS, "addr", "add", h.Addr6 + "/64", "dev", "eth0", "nodad"},
		{"ip", "-n", h.NS, "-6", "route", "add", "default", "via", prefix + "::1"},
	} {
		if err := cmdRun(s[0], s[1:]...); err != nil {
			t.Fatal(err)
		}
	}
}

// ListenAny is Listen on both families: a service bound to [::], as most
// are, reached at the IPv4 and the IPv6 address alike.
func (h *Host) ListenAny(t testing.TB, port int) {
	t.Helper()
	h.listen(t, "tcp", port)
}

// Address6 is Addr6:Port.
func (h *Host) Address6() string {
	return "[" + h.Addr6 + "]:" + strings.TrimPrefix(h.Address(), h.Addr+":")
}
