package verify

import (
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
