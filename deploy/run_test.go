package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keystone-nix/keystone/internal/target"
)

// fakeAnywhere writes a stand-in nixos-anywhere that records its argv,
// prints its steps and then runs tail.
func fakeAnywhere(t *testing.T, tail string) (program, argvFile string) {
	dir := t.TempDir()
	argvFile = filepath.Join(dir, "argv")
	program = filepath.Join(dir, "nixos-anywhere")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + argvFile + "\n" +
		"echo '### Uploading install SSH keys ###'\necho '### Formatting hard drive with disko ###'\necho formatting\n" + tail + "\n"
	if err := os.WriteFile(program, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return program, argvFile
}

var testInstall = Install{Flake: ".", Name: "web1", Target: target.Target{User: "root", Host: "192.0.2.10", Port: 22}}

func TestRunInstallStreamsAndRecords(t *testing.T) {
	program, argvFile := fakeAnywhere(t, "echo '### Installing NixOS ###'\necho '### Rebooting ###'\nexit 0")
	var out strings.Builder
	var p Progress
	if err := RunInstall(context.Background(), program, testInstall, &out, "[web1] ", &p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "[web1] formatting\n") || p.Phase() != "Rebooting" || !p.MayHaveNewKey() {
		t.Errorf("output %q, phase %q", out.String(), p.Phase())
	}
	argv, _ := os.ReadFile(argvFile)
	if strings.Join(strings.Fields(string(argv)), " ") != strings.Join(testInstall.Argv(), " ") {
		t.Errorf("argv %q", argv)
	}
}

func TestRunInstallFailureSaysTheState(t *testing.T) {
	program, _ := fakeAnywhere(t, "exit 3")
	var p Progress
	err := RunInstall(context.Background(), program, testInstall, &strings.Builder{}, "", &p)
	if !errors.Is(err, ErrInstall) || !strings.Contains(err.Error(), `during "Formatting hard drive with disko"`) ||
		!strings.Contains(err.Error(), "their data is gone") || p.MayHaveNewKey() {
		t.Errorf("error %v, may have the new key %v", err, p.MayHaveNewKey())
	}
	if phaseStates[installPhase].marker != "Installing NixOS" {
		t.Errorf("installPhase names %q", phaseStates[installPhase].marker)
	}
}

func TestRunInstallInterruptStopsTheProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	// A grandchild, as nixos-anywhere's ssh is: SIGINT to the group ends it.
	program, _ := fakeAnywhere(t, "sh -c 'echo $$ > "+pidFile+"; exec sleep 60'")
	ctx, cancel := context.WithCancel(context.Background())
	var p Progress
	done := make(chan error)
	go func() { done <- RunInstall(ctx, program, testInstall, &strings.Builder{}, "", &p) }()
	for i := 0; i < 100 && p.Phase() == ""; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("RunInstall did not return after the interrupt")
	}
	if !strings.Contains(err.Error(), "interrupted during") || time.Since(start) > 5*time.Second {
		t.Errorf("error %v after %s", err, time.Since(start))
	}
	pid, _ := os.ReadFile(pidFile)
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	if f := strings.Fields(string(stat)); err == nil && len(f) > 2 && f[2] != "Z" {
		t.Errorf("the child process %s still runs", strings.TrimSpace(string(pid)))
	}
}

func TestRunInstallTimeout(t *testing.T) {
	program, _ := fakeAnywhere(t, "sleep 60")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var p Progress
	err := RunInstall(ctx, program, testInstall, &strings.Builder{}, "", &p)
	if err == nil || !strings.Contains(err.Error(), "did not finish in time") {
		t.Errorf("error %v", err)
	}
}
