package switcher

import (
	"context"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// BenchmarkSwitchGate is a switch whose closure is already on the host,
// from "copy done" to the supervisor's "kept", against a plain verify of
// the same host in the same run: the difference is what the supervisor
// and the gate cost, and it must stay under a second.
func BenchmarkSwitchGate(b *testing.B) {
	w := newWorld(b)
	h := testhost.Debian(b, testhost.DebianOptions{Hostname: "ks-switch-bench", AuthorizedKeys: []ssh.PublicKey{w.signer.PublicKey()}, ExtraPackages: hostPackages})
	for name := range systems {
		w.aim(b, name, h)
	}
	w.install(b, h, "base")
	// Both systems on the host before the clock starts: the switches
	// below copy nothing.
	for _, name := range []string{"good", "good2"} {
		host := w.hosts(b, name)[0]
		p, err := buildLocal(context.Background(), &host, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := copyClosure(context.Background(), &host, p, nil); err != nil {
			b.Fatal(err)
		}
	}
	o := opts(time.Minute)
	var gate, plain time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := []string{"good", "good2"}[i%2]
		hosts := w.hosts(b, name)
		results, err := Run(context.Background(), hosts, o, &ui{})
		r := results[0]
		if err != nil || r.Outcome != Switched {
			b.Fatalf("switch %s: %+v", name, r)
		}
		if !r.timing.copied.IsZero() && r.timing.done.After(r.timing.copied) {
			gate += r.timing.done.Sub(r.timing.copied)
		}
		e, _ := verify.ParseExpectations(hosts[0].Expectations)
		start := time.Now()
		rep := verify.Run(context.Background(), e, verify.Options{Name: name, SSH: hosts[0].SSH(), Timeout: o.Timeout, ScanPorts: o.ScanPorts, System: hosts[0].Config.System})
		plain += time.Since(start)
		if rep.ExitCode() != 0 {
			b.Fatalf("plain verify of %s: exit %d", name, rep.ExitCode())
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(gate.Seconds()/n, "s/switch-after-copy")
	b.ReportMetric(plain.Seconds()/n, "s/verify")
	overhead := (gate - plain).Seconds() / n
	b.ReportMetric(overhead, "s/overhead")
	if overhead >= 1 {
		b.Errorf("the supervisor and the gate cost %.2fs over a plain verify, want under 1s", overhead)
	}
}
