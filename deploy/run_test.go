package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// Defect 3: `--phases kexec,disko` (or --help, --vm-test) makes
// nixos-anywhere exit 0 without installing: main() runs only the phases
// asked for and then `step "Done!"` (src/nixos-anywhere.sh, main). That is
// no install, and the new key is not on the target.
func TestRunInstallExitWithoutInstalling(t *testing.T) {
	program, _ := fakeAnywhere(t, "echo '### Done! ###'\nexit 0")
	var p Progress
	err := RunInstall(context.Background(), program, testInstall, &strings.Builder{}, "", &p)
	if !errors.Is(err, ErrInstall) || !strings.Contains(err.Error(), "exited without installing and rebooting") || p.MayHaveNewKey() {
		t.Errorf("error %v, may have the new key %v", err, p.MayHaveNewKey())
	}
}

// Defect 10: before the disks nixos-anywhere still changes the target:
// uploadSshKey runs ssh-copy-id first thing.
func TestProgressStates(t *testing.T) {
	var p Progress
	if p.State() != "nothing was changed on the target" {
		t.Errorf("before any step: %q", p.State())
	}
	for _, tc := range []struct{ line, want string }{
		{"### Uploading install SSH keys ###", "its disks are untouched, but nixos-anywhere may have added its SSH key to the login user's ~/.ssh/authorized_keys"},
		{"### Gathering machine facts ###", "authorized_keys"},
		{"### Switching system into kexec ###", "may be running the kexec installer now"},
		// importFacts again after kexec: the state does not go back.
		{"### Gathering machine facts ###", "may be running the kexec installer now"},
		{"### Uploading /run/pw to /tmp/secret.key ###", "may be running the kexec installer now"},
		{"### Formatting hard drive with disko ###", "their data is gone"},
		{"### Copying extra files ###", "the disks were formatted"},
		{"### Installing NixOS ###", "the system was being installed"},
		{"### Waiting for the machine to become unreachable due to reboot ###", "the host is rebooting"},
	} {
		p.see(tc.line)
		if !strings.Contains(p.State(), tc.want) {
			t.Errorf("after %s: %q, want %q", tc.line, p.State(), tc.want)
		}
	}
}

// Defect 4: a process of nixos-anywhere stopped (here by SIGSTOP; on a
// terminal by SIGTTOU) would wait until the timeout.
func TestRunInstallStoppedChild(t *testing.T) {
	program, _ := fakeAnywhere(t, "sh -c 'kill -STOP $$'\necho never")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var p Progress
	start := time.Now()
	err := RunInstall(ctx, program, testInstall, &strings.Builder{}, "", &p)
	if err == nil || !strings.Contains(err.Error(), "sh (pid ") || !strings.Contains(err.Error(), "is stopped, waiting for input nobody can give") ||
		time.Since(start) > 10*time.Second {
		t.Errorf("after %s: %v", time.Since(start), err)
	}
}

// Defect 4, as it happens: keystone runs in a terminal, and -i is a key
// with a passphrase. nixos-anywhere's uploadSshKey runs
// `ssh-keygen -y -f "$tempDir/nixos-anywhere"` on a copy of it
// (src/nixos-anywhere.sh, line 539 in 1.13.0, 486 in 1.12.0), which opens
// /dev/tty for the passphrase. In a background process group of the
// terminal it stops there; without a terminal it fails at once.
func TestRunInstallWithATerminal(t *testing.T) {
	if os.Getenv("KS_TTY_HELPER") != "" {
		ttyHelper()
		return
	}
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatalf("ssh-keygen is not installed (apt-get install openssh-client): %v", err)
	}
	key := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "secret words", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	master, slave := openPTY(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunInstallWithATerminal$", "-test.v")
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DISPLAY=") && !strings.HasPrefix(e, "WAYLAND_DISPLAY=") && !strings.HasPrefix(e, "SSH_ASKPASS") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "KS_TTY_HELPER=1", "KS_KEY="+key, "KS_BIN="+t.TempDir())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out strings.Builder
	read := make(chan struct{})
	go func() { io.Copy(&out, master); close(read) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	master.Close()
	<-read
	if !strings.Contains(out.String(), `RESULT quick: nixos-anywhere failed during "Uploading install SSH keys": exit status 1`) {
		t.Errorf("with a terminal:\n%s", out.String())
	}
}

// ttyHelper is the test process with a controlling terminal.
func ttyHelper() {
	program := filepath.Join(os.Getenv("KS_BIN"), "nixos-anywhere")
	script := "#!/bin/sh\necho '### Uploading install SSH keys ###'\ncp \"$KS_KEY\" \"$KS_BIN/copy\"\nchmod 600 \"$KS_BIN/copy\"\n" +
		"ssh-keygen -y -f \"$KS_BIN/copy\" > \"$KS_BIN/copy.pub\" || exit 1\necho '### Rebooting ###'\n"
	os.WriteFile(program, []byte(script), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	var p Progress
	err := RunInstall(ctx, program, testInstall, io.Discard, "", &p)
	speed := "quick"
	if time.Since(start) > 10*time.Second {
		speed = "slow"
	}
	fmt.Printf("RESULT %s: %v\n", speed, err)
}

func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}
