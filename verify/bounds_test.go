package verify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// sleeper is a check whose command takes d on the host.
func sleeper(name string, d time.Duration) verify.Check {
	return verify.Check{
		Name:     name,
		Applies:  func(*verify.Expectations) (bool, string) { return true, "" },
		Commands: func(*verify.Expectations) []string { return []string{"sleep " + d.String()} },
		Judge: func(_ *verify.Expectations, outs []verify.Output) (verify.Status, string) {
			if outs[0].Err != nil {
				return verify.Fail, outs[0].Err.Error()
			}
			return verify.Pass, "slept"
		},
	}
}

// A host that drops every packet once the connection is up: the run ends
// within about --timeout plus a few seconds, says the connection stopped
// answering (exit 2), and shows the checks it could not run as not run.
func TestHostThatGoesSilentEndsInBoundedTime(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	o := options(h, key)
	var checks []verify.Check
	for i := range 12 { // more than one connection's sessions, so some wait for a slot
		checks = append(checks, sleeper("slow"+string(rune('a'+i)), 2*time.Second))
	}
	o.Checks = checks
	o.Timeout = 3 * time.Second
	go func() {
		// Once the login is in (however long a loaded machine takes),
		// while the two-second checks still run.
		for i := 0; i < 200 && !strings.Contains(h.Log(), "Accepted publickey"); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		if _, err := h.Run(t, "nft", "add table inet ks-drop { chain in { type filter hook input priority -10; policy drop; }; chain out { type filter hook output priority -10; policy drop; }; }"); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	r := verify.Run(context.Background(), sshdExpect(h.Name), o)
	took := time.Since(start)
	logReport(t, r)
	if took > o.Timeout+10*time.Second {
		t.Errorf("took %s with --timeout %s", took, o.Timeout)
	}
	if r.ExitCode() != verify.ExitCannotReach || !strings.Contains(r.Error, "stopped answering") {
		t.Errorf("exit %d, error %q; want 2, stopped answering", r.ExitCode(), r.Error)
	}
	notRun := 0
	for _, res := range r.Results {
		if res.Status == verify.Skip && strings.HasPrefix(res.Evidence, "not run") {
			notRun++
		}
		if res.Status == verify.Fail {
			t.Errorf("%s FAILs (%s): a check cut off by the connection is not run, not failed", res.Check, res.Evidence)
		}
	}
	if notRun == 0 {
		t.Errorf("no check shown as not run")
	}
}

// --timeout bounds the connect as well as the commands.
func TestTimeoutBoundsTheConnect(t *testing.T) {
	addr := testhost.Silent(t)
	_, key := testhost.ClientKey(t)
	o := verify.Options{Name: "silent", SSH: sshx.Options{Addr: addr, User: "root", Identities: []string{key},
		HostKeys: sshx.HostKeys{Insecure: true}}, Timeout: time.Second}
	start := time.Now()
	r := verify.Run(context.Background(), sshdExpect("silent"), o)
	if took := time.Since(start); r.ExitCode() != verify.ExitCannotReach || took > 3*time.Second {
		t.Errorf("exit %d after %s (%s); want 2 within --timeout 1s", r.ExitCode(), took, r.Error)
	}
}

// Ctrl-C during the checks: the run ends at once, the checks cut short
// are not run, and the report says it was interrupted.
func TestInterruptedRunSaysSo(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	o := options(h, key)
	o.Checks = []verify.Check{sleeper("slow", 20*time.Second)}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel)
	start := time.Now()
	r := verify.Run(ctx, sshdExpect(h.Name), o)
	logReport(t, r)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s after the cancel", took)
	}
	if res := r.Results[len(r.Results)-1]; res.Status != verify.Skip || res.Evidence != "not run: interrupted" || !strings.Contains(r.Error, "interrupted") {
		t.Errorf("%s %q, error %q", res.Status, res.Evidence, r.Error)
	}
}
