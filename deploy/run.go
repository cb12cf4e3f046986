package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Phases of nixos-anywhere, in order, as its "### … ###" lines name them
// (step … in src/nixos-anywhere.sh, the same in 1.12.0 and 1.13.0), and
// what an interruption during each leaves behind. Before the disks,
// nixos-anywhere changes small things: ssh-copy-id adds its key to the
// login user's ~/.ssh/authorized_keys (uploadSshKey), the kexec script
// and tarball land in ~/kexec (/root/kexec in 1.12), and the installer's
// ~/.config/nix/nix.conf gets the host's substituters.
var phaseStates = []struct{ marker, state string }{
	{"", "nothing was changed on the target"},
	{"Uploading install SSH keys", beforeDisks},
	{"Gathering machine facts", beforeDisks},
	{"Switching system into kexec", "its disks are untouched; the target may be running the kexec installer now, or still its old system with " +
		"nixos-anywhere's SSH key in ~/.ssh/authorized_keys and its kexec files in ~/kexec"},
	{"Generating facter.json", inInstaller},
	{"Generating hardware-configuration.nix", inInstaller},
	{"Building disko script", inInstaller},
	{"Formatting hard drive with disko", "the disks were being formatted: their data is gone; run deploy again to install"},
	{"Uploading the system closure", formatted},
	{"Building the system closure", formatted},
	{"Copying extra files", formatted},
	{"Installing NixOS", "the system was being installed; the target runs the installer: run deploy again"},
	{"Rebooting", rebooting},
	{"Waiting for the machine to become unreachable due to reboot", rebooting},
	// Not "Done!": nixos-anywhere prints it after whichever phases ran.
}

const (
	beforeDisks = "its disks are untouched, but nixos-anywhere may have added its SSH key to the login user's ~/.ssh/authorized_keys"
	inInstaller = "its disks are untouched; the target runs the installer (in RAM), where nixos-anywhere may have added its SSH key and substituters"
	formatted   = "the disks were formatted: their data is gone; the target runs the installer: run deploy again to install"
	rebooting   = "the install finished and the host is rebooting: check it with keystone verify --wait 10m"
)

// phaseIndex finds marker in phaseStates.
func phaseIndex(marker string) int {
	for i, s := range phaseStates {
		if s.marker == marker {
			return i
		}
	}
	panic("no phase " + marker)
}

// installPhase is where the extra files (the new host key) are in the
// new system for good; rebootPhase is where nixos-anywhere is done.
var (
	installPhase = phaseIndex("Installing NixOS")
	rebootPhase  = phaseIndex("Rebooting")
)

// Progress follows nixos-anywhere's output.
type Progress struct {
	mu    sync.Mutex
	phase string // the last "### … ###" step
	state int    // index into phaseStates
}

// Phase is the last step nixos-anywhere announced.
func (p *Progress) Phase() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// MayHaveNewKey says whether the run got as far as nixos-install (the
// "Installing NixOS" step; "Copying extra files" put the new host key in
// /mnt just before it): from there the next boot may answer with the new
// key. The pin follows this, not the exit status alone.
func (p *Progress) MayHaveNewKey() bool {
	return p.reached(installPhase)
}

// reached says whether the run got to phase i.
func (p *Progress) reached(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state >= i
}

// State says what the target may be in if the run stopped now.
func (p *Progress) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return phaseStates[p.state].state
}

func (p *Progress) see(line string) {
	step, ok := strings.CutPrefix(line, "### ")
	if !ok || !strings.HasSuffix(step, " ###") {
		return
	}
	step = strings.TrimSuffix(step, " ###")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase = step
	for i, s := range phaseStates {
		if i > p.state && s.marker != "" && strings.HasPrefix(step, s.marker) {
			p.state = i
		}
	}
}

// ErrInstall is the class of nixos-anywhere failures.
var ErrInstall = errors.New("nixos-anywhere failed")

// stopPoll is how often RunInstall looks for a stopped process.
var stopPoll = 500 * time.Millisecond

// RunInstall runs program (nixos-anywhere) with in.Argv(), streaming its
// output to w with prefix, until it exits or ctx ends. On ctx's end it
// interrupts the whole process group, then kills it after a grace period.
// It succeeds only when nixos-anywhere exits 0 having reached its reboot
// step: so a nil error means the new host key is installed.
func RunInstall(ctx context.Context, program string, in Install, w io.Writer, prefix string, p *Progress) error {
	cmd := exec.Command(program, in.Argv()...)
	// Its own session, so its own process group: Ctrl-C is ours to
	// forward, and its ssh children go with it. And no controlling
	// terminal: a prompt in it (ssh-keygen -y for a passphrase, sudo,
	// ssh for a password) cannot open /dev/tty and fails at once, where
	// in a background process group of our terminal it would stop on
	// SIGTTOU/SIGTTIN and wait for the timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: %v", ErrInstall, err)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		s := bufio.NewScanner(pr)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			p.see(s.Text())
			fmt.Fprintf(w, "%s%s\n", prefix, s.Text())
		}
		io.Copy(io.Discard, pr)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pid := cmd.Process.Pid
	finish := func() {
		pw.Close()
		<-copied
	}

	tick := time.NewTicker(stopPoll)
	defer tick.Stop()
	var err error
	for {
		select {
		case err = <-done:
			finish()
			switch {
			case err != nil:
				return fmt.Errorf("%w during %q: %v; %s", ErrInstall, p.Phase(), err, p.State())
			case !p.reached(rebootPhase):
				// --help, --vm-test or --phases end it early with 0.
				return fmt.Errorf("%w: it exited without installing and rebooting the host (last step %q); %s", ErrInstall, p.Phase(), p.State())
			}
			return nil
		case <-tick.C:
			if st := stoppedIn(pid); st != "" {
				syscall.Kill(-pid, syscall.SIGKILL)
				<-done
				finish()
				return fmt.Errorf("%w: %s is stopped, waiting for input nobody can give (a passphrase or password prompt?); ended it during %q; %s",
					ErrInstall, st, p.Phase(), p.State())
			}
			continue
		case <-ctx.Done():
			syscall.Kill(-pid, syscall.SIGINT)
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				syscall.Kill(-pid, syscall.SIGKILL)
				err = <-done
			}
			finish()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%w: it did not finish in time (phase %q); %s", ErrInstall, p.Phase(), p.State())
			}
			return fmt.Errorf("%w: interrupted during %q; %s", ErrInstall, p.Phase(), p.State())
		}
	}
}

// stoppedIn names a stopped process (state T, as in /proc/PID/stat) of
// session sid, as "ssh-keygen (pid 123)", or returns "".
func stoppedIn(sid int) string {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session …; comm may hold spaces and ')'.
		s := string(stat)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(s[rp+1:])
		if len(f) < 4 || f[3] != strconv.Itoa(sid) || f[0] != "T" {
			continue
		}
		return fmt.Sprintf("%s (pid %d)", s[lp+1:rp], pid)
	}
	return ""
}
