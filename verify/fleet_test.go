package verify_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/target"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// TestFleet verifies several hosts without the CLI: each on its own
// connection, and the ones fleet could not work out, or whose expectations
// do not hold up, reported as not checked while the rest are verified.
func TestFleet(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	host := func(name, hostname string) fleet.Host {
		h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
		if hostname == "" {
			hostname = h.Name
		}
		return fleet.Host{Name: name, Target: target.Target{User: "root", Host: h.Addr, Port: h.Port},
			Expectations: []byte(`{"hostname": "` + hostname + `"}`), Identities: []string{key},
			HostKeys: sshx.HostKeys{Pinned: h.HostKey, PinnedFrom: "test"}}
	}
	good, wrong := host("good", ""), host("wrong", "elsewhere")
	broken := fleet.Host{Name: "broken", Err: errors.New("nix eval failed: boom")}
	bad := host("bad", "")
	bad.Expectations, bad.ExpectFrom = []byte(`{"hostname": "-x"}`), "--expect bad.json"

	reports := verify.Fleet(context.Background(), []fleet.Host{good, broken, wrong, bad}, verify.Options{Checks: only("hostname")})
	if len(reports) != 4 {
		t.Fatalf("%d reports", len(reports))
	}
	for i, want := range []struct {
		host string
		code int
		says string
	}{
		{"good", verify.ExitPass, "PASS"},
		{"broken", verify.ExitNotChecked, "not checked: nix eval failed: boom"},
		{"wrong", verify.ExitFail, `want "elsewhere"`},
		{"bad", verify.ExitNotChecked, "not checked: --expect bad.json: "},
	} {
		r := reports[i]
		var got strings.Builder
		verify.WriteTable(&got, []verify.Report{r})
		if r.Host != want.host || r.ExitCode() != want.code || !strings.Contains(got.String()+r.Error, want.says) {
			t.Errorf("report %d: host %s exit %d, error %q\n%s; want %s exit %d saying %q", i, r.Host, r.ExitCode(), r.Error, got.String(), want.host, want.code, want.says)
		}
	}
	if verify.ExitCode(reports) != verify.ExitNotChecked {
		t.Errorf("fleet exit %d", verify.ExitCode(reports))
	}
	if err := reports[1].NotCheckedErr(); err == nil || err.Error() != "broken: nix eval failed: boom" {
		t.Errorf("NotCheckedErr: %v", err)
	}
}
