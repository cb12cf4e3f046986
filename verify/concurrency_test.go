package verify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// Two checks that read the same output (the firewall and ipv6 checks both
// read the ruleset) share one run of the command on the host.
func TestChecksShareACommand(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	counter := "echo run >> /tmp/ks-shared-" + h.Name + "; sleep 0.2; echo ruleset"
	check := func(name string) verify.Check {
		return verify.Check{
			Name:     name,
			Applies:  func(*verify.Expectations) (bool, string) { return true, "" },
			Commands: func(*verify.Expectations) []string { return []string{counter} },
			Judge: func(_ *verify.Expectations, outs []verify.Output) (verify.Status, string) {
				if strings.TrimSpace(outs[0].Stdout) != "ruleset" {
					return verify.Fail, outs[0].Stdout + outs[0].Stderr
				}
				return verify.Pass, "read"
			},
		}
	}
	o := options(h, key)
	o.Checks = []verify.Check{check("firewall-like"), check("ipv6-like")}
	r := verify.Run(context.Background(), sshdExpect(h.Name), o)
	if r.ExitCode() != 0 {
		t.Fatalf("exit %d: %s", r.ExitCode(), r.Summary())
	}
	out, err := h.Run(t, "cat", "/tmp/ks-shared-"+h.Name)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "run"); n != 1 {
		t.Errorf("the shared command ran %d times on the host, want once", n)
	}
}

// A check's probe (the exposure scan, the mDNS query) starts beside its
// commands, not after them: a second of commands and a second of probe
// take about a second.
func TestProbeRunsBesideCommands(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	o := options(h, key)
	o.Checks = []verify.Check{{
		Name:     "both",
		Applies:  func(*verify.Expectations) (bool, string) { return true, "" },
		Commands: func(*verify.Expectations) []string { return []string{"sleep 1; echo slept"} },
		Probe: func(ctx context.Context, _ *verify.Expectations, h verify.Host) verify.Output {
			time.Sleep(time.Second)
			outs := h.Outs() // and what the commands printed, once they are in
			return verify.Output{Stdout: outs[0].Stdout}
		},
		Judge: func(_ *verify.Expectations, outs []verify.Output) (verify.Status, string) {
			if strings.TrimSpace(outs[1].Stdout) != "slept" {
				return verify.Fail, "the probe did not get the commands' output: " + outs[1].Stdout
			}
			return verify.Pass, "ok"
		},
	}}
	r := verify.Run(context.Background(), sshdExpect(h.Name), o)
	if r.ExitCode() != 0 {
		t.Fatalf("exit %d: %s", r.ExitCode(), r.Summary())
	}
	if took := r.Done["both"]; took > 1700*time.Millisecond {
		t.Errorf("the check took %s: its probe waited for its commands", took)
	}
}
