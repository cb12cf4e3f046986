package verify_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// commandChecks are the checks that only run commands on the host, the
// part a shell script with one ssh per check can do too.
func commandChecks() []verify.Check {
	return only("installer", "hostname", "boot", "services", "firewall", "mounts")
}

// baseline does what keystone's checks do, the way a verify script does:
// one ssh process, with its own handshake, per command, one after another.
func baseline(h *testhost.Host, key, knownHostsFile string, e *verify.Expectations, checks []verify.Check) []verify.Result {
	var results []verify.Result
	for _, c := range checks {
		var outs []verify.Output
		for _, cmd := range c.Commands(e) {
			ssh := exec.Command("ssh", "-i", key, "-p", strconv.Itoa(h.Port), "-o", "BatchMode=yes",
				"-o", "UserKnownHostsFile="+knownHostsFile, "-o", "StrictHostKeyChecking=yes",
				"root@"+h.Addr, "timeout 30 sh -c "+remote.Quote(cmd))
			var stdout, stderr strings.Builder
			ssh.Stdout, ssh.Stderr = &stdout, &stderr
			err := ssh.Run()
			o := verify.Output{Stdout: stdout.String(), Stderr: stderr.String()}
			if exit, ok := err.(*exec.ExitError); ok {
				o.Exit = exit.ExitCode()
			} else if err != nil {
				o.Err = err
			}
			outs = append(outs, o)
		}
		status, ev := c.Judge(e, outs)
		results = append(results, verify.Result{Check: c.Name, Status: status, Evidence: ev})
	}
	return results
}

// BenchmarkVerifyVsSSH verifies one Debian test host with keystone (one
// connection, concurrent sessions) and with the one-ssh-per-check
// baseline, in the same process, and reports how many times faster
// keystone is. Target: 5x or more.
func BenchmarkVerifyVsSSH(b *testing.B) {
	signer, key := testhost.ClientKey(b)
	h := testhost.Debian(b, testhost.DebianOptions{Hostname: "ks-bench", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	kh := filepath.Join(b.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(h.Address())}, h.HostKey)+"\n"), 0o600)
	e := debianExpect(h.Name)
	checks := commandChecks()
	o := verify.Options{Name: h.Name, SSH: options(h, key).SSH, Timeout: 30 * time.Second, Checks: checks}
	// Warm up both, and check they agree before timing anything.
	verify.Run(context.Background(), e, verify.Options{SSH: o.SSH, Wait: time.Minute, Checks: []verify.Check{}})
	r := verify.Run(context.Background(), e, o)
	base := baseline(h, key, kh, e, checks)
	for i, res := range base {
		if k := r.Results[i+1]; k.Status != res.Status || res.Status != verify.Pass {
			b.Fatalf("%s: keystone %s (%s), baseline %s (%s)", res.Check, k.Status, k.Evidence, res.Status, res.Evidence)
		}
	}
	b.ResetTimer()
	var ks, bl time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if r := verify.Run(context.Background(), e, o); r.ExitCode() != 0 {
			b.Fatalf("keystone: exit %d", r.ExitCode())
		}
		ks += time.Since(start)
		start = time.Now()
		baseline(h, key, kh, e, checks)
		bl += time.Since(start)
	}
	ratio := float64(bl) / float64(ks)
	b.ReportMetric(ratio, "x-faster")
	fmt.Printf("verify one host, %d checks: keystone %s, one ssh per check %s: %.1fx faster (target 5x)\n",
		len(checks), (ks / time.Duration(b.N)).Round(time.Millisecond), (bl / time.Duration(b.N)).Round(time.Millisecond), ratio)
}

// BenchmarkFleet verifies 1, 10 and 50 sshd test hosts at once, as
// `verify --all` does, and reports each run's time against one host's.
// Target: 50 hosts in under 3x one host's time.
func BenchmarkFleet(b *testing.B) {
	signer, key := testhost.ClientKey(b)
	hosts := make([]*testhost.Host, 50)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hosts[i] = testhost.SSHD(b, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
		}()
	}
	wg.Wait()
	fleet := func(n int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for _, h := range hosts[:n] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := options(h, key)
				o.ScanPorts = nil // the default 1-1024, as a user runs it
				o.Checks = sshdChecks()
				if r := verify.Run(context.Background(), sshdExpect(h.Name), o); r.ExitCode() != 0 {
					b.Errorf("%s: exit %d: %s", h.Name, r.ExitCode(), r.Summary())
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	fleet(1) // warm up
	b.ResetTimer()
	var one, ten, fifty time.Duration
	for i := 0; i < b.N; i++ {
		one += fleet(1)
		ten += fleet(10)
		fifty += fleet(50)
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64(ten)/float64(one), "x10/x1")
	b.ReportMetric(float64(fifty)/float64(one), "x50/x1")
	fmt.Printf("verify a fleet (installer, hostname, firewall, exposure of 1-1024): 1 host %s, 10 hosts %s (%.2fx), 50 hosts %s (%.2fx; target under 3x)\n",
		(one / n).Round(time.Millisecond), (ten / n).Round(time.Millisecond), float64(ten)/float64(one),
		(fifty / n).Round(time.Millisecond), float64(fifty)/float64(one))
}
