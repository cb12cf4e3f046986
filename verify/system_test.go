package verify

import (
	"strings"
	"testing"
)

func TestSystemJudge(t *testing.T) {
	a := "/nix/store/" + strings.Repeat("a", 32) + "-nixos-system-web1-25.11"
	b := "/nix/store/" + strings.Repeat("b", 32) + "-nixos-system-web1-25.11"
	host := a + "\n/nix/var/nix/profiles/system-41-link 1764590400\n"
	for _, tc := range []struct {
		name, want, out string
		status          Status
		says            string
	}{
		{"not asked", "", host, Skip, "not asked (--drift)"},
		{"same", a, host, Pass, "running " + a + " (generation 41 of 2025-12-01 12:00 UTC)"},
		{"drift", b, host, Fail, "running " + a + " (generation 41 of 2025-12-01 12:00 UTC), the flake builds " + b},
		{"not a generation", b, a + "\n", Fail, "running " + a + ", the flake builds"},
		{"bad toplevel", "/tmp/x", host, Fail, "is not a store path"},
	} {
		status, ev := systemCheck.Judge(nil, []Output{{Stdout: tc.out}, {Stdout: tc.want}})
		if status != tc.status || !strings.Contains(ev, tc.says) {
			t.Errorf("%s: %s %q, want %s with %q", tc.name, status, ev, tc.status, tc.says)
		}
	}
	status, ev := systemCheck.Judge(nil, []Output{{Stderr: "no /run/current-system: not a NixOS host", Exit: 3}, {Stdout: a}})
	if status != Fail || !strings.Contains(ev, "not a NixOS host") {
		t.Errorf("no current system: %s %q", status, ev)
	}
}
