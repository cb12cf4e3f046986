package verify_test

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// The system check on a host with a /run/current-system link and a
// system profile generation, as NixOS has.
func TestSystemDrift(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-drift", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	a := "/nix/store/" + strings.Repeat("a", 32) + "-nixos-system-ks-drift-25.11"
	b := "/nix/store/" + strings.Repeat("b", 32) + "-nixos-system-ks-drift-25.11"
	if _, err := h.Run(t, "sh", "-c", "mkdir -p "+a+" /nix/var/nix/profiles && ln -s "+a+" /nix/var/nix/profiles/system-7-link && "+
		"touch -h -d @1764590400 /nix/var/nix/profiles/system-7-link && ln -s system-7-link /nix/var/nix/profiles/system && ln -sfn "+a+" /run/current-system"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		system string
		status verify.Status
		says   string
	}{
		{"", verify.Skip, "not asked (--drift)"},
		{a, verify.Pass, "running " + a + " (generation 7 of 2025-12-01 12:00 UTC)"},
		{b, verify.Fail, "running " + a + " (generation 7 of 2025-12-01 12:00 UTC), the flake builds " + b},
	} {
		o := options(h, key)
		o.Checks = only("system")
		o.System = tc.system
		r := verify.Run(context.Background(), debianExpect(h.Name), o)
		logReport(t, r)
		res := r.Results[len(r.Results)-1]
		if res.Check != "system" || res.Status != tc.status || !strings.Contains(res.Evidence, tc.says) {
			t.Errorf("System %q: %s %s %q, want %s with %q", tc.system, res.Check, res.Status, res.Evidence, tc.status, tc.says)
		}
	}
}
