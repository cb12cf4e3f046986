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

// only is the checks named, as verify --only picks them.
func only(names ...string) []verify.Check {
	checks, err := verify.Select(strings.Join(names, ","), "")
	if err != nil {
		panic(err)
	}
	return checks
}

// exposure runs the exposure check alone and returns its result, without
// the scan's timing.
func exposure(t *testing.T, e *verify.Expectations, o verify.Options) verify.Result {
	t.Helper()
	o.Checks = only("exposure")
	r := verify.Run(context.Background(), e, o)
	logReport(t, r)
	for _, res := range r.Results {
		if res.Check == "exposure" {
			if i := strings.LastIndex(res.Evidence, " ("); i >= 0 {
				res.Evidence = res.Evidence[:i]
			}
			return res
		}
	}
	t.Fatalf("no exposure result: %s", r.Summary())
	return verify.Result{}
}

// Added delay or loss on the path does not turn open ports into silence:
// the scan finds what it finds without, also with a 1 s round trip, more
// than the fixed timeout it used to have, and with 5% of packets lost.
func TestScanWithDelayFindsTheSamePorts(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, OpenTCP: []int{22, 80, 8080}})
	h.Listen(t, 8080)
	o := options(h, key)
	o.ScanPorts, _ = verify.ParsePorts("1-1024")
	want := exposure(t, sshdExpect(h.Name), o)
	if want.Status != verify.Fail || !strings.Contains(want.Evidence, "open TCP ports 8080") {
		t.Fatalf("without delay: %s %s", want.Status, want.Evidence)
	}
	d := h.Delay(t, 0)
	for _, tc := range []struct {
		each  time.Duration
		ports string
	}{
		{100 * time.Millisecond, "1-1024"},
		// Fewer ports: a 1 s round trip makes every silent one cost
		// seconds.
		{500 * time.Millisecond, "1-64,80,8080"},
	} {
		each := tc.each
		d.Set(each)
		o.ScanPorts, _ = verify.ParsePorts(tc.ports)
		start := time.Now()
		got := exposure(t, sshdExpect(h.Name), o)
		if got != want {
			t.Errorf("with %s each way: %s %q, want %s %q", 2*each, got.Status, got.Evidence, want.Status, want.Evidence)
		}
		t.Logf("with a %s round trip: %s", 2*each, time.Since(start).Round(10*time.Millisecond))
	}
	d.Set(0)
	d.SetLoss(0.05)
	o.ScanPorts, _ = verify.ParsePorts("1-1024")
	for i := range 3 {
		start := time.Now()
		if got := exposure(t, sshdExpect(h.Name), o); got != want {
			t.Errorf("with 5%% loss, run %d: %s %q, want %s %q", i, got.Status, got.Evidence, want.Status, want.Evidence)
		}
		t.Logf("with 5%% loss: %s", time.Since(start).Round(10*time.Millisecond))
	}
}

// A port that listens and that the firewall opens is scanned even outside
// --ports: ss says it listens.
func TestScanCoversListeningPorts(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, OpenTCP: []int{22, 9999}})
	h.Listen(t, 9999)
	o := options(h, key)
	o.ScanPorts = []int{22}
	got := exposure(t, sshdExpect(h.Name), o)
	if got.Status != verify.Fail || !strings.Contains(got.Evidence, "open TCP ports 9999") {
		t.Errorf("%s %q, want FAIL with 9999 open", got.Status, got.Evidence)
	}
}
