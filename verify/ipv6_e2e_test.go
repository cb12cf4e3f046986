package verify_test

import (
	"net"
	"testing"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// A host reached at an IPv6 address on one of the verifier's links is on
// link (mDNS asks it over IPv6); a routed address is not.
func TestOnLinkIPv6(t *testing.T) {
	h := testhost.SSHD(t, testhost.SSHDOptions{IPv6: true})
	if _, err := verify.OnLink6(net.ParseIP(h.Addr6), ""); err != nil {
		t.Errorf("%s: %v, want on link", h.Addr6, err)
	}
	if _, err := verify.OnLink6(net.ParseIP("2001:db8::1"), ""); err == nil {
		t.Error("2001:db8::1 is on link")
	}
}
