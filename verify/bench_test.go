package verify_test

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// BenchmarkVerifyVsLogin: the floor for checking a host over SSH is one
// login plus the slowest remote command. On one Debian host it times a
// verify with every check that applies (the exposure scan of 1-1024
// included) and a bare `ssh host true` to the same host, in the same run.
// "Without the scan" is when that same verify had every other verdict, so
// it cannot exceed the full one. Goal: verify within 1.3x the login.
func BenchmarkVerifyVsLogin(b *testing.B) {
	signer, key := testhost.ClientKey(b)
	h := testhost.Debian(b, testhost.DebianOptions{Hostname: "ks-login", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	kh := filepath.Join(b.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(h.Address())}, h.HostKey)+"\n"), 0o600)
	e := debianExpect(h.Name)
	o := options(h, key)
	o.ScanPorts = nil // 1-1024, as a user runs it
	login := func() time.Duration {
		start := time.Now()
		out, err := exec.Command("ssh", "-i", key, "-p", strconv.Itoa(h.Port), "-o", "BatchMode=yes",
			"-o", "UserKnownHostsFile="+kh, "-o", "StrictHostKeyChecking=yes", "root@"+h.Addr, "true").CombinedOutput()
		if err != nil {
			b.Fatalf("ssh true: %v\n%s", err, out)
		}
		return time.Since(start)
	}
	verify.Run(context.Background(), e, verify.Options{SSH: o.SSH, Wait: time.Minute, Checks: []verify.Check{}})
	if r := verify.Run(context.Background(), e, o); r.ExitCode() != 0 {
		b.Fatalf("exit %d: %s", r.ExitCode(), r.Summary())
	}
	login()
	b.ResetTimer()
	var full, rest, ssh time.Duration
	var slowest string
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r := verify.Run(context.Background(), e, o)
		full += time.Since(start)
		if r.ExitCode() != 0 {
			b.Fatalf("exit %d: %s", r.ExitCode(), r.Summary())
		}
		rest += withoutScan(r)
		slowest = slowestChecks(r)
		ssh += login()
	}
	n := time.Duration(b.N)
	ratio := float64(full) / float64(ssh)
	b.ReportMetric(ratio, "x-login")
	fmt.Printf("verify one Debian host, every check: %s, without the scan %s (same runs); ssh host true %s: %.2fx the login (goal 1.3x); slowest: %s\n",
		(full / n).Round(time.Millisecond), (rest / n).Round(time.Millisecond), (ssh / n).Round(time.Millisecond), ratio, slowest)
}

// slowestChecks names the three checks whose verdicts came last in r.
func slowestChecks(r verify.Report) string {
	names := make([]string, 0, len(r.Done))
	for name := range r.Done {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(r.Done[b], r.Done[a]) })
	var s []string
	for _, name := range names[:min(3, len(names))] {
		s = append(s, fmt.Sprintf("%s %s", name, r.Done[name].Round(time.Millisecond)))
	}
	return strings.Join(s, ", ")
}

// BenchmarkFleet verifies 1, 10 and 50 sshd test hosts at once, as
// `verify --all` does, and reports each run's wall time and keystone's own
// CPU time per host: getrusage of this process, which runs the verifier;
// the test hosts are other processes, so their CPU is not in it. Goal:
// under 20 ms of CPU per host.
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
	fleet := func(n int) (time.Duration, cpu) {
		start, used := time.Now(), cpuTime()
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
		return time.Since(start), cpuTime().minus(used)
	}
	fleet(1) // warm up
	b.ResetTimer()
	sizes := []int{1, 10, 50}
	wall := make([]time.Duration, len(sizes))
	used := make([]cpu, len(sizes))
	for i := 0; i < b.N; i++ {
		for j, size := range sizes {
			w, c := fleet(size)
			wall[j] += w
			used[j] = used[j].plus(c)
		}
	}
	n := time.Duration(b.N)
	var parts []string
	for j, size := range sizes {
		per := func(d time.Duration) time.Duration {
			return (d / n / time.Duration(size)).Round(100 * time.Microsecond)
		}
		parts = append(parts, fmt.Sprintf("%d hosts %s wall, %s CPU per host (user %s, kernel %s)", size, (wall[j]/n).Round(time.Millisecond),
			per(used[j].user+used[j].sys), per(used[j].user), per(used[j].sys)))
		b.ReportMetric(float64(per(used[j].user+used[j].sys))/float64(time.Millisecond), fmt.Sprintf("cpu-ms/host@%d", size))
	}
	fmt.Printf("verify a fleet (installer, hostname, firewall, exposure of 1-1024): %s (goal under 20ms CPU per host)\n", strings.Join(parts, "; "))
}

// cpu is CPU time in user space and in the kernel on the process's behalf
// (for the scan: the SYNs and the sockets).
type cpu struct{ user, sys time.Duration }

func (a cpu) minus(b cpu) cpu { return cpu{a.user - b.user, a.sys - b.sys} }
func (a cpu) plus(b cpu) cpu  { return cpu{a.user + b.user, a.sys + b.sys} }

// cpuTime is this process's CPU time so far.
func cpuTime() cpu {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpu{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}
