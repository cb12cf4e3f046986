package verify

import (
	"net"
	"strings"
	"testing"
)

// Judges of what this turn added: sshd's ports, unread chains.
func TestMoreJudges(t *testing.T) {
	out := func(s string) Output { return Output{Stdout: s} }
	sshdT := "port 2222\npermitrootlogin prohibit-password\npasswordauthentication no\nkbdinteractiveauthentication no\n"
	v4 := fixture(t, "iptables-save", "healthy.v4.txt")
	userChain := strings.Replace(v4, "-A nixos-fw -p tcp", "-A nixos-fw -j my-extra\n-A nixos-fw -p tcp", 1)
	userChain = strings.Replace(userChain, ":nixos-fw ", ":my-extra - [0:0]\n:nixos-fw ", 1)
	for _, tc := range []struct {
		name   string
		check  Check
		outs   []Output
		status Status
		says   string
	}{
		{"sshd on another port", sshdCheck, []Output{out(sshdT), out("publickey-only")}, Fail, "sshd listens on port 2222, want 22"},
		{"jump into a user chain", warnUnreadChains(firewallCheck), []Output{out(userChain), out(fixture(t, "iptables-save", "healthy.v6.txt"))}, Warn, "jump to chain my-extra, which this check does not read"},
		{"nixos chains only", warnUnreadChains(firewallCheck), []Output{out(v4), out(fixture(t, "iptables-save", "healthy.v6.txt"))}, Pass, "iptables opens"},
	} {
		status, ev := tc.check.Judge(nixosExpect(), tc.outs)
		if status != tc.status || !strings.Contains(ev, tc.says) {
			t.Errorf("%s: %s %q, want %s with %q", tc.name, status, ev, tc.status, tc.says)
		}
	}
}

func TestEvidenceIsCapped(t *testing.T) {
	long := strings.Repeat("failed-unit.service, ", 1000)
	got := capEvidence(long)
	if len(got) > maxEvidence+64 || !strings.Contains(got, "cut at") {
		t.Errorf("%d bytes: %q…", len(got), got[len(got)-40:])
	}
	if capEvidence("short") != "short" {
		t.Error("short evidence changed")
	}
}

func TestMDNSSkipWording(t *testing.T) {
	_, ev := mdnsCheck.Judge(nixosExpect(), []Output{{Stdout: fixture(t, "avahi-resolve", "ok.stdout")}, {Err: errNotOnLink}})
	if !strings.Contains(ev, "the verifier is not on the host's link") || strings.Count(ev, "verifier") != 1 {
		t.Errorf("evidence %q", ev)
	}
}

func TestMDNSAAAA(t *testing.T) {
	q := mdnsQuery(7, "web1.local", typeAAAA)
	resp := append([]byte(nil), q...)
	resp[2], resp[7] = 0x84, 1
	resp = append(resp, 0xC0, 12, 0, 28, 0, 1, 0, 0, 0, 120, 0, 16)
	resp = append(resp, net.ParseIP("fd00:254::2")...)
	if ips := mdnsAnswers(resp, "web1.local", typeAAAA); len(ips) != 1 || ips[0].String() != "fd00:254::2" {
		t.Errorf("answers %v", ips)
	}
	if ips := mdnsAnswers(resp, "web1.local", typeA); len(ips) != 0 {
		t.Errorf("an AAAA record was read as A: %v", ips)
	}
}

func TestIPv6Judge(t *testing.T) {
	out := func(s string) Output { return Output{Stdout: s} }
	linkOnly := `[{"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.10","scope":"global"},{"family":"inet6","local":"fe80::1","scope":"link"}]},{"ifname":"lo","addr_info":[{"family":"inet6","local":"::1","scope":"host"}]}]`
	global := `[{"ifname":"eth0","addr_info":[{"family":"inet6","local":"2001:db8::10","scope":"global"}]}]`
	nft := func(e *Expectations) { e.Firewall.Backend = "nftables" }
	for _, tc := range []struct {
		name   string
		edit   func(e *Expectations)
		outs   []Output
		status Status
		says   string
	}{
		{"link-local only", nil, []Output{out(linkOnly), out("")}, Pass, "no IPv6 address other than link-local"},
		{"empty ip6tables", nil, []Output{out(global), out("")}, Fail, "2001:db8::10, and ip6tables has no nixos-fw rules: IPv6 is not firewalled"},
		{"ip6tables right", nil, []Output{out(global), out(fixture(t, "iptables-save", "healthy.v6.txt"))}, Pass, "ip6tables opens tcp 22 udp 5353"},
		{"ip6tables extra", nil, []Output{out(global), out(fixture(t, "iptables-save", "broken.v6.txt"))}, Fail, "opens"},
		{"inet table", nft, []Output{out(global), out(fixture(t, "nft", "healthy.json"))}, Pass, "inet nixos-fw covers IPv6"},
		{"no inet table", nft, []Output{out(global), out(`{"nftables": [{"metainfo": {}}]}`)}, Fail, "no table inet nixos-fw: IPv6 is not firewalled"},
	} {
		e := nixosExpect()
		if tc.edit != nil {
			tc.edit(e)
		}
		status, ev := ipv6Check.Judge(e, tc.outs)
		if status != tc.status || !strings.Contains(ev, tc.says) {
			t.Errorf("%s: %s %q, want %s with %q", tc.name, status, ev, tc.status, tc.says)
		}
	}
}
