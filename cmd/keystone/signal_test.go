package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/internal/testhost"
)

// A verify stuck in an SSH handshake with a host that never answers stops
// soon after SIGTERM, not when its own timers run out.
func TestSignalStopsAStuckVerify(t *testing.T) {
	addr := testhost.Silent(t)
	dir := t.TempDir()
	expect := filepath.Join(dir, "e.json")
	if err := os.WriteFile(expect, []byte(`{"hostname": "web1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("keystone")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "verify", "--expect", expect, "--target", "root@"+addr,
		"--insecure-ignore-host-key", "--timeout", "60s", "--wait", "5m")
	cmd.Env = append(os.Environ(), "HOME="+dir, "SSH_AUTH_SOCK=")
	_, key := testhost.ClientKey(t)
	cmd.Args = append(cmd.Args, "-i", key)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // connected and waiting for a banner
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("still running 10 s after SIGTERM; stderr:\n%s", stderr.String())
	}
	if took := time.Since(start); took > signalGrace["verify"]+time.Second {
		t.Errorf("took %s to stop", took)
	}
	if !bytes.Contains(stderr.Bytes(), []byte("keystone: stopping")) {
		t.Errorf("stderr does not say it is stopping:\n%s", stderr.String())
	}
}

func TestStopOnSignal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		second  bool
		atLeast time.Duration
		atMost  time.Duration
	}{
		{"grace runs out", false, 200 * time.Millisecond, time.Second},
		{"second signal", true, 0, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sigs := make(chan os.Signal, 2)
			cancelled := make(chan struct{})
			exited := make(chan int, 1)
			go stopOnSignal(sigs, func() { close(cancelled) }, 200*time.Millisecond, &bytes.Buffer{}, func(code int) { exited <- code })
			start := time.Now()
			sigs <- syscall.SIGINT
			<-cancelled
			if tc.second {
				sigs <- syscall.SIGINT
			}
			select {
			case code := <-exited:
				took := time.Since(start)
				if code != 130 || took < tc.atLeast || took > tc.atMost {
					t.Errorf("exit %d after %s, want 130 within %s-%s", code, took, tc.atLeast, tc.atMost)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("never exited")
			}
		})
	}
}
