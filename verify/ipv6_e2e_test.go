package verify_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

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

// nixosIPv4Only is NixOS's iptables firewall (firewall-iptables.nix) for
// IPv4 alone: ip6tables is left empty.
var nixosIPv4Only = []string{
	"nft flush ruleset",
	"iptables -N nixos-fw-accept", "iptables -A nixos-fw-accept -j ACCEPT",
	"iptables -N nixos-fw-refuse", "iptables -A nixos-fw-refuse -j DROP",
	"iptables -N nixos-fw",
	"iptables -A nixos-fw -i lo -j nixos-fw-accept",
	"iptables -A nixos-fw -m conntrack --ctstate ESTABLISHED,RELATED -j nixos-fw-accept",
	"iptables -A nixos-fw -p tcp --dport 22 -j nixos-fw-accept",
	"iptables -A nixos-fw -p udp --dport 5353 -j nixos-fw-accept",
	"iptables -A nixos-fw -j nixos-fw-refuse",
	"iptables -A INPUT -j nixos-fw",
}

// A host whose IPv4 firewall is right and whose IPv6 side is open FAILs,
// naming IPv6, at whichever address it is verified.
func TestOpenIPv6SideFails(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, IPv6: true})
	for _, cmd := range nixosIPv4Only {
		if _, err := h.Run(t, strings.Fields(cmd)...); err != nil {
			t.Fatal(err)
		}
	}
	h.ListenAny(t, 873)
	e := sshdExpect(h.Name)
	e.Firewall.Backend = "iptables"
	for _, addr := range []string{h.Address(), h.Address6()} {
		t.Run(addr, func(t *testing.T) {
			o := options(h, key)
			o.SSH.Addr = addr
			o.Checks = only("firewall", "ipv6", "exposure")
			r := verify.Run(context.Background(), e, o)
			logReport(t, r)
			got := map[string]verify.Result{}
			for _, res := range r.Results {
				got[res.Check] = res
			}
			if got["firewall"].Status != verify.Pass {
				t.Errorf("firewall %s: the IPv4 rules are right", got["firewall"].Status)
			}
			if res := got["ipv6"]; res.Status != verify.Fail || !strings.Contains(res.Evidence, "IPv6 is not firewalled") || !strings.Contains(res.Evidence, h.Addr6) {
				t.Errorf("ipv6 %s %q, want FAIL naming IPv6 and %s", res.Status, res.Evidence, h.Addr6)
			}
			if res := got["exposure"]; res.Status != verify.Fail || !strings.Contains(res.Evidence, "873 at "+h.Addr6) {
				t.Errorf("exposure %s %q, want FAIL with 873 open at %s", res.Status, res.Evidence, h.Addr6)
			}
			if r.ExitCode() != verify.ExitFail {
				t.Errorf("exit %d, want 1", r.ExitCode())
			}
		})
	}
}

// A host verified at an IPv6 address on the verifier's link is asked over
// IPv6 multicast, not skipped as off-link.
func TestMDNSAtAnIPv6Address(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-mdns6", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, IPv6: true})
	o := options(h, key)
	o.SSH.Addr = h.Address6()
	o.Wait = time.Minute
	o.Checks = only("mdns")
	r := verify.Run(context.Background(), debianExpect(h.Name), o)
	logReport(t, r)
	res := r.Results[len(r.Results)-1]
	if res.Check != "mdns" || res.Status != verify.Pass || !strings.Contains(res.Evidence, h.Addr6) {
		t.Errorf("%s %s %q, want PASS resolving to %s", res.Check, res.Status, res.Evidence, h.Addr6)
	}
}
