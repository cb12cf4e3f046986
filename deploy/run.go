package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Phases of nixos-anywhere, in order, as its "### … ###" lines name them,
// and what an interruption during each leaves behind.
var phaseStates = []struct{ marker, state string }{
	{"", "nothing was changed on the target"},
	{"Switching system into kexec", "the target may be running the kexec installer now; its disks are untouched"},
	{"Formatting hard drive with disko", "the disks were being formatted: their data is gone; run deploy again to install"},
	{"Installing NixOS", "the system was being installed; the target runs the installer: run deploy again"},
	{"Rebooting", "the install finished and the host is rebooting: check it with keystone verify --wait 10m"},
}

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

// MayHaveNewKey says whether the run got as far as the install, where
// the extra files (the new host key) are copied to the target.
func (p *Progress) MayHaveNewKey() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state >= installPhase
}

// installPhase indexes "Installing NixOS" in phaseStates.
const installPhase = 3

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

// RunInstall runs program (nixos-anywhere) with in.Argv(), streaming its
// output to w with prefix, until it exits or ctx ends. On ctx's end it
// interrupts the whole process group, then kills it after a grace period.
func RunInstall(ctx context.Context, program string, in Install, w io.Writer, prefix string, p *Progress) error {
	cmd := exec.Command(program, in.Argv()...)
	// Its own process group: Ctrl-C is ours to forward, and its ssh
	// children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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

	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
		pw.Close()
		<-copied
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w: it did not finish in time (phase %q); %s", ErrInstall, p.Phase(), p.State())
		}
		return fmt.Errorf("%w: interrupted during %q; %s", ErrInstall, p.Phase(), p.State())
	}
	pw.Close()
	<-copied
	if err != nil {
		return fmt.Errorf("%w during %q: %v; %s", ErrInstall, p.Phase(), err, p.State())
	}
	return nil
}
