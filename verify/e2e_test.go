package verify_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/internal/testhost"
	"github.com/keystone-nix/keystone/verify"
)

// debianExpect is what a healthy Debian test host looks like, in the
// contract's terms: the same checks as a NixOS host, with Debian's units.
func debianExpect(hostname string) *verify.Expectations {
	return &verify.Expectations{
		Hostname: hostname,
		Services: []string{"sshd.service", "avahi-daemon.service", "systemd-resolved.service", "nftables.service"},
		Firewall: &verify.Firewall{Enable: true, Backend: "nftables", TCP: []int{22}, UDP: []int{5353}},
		SSHD:     &verify.SSHD{Ports: []int{22}, PermitRootLogin: "prohibit-password"},
		Mounts:   []string{"/"},
		MDNS:     &verify.MDNS{Publish: true},
	}
}

func options(h *testhost.Host, key string) verify.Options {
	return verify.Options{
		Name: h.Name,
		SSH: sshx.Options{Addr: h.Address(), User: "root", Identities: []string{key},
			HostKeys: sshx.HostKeys{Pinned: h.HostKey, PinnedFrom: "the test"}},
		Timeout:   20 * time.Second,
		ScanPorts: []int{1, 21, 22, 23, 80, 443, 8080, 8443},
	}
}

// statuses maps each check to its status, and fails t on a check missing.
func statuses(t *testing.T, r verify.Report) map[string]verify.Status {
	t.Helper()
	m := map[string]verify.Status{}
	for _, res := range r.Results {
		m[res.Check] = res.Status
	}
	return m
}

func logReport(t *testing.T, r verify.Report) {
	t.Helper()
	var b strings.Builder
	verify.WriteTable(&b, []verify.Report{r})
	t.Log("\n" + b.String())
}

func TestHealthyDebianHostPasses(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-healthy", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	o := options(h, key)
	o.Wait = time.Minute // the container may still be starting units
	r := verify.Run(context.Background(), debianExpect(h.Name), o)
	logReport(t, r)
	if r.ExitCode() != verify.ExitPass {
		t.Fatalf("exit %d, want 0", r.ExitCode())
	}
	got := statuses(t, r)
	for _, check := range []string{"ssh", "installer", "hostname", "boot", "services", "sshd", "firewall", "exposure", "mounts", "mdns"} {
		if got[check] != verify.Pass {
			t.Errorf("%s is %s, want PASS", check, got[check])
		}
	}
	for _, check := range []string{"zfs", "luks", "tpm"} {
		if got[check] != verify.Skip {
			t.Errorf("%s is %s, want SKIP (not applicable)", check, got[check])
		}
	}
}

// TestBrokenDebianHosts breaks one thing per host and expects exactly that
// check to fail.
func TestBrokenDebianHosts(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	for _, tc := range []struct {
		name    string
		opts    testhost.DebianOptions
		breakIt func(t *testing.T, h *testhost.Host)
		expect  func(e *verify.Expectations)
		fails   []string
	}{
		{name: "wrong hostname", expect: func(e *verify.Expectations) { e.Hostname = "web1" }, fails: []string{"hostname", "mdns"}},
		{name: "port 8080 open", opts: testhost.DebianOptions{OpenTCP: []int{22, 8080}},
			breakIt: func(t *testing.T, h *testhost.Host) { h.Listen(t, 8080) }, fails: []string{"firewall", "exposure"}},
		{name: "avahi stopped", breakIt: func(t *testing.T, h *testhost.Host) {
			if out, err := h.Run(t, "systemctl", "stop", "avahi-daemon.socket", "avahi-daemon.service"); err != nil {
				t.Fatalf("stopping avahi: %v %s", err, out)
			}
		}, fails: []string{"services", "mdns"}},
		{name: "password auth on", opts: testhost.DebianOptions{ExtraSSHDConfig: []string{"PasswordAuthentication yes"}},
			fails: []string{"sshd"}},
		{name: "root login with password", opts: testhost.DebianOptions{ExtraSSHDConfig: []string{"PermitRootLogin yes"}},
			fails: []string{"sshd"}},
		{name: "a failed unit", breakIt: func(t *testing.T, h *testhost.Host) {
			h.Run(t, "systemd-run", "--unit=broken", "sh", "-c", "exit 3")
			for i := 0; i < 50; i++ {
				if out, _ := h.Run(t, "systemctl", "is-failed", "broken.service"); strings.TrimSpace(out) == "failed" {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}, fails: []string{"boot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Hostname = "ks-broken"
			tc.opts.AuthorizedKeys = []ssh.PublicKey{signer.PublicKey()}
			h := testhost.Debian(t, tc.opts)
			o := options(h, key)
			o.Wait = time.Minute
			// Settle first, so that breaking it is the only change.
			verify.Run(context.Background(), debianExpect(h.Name), verify.Options{SSH: o.SSH, Wait: time.Minute,
				Checks: []verify.Check{}})
			if tc.breakIt != nil {
				tc.breakIt(t, h)
			}
			e := debianExpect(h.Name)
			if tc.expect != nil {
				tc.expect(e)
			}
			o.Wait = 0
			r := verify.Run(context.Background(), e, o)
			logReport(t, r)
			if r.ExitCode() != verify.ExitFail {
				t.Errorf("exit %d, want 1", r.ExitCode())
			}
			for check, status := range statuses(t, r) {
				want := verify.Pass
				for _, f := range tc.fails {
					if f == check {
						want = verify.Fail
					}
				}
				if check == "zfs" || check == "luks" || check == "tpm" || check == "system" || check == "initrd" {
					want = verify.Skip
				}
				if status != want {
					t.Errorf("%s is %s, want %s", check, status, want)
				}
			}
		})
	}
}

func sshdExpect(hostname string) *verify.Expectations {
	return &verify.Expectations{
		Hostname: hostname,
		Firewall: &verify.Firewall{Enable: true, Backend: "nftables", TCP: []int{22}, UDP: []int{5353}},
	}
}

// sshdChecks are the checks an sshd-in-a-namespace host can answer: it has
// no systemd, avahi or sshd config of its own.
func sshdChecks() []verify.Check {
	return only("installer", "hostname", "firewall", "exposure")
}

func TestUnreachableHostExits2(t *testing.T) {
	_, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{})
	h.StopSSHD(t)
	o := options(h, key)
	start := time.Now()
	r := verify.Run(context.Background(), sshdExpect(h.Name), o)
	if r.ExitCode() != verify.ExitCannotReach || !strings.Contains(r.Error, "cannot reach") {
		t.Errorf("exit %d, error %q; want 2, cannot reach", r.ExitCode(), r.Error)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
}

func TestChangedHostKeyExits2(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	pinned := h.HostKey
	_, newKey := testhost.GenerateKey(t)
	h.SetHostKey(t, newKey)
	o := options(h, key)
	o.SSH.HostKeys.Pinned = pinned
	r := verify.Run(context.Background(), sshdExpect(h.Name), o)
	if r.ExitCode() != verify.ExitCannotReach {
		t.Fatalf("exit %d, want 2", r.ExitCode())
	}
	for _, want := range []string{ssh.FingerprintSHA256(pinned), ssh.FingerprintSHA256(h.HostKey), "pins"} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("error %q does not show %s", r.Error, want)
		}
	}
}

func TestWrongKeyExits2(t *testing.T) {
	_, key := testhost.ClientKey(t) // not authorized on the host
	h := testhost.SSHD(t, testhost.SSHDOptions{})
	r := verify.Run(context.Background(), sshdExpect(h.Name), options(h, key))
	if r.ExitCode() != verify.ExitCannotReach || !strings.Contains(r.Error, "authentication failed") {
		t.Errorf("exit %d, error %q; want 2, authentication failed", r.ExitCode(), r.Error)
	}
}

// A user who logs in but cannot become root is one clear login error
// (exit 2), not every check failing for the same reason.
func TestNonRootWithoutSudoExits2(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.Debian(t, testhost.DebianOptions{Hostname: "ks-nonroot", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	if _, err := h.Run(t, "sh", "-c", "useradd -m -s /bin/sh ops && mkdir -m 700 ~ops/.ssh && echo '"+line+"' > ~ops/.ssh/authorized_keys && chown -R ops: ~ops/.ssh"); err != nil {
		t.Fatal(err)
	}
	o := options(h, key)
	o.SSH.User = "ops"
	r := verify.Run(context.Background(), debianExpect(h.Name), o)
	logReport(t, r)
	if r.ExitCode() != verify.ExitCannotReach || !strings.Contains(r.Error, "cannot run commands as root with sudo -n: sh: 1: sudo: not found") {
		t.Errorf("exit %d, error %q", r.ExitCode(), r.Error)
	}
}

func TestSSHDHostPasses(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	o := options(h, key)
	o.Checks = sshdChecks()
	r := verify.Run(context.Background(), sshdExpect(h.Name), o)
	logReport(t, r)
	if r.ExitCode() != verify.ExitPass || len(r.Results) != 5 {
		t.Errorf("exit %d with %d results, want 0 with 5", r.ExitCode(), len(r.Results))
	}
}

// TestKilledSSHDEndsInBoundedTime kills sshd and every session while the
// checks run: the run must end soon, saying the connection was lost.
func TestKilledSSHDEndsInBoundedTime(t *testing.T) {
	signer, key := testhost.ClientKey(t)
	h := testhost.SSHD(t, testhost.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	slow := verify.Check{
		Name:     "slow",
		Applies:  func(*verify.Expectations) (bool, string) { return true, "" },
		Commands: func(*verify.Expectations) []string { return []string{"sleep 30"} },
		Judge: func(_ *verify.Expectations, outs []verify.Output) (verify.Status, string) {
			if outs[0].Err != nil {
				return verify.Fail, outs[0].Err.Error()
			}
			return verify.Pass, "slept"
		},
	}
	o := options(h, key)
	o.Checks = append(sshdChecks(), slow)
	o.Timeout = 60 * time.Second
	go func() {
		time.Sleep(time.Second)
		h.KillSSHD(t)
	}()
	start := time.Now()
	r := verify.Run(context.Background(), sshdExpect(h.Name), o)
	logReport(t, r)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s after sshd was killed", took)
	}
	if r.ExitCode() != verify.ExitCannotReach || !strings.Contains(r.Error, "connection") || !strings.Contains(r.Error, "lost") {
		t.Errorf("exit %d, error %q; want 2 and the connection lost", r.ExitCode(), r.Error)
	}
}

// A host that accepts TCP and never speaks SSH (sshd not ready yet) is
// tried again and again while --wait lasts, each attempt bounded.
func TestWaitRetriesASilentHost(t *testing.T) {
	defer func(d time.Duration) { verify.SetConnectTimeout(d) }(verify.SetConnectTimeout(time.Second))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepts atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			defer c.Close() // silent until the test ends
		}
	}()
	_, key := testhost.ClientKey(t)
	o := verify.Options{Name: "silent", SSH: sshx.Options{Addr: l.Addr().String(), User: "root", Identities: []string{key},
		HostKeys: sshx.HostKeys{Insecure: true}}, Wait: 5 * time.Second}
	start := time.Now()
	r := verify.Run(context.Background(), sshdExpect("silent"), o)
	if r.ExitCode() != verify.ExitCannotReach || accepts.Load() < 2 || time.Since(start) > 10*time.Second {
		t.Errorf("exit %d after %s and %d connections; want 2, within the wait, after several tries", r.ExitCode(), time.Since(start), accepts.Load())
	}
}
