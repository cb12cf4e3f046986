package verify_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// BenchmarkScanVsNmap times, on one Debian host behind a DROP firewall,
// the exposure scan of 1-1024 alone, a full verify, when that same full
// verify had every verdict but the scan's (so it cannot exceed it), and
// nmap -sT -T4 over the same ports, in the same run.
// Targets: the scan in 0.3 s or less, the full verify in 0.6 s or less.
func BenchmarkScanVsNmap(b *testing.B) {
	nmap, err := exec.LookPath("nmap")
	if err != nil {
		b.Fatal("nmap is not installed (scripts/bench installs it)")
	}
	signer, key := testhost.ClientKey(b)
	h := testhost.Debian(b, testhost.DebianOptions{Hostname: "ks-scan", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	e := debianExpect(h.Name)
	o := options(h, key)
	o.ScanPorts = nil // 1-1024, as a user runs it
	run := func(checks []verify.Check) verify.Report {
		o := o
		o.Checks = checks
		return verify.Run(context.Background(), e, o)
	}
	// Settle and check it passes before timing anything.
	verify.Run(context.Background(), e, verify.Options{SSH: o.SSH, Wait: time.Minute, Checks: []verify.Check{}})
	if r := run(nil); r.ExitCode() != 0 {
		b.Fatalf("exit %d: %s", r.ExitCode(), r.Summary())
	}
	b.ResetTimer()
	var scan, scanRun, full, rest, nm time.Duration
	var evidence string
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r := run(only("exposure"))
		scanRun += time.Since(start)
		scan += scanTime(r)
		evidence = r.Results[len(r.Results)-1].Evidence
		start = time.Now()
		r = run(nil)
		full += time.Since(start)
		rest += withoutScan(r)
		start = time.Now()
		out, err := exec.Command(nmap, "-sT", "-T4", "-n", "-p", "1-1024", h.Addr).CombinedOutput()
		nm += time.Since(start)
		if err != nil || !strings.Contains(string(out), "22/tcp") {
			b.Fatalf("nmap: %v\n%s", err, out)
		}
	}
	n := time.Duration(b.N)
	b.ReportMetric((scan / n).Seconds(), "s-scan")
	b.ReportMetric((full / n).Seconds(), "s-verify")
	fmt.Printf("scan of 1-1024 behind a DROP firewall: keystone %s (target 0.3s; %s with its SSH connection), nmap -sT -T4 %s\n",
		(scan / n).Round(time.Millisecond), (scanRun / n).Round(time.Millisecond), (nm / n).Round(time.Millisecond))
	fmt.Printf("full verify: %s (target 0.6s), without the scan %s\n", (full / n).Round(time.Millisecond), (rest / n).Round(time.Millisecond))
	fmt.Printf("last scan: %s\n", evidence)
}

// withoutScan is when r had every verdict but the exposure check's: the
// connection and the other checks, measured in the same run.
func withoutScan(r verify.Report) time.Duration {
	var last time.Duration
	for name, d := range r.Done {
		if name != "exposure" {
			last = max(last, d)
		}
	}
	return last
}

// scanTime is the scan's own time from its evidence ("… in 250ms, …"),
// without the connection verify makes first.
func scanTime(r verify.Report) time.Duration {
	ev := r.Results[len(r.Results)-1].Evidence
	i := strings.LastIndex(ev, " in ")
	if i < 0 {
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSuffix(strings.Fields(ev[i+4:])[0], ","))
	if err != nil {
		return 0
	}
	return d
}
