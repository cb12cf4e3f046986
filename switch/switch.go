// Package switcher is `keystone switch`: a day-2 update of an installed
// NixOS host that becomes the boot default only after verify passed on the
// running new system, and that the host rolls back on its own otherwise.
// (The folder is switch/; switch is a Go keyword.)
package switcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/verify"
)

// Exit statuses (README "Day 2").
const (
	ExitSwitched       = 0 // switched and verified: the new system is the boot default
	ExitVerifyFailed   = 1 // verify failed, or gave no verdict in time: rolled back
	ExitCannotReach    = 2 // could not connect before anything changed
	ExitRefused        = 3 // pre-flight refused: nothing changed
	ExitActivation     = 4 // switch-to-configuration failed: rolled back
	ExitRollbackFailed = 5 // the rollback itself failed: the host's state is unknown
)

// Options say how to switch; the hosts say what and where.
type Options struct {
	DryRun  bool          // build, pre-flight and print the plan; change nothing
	Yes     bool          // a fleet does not ask before switching
	Confirm time.Duration // how long the host waits for the verdict after activating
	// Activate bounds switch-to-configuration on the host; 0 means 10m.
	Activate time.Duration
	Parallel int    // hosts switched at a time after the canary
	BuildOn  string // "", auto, local or remote; "" takes keystone.deploy.buildOn
	// Boot is the boot path: make the new system the boot default, reboot,
	// verify; on FAIL the old default again, and a reboot into it.
	Boot bool
	// RebootWait bounds each wait for the host's new boot; 0 means 10m.
	RebootWait time.Duration
	// DiskPassword answers an encrypted host's initrd over its SSH
	// (keystone.unlock.ssh) at each reboot of the boot path, once the
	// pre-flight saw it open the host's LUKS volumes. nil leaves the
	// prompt to keystone unlock, or the console.
	DiskPassword func(attempt int) ([]byte, error)
	// InitrdPort is where the initrd's sshd is reached when that is not
	// keystone.unlock.ssh.port (a VM's forward, a NAT); 0 for that port.
	InitrdPort int

	// The verify gate: checks (nil: all), ports the exposure check scans
	// (nil: verify's default) and each remote command's limit.
	Checks    []verify.Check
	ScanPorts []int
	Timeout   time.Duration
}

// UI is the person running switch: the plan and progress are written to
// it, warnings go to Warn, and Ask reads the answer to the one question a
// fleet asks (an error means nobody can answer).
type UI interface {
	io.Writer
	Warn(msg string)
	Ask(question string) (string, error)
}

// Check refuses what the command line alone shows to be wrong.
func (o Options) Check(hosts fleet.Options) error {
	switch {
	case hosts.All && len(hosts.Names) > 0:
		return exit.UsageError(hint.Errorf("see keystone switch --help", "give host names or --all, not both"))
	case !hosts.All && len(hosts.Names) == 0:
		return exit.UsageError(hint.Errorf("keystone switch NAME, or --all", "switch needs a host name, or --all"))
	case hosts.Target != "" && (hosts.All || len(hosts.Names) > 1):
		return exit.UsageError(hint.Errorf("switch one host at a time with --target", "--target applies to one host"))
	case o.Confirm < 5*time.Second:
		return exit.UsageError(hint.Errorf("e.g. --confirm-timeout 2m", "--confirm-timeout %s: it must be 5s or more (verify runs in it)", o.Confirm))
	case o.Parallel < 1:
		return exit.UsageError(hint.Errorf("--parallel 4 switches four hosts at a time after the canary", "--parallel must be 1 or more, got %d", o.Parallel))
	case o.Timeout <= 0:
		return exit.UsageError(hint.Errorf("e.g. --timeout 30s", "--timeout %s: it must be more than 0", o.Timeout))
	case !slices.Contains([]string{"", "auto", "local", "remote"}, o.BuildOn):
		return exit.UsageError(hint.Errorf("--build-on takes auto, local or remote", "--build-on %q is not supported", o.BuildOn))
	case o.RebootWait < 0:
		return exit.UsageError(hint.Errorf("e.g. --reboot-timeout 10m", "--reboot-timeout %s: it cannot be negative", o.RebootWait))
	case (o.DiskPassword != nil || o.InitrdPort != 0) && !o.Boot:
		return exit.UsageError(hint.Errorf("add --boot, or leave them out: a live switch does not reboot",
			"--disk-password-file and --initrd-port answer the initrd at the reboots of --boot"))
	case o.InitrdPort < 0 || o.InitrdPort > 65535:
		return exit.UsageError(hint.Errorf("give a TCP port from 1 to 65535", "--initrd-port %d is not a port", o.InitrdPort))
	}
	return nil
}

// Result is what happened to one host.
type Result struct {
	Host     string         `json:"host"`
	Target   string         `json:"target"`
	Outcome  string         `json:"outcome"` // switched, rolled back, refused, planned, unchanged, not started, failed
	Old      string         `json:"old,omitempty"`
	New      string         `json:"new,omitempty"`
	Unit     string         `json:"unit,omitempty"`   // the supervisor's transient unit
	Reason   string         `json:"reason,omitempty"` // why it was rolled back or refused
	Verify   *verify.Report `json:"verify,omitempty"`
	Journal  []string       `json:"journal,omitempty"` // the supervisor's journal, after a rollback
	ExitCode int            `json:"exitCode"`
	Seconds  float64        `json:"seconds"`
	Err      error          `json:"-"`

	timing timing
}

// timing is where the time of one switch went, for the benchmark: the
// closure is on the host, verify gave its verdict, the supervisor is done.
type timing struct {
	copied, verified, done time.Time
}

// Outcomes.
const (
	Switched   = "switched"
	RolledBack = "rolled back"
	Refused    = "refused"
	Planned    = "planned"
	Unchanged  = "unchanged"
	NotStarted = "not started"
	Failed     = "failed"
)

// Run switches hosts: the first (the canary) alone, then the others
// o.Parallel at a time, stopping at the first host that did not switch.
// It returns each host's result, and the hosts' errors joined.
func Run(ctx context.Context, hosts []fleet.Host, o Options, ui UI) ([]Result, error) {
	if o.Activate == 0 {
		o.Activate = 10 * time.Minute
	}
	if o.RebootWait == 0 {
		o.RebootWait = 10 * time.Minute
	}
	results := make([]Result, len(hosts))
	for i := range hosts {
		results[i] = Result{Host: hosts[i].Name, Target: hosts[i].Target.String(), Outcome: NotStarted}
	}
	if len(hosts) > 1 && !o.Yes && !o.DryRun {
		names := make([]string, len(hosts))
		for i, h := range hosts {
			names[i] = h.Name
		}
		answer, err := ui.Ask(fmt.Sprintf("switch %d hosts (%s), %s first? type yes: ", len(hosts), strings.Join(names, ", "), names[0]))
		if err != nil {
			return results, exit.With(ExitRefused, hint.Errorf("pass --yes to switch a fleet without asking", "cannot ask before switching %d hosts: %v", len(hosts), err))
		}
		if strings.TrimSpace(answer) != "yes" {
			return results, exit.With(ExitRefused, errors.New("not confirmed: nothing was changed"))
		}
	}
	one := func(i int) {
		start := time.Now()
		results[i] = switchHost(ctx, &hosts[i], o, ui)
		results[i].Seconds = time.Since(start).Seconds()
	}
	one(0)
	if ok := okOutcome(results[0]); ok {
		sem := make(chan struct{}, o.Parallel)
		var wg sync.WaitGroup
		var mu sync.Mutex
		stop := false
		for i := 1; i < len(hosts); i++ {
			sem <- struct{}{}
			mu.Lock()
			stopped := stop
			mu.Unlock()
			if stopped || ctx.Err() != nil {
				<-sem
				break
			}
			wg.Go(func() {
				defer func() { <-sem }()
				one(i)
				if !okOutcome(results[i]) {
					mu.Lock()
					stop = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	var errs []error
	var stoppedBy, notStarted []string
	for i, r := range results {
		switch {
		case r.Err != nil:
			errs = append(errs, fleet.Named(r.Host, r.Err))
			stoppedBy = append(stoppedBy, r.Host)
		case r.Outcome == NotStarted:
			results[i].Reason = "not started: " + strings.Join(stoppedBy, ", ") + " did not switch"
			results[i].ExitCode = ExitRefused // nothing changed on it
			notStarted = append(notStarted, r.Host)
		}
	}
	if len(notStarted) > 0 {
		// The run's status stays that of the hosts that stopped it: a
		// rollback (1) must not read as "refused, nothing changed" (3).
		errs = append(errs, exit.With(Status(results), fmt.Errorf("not switched, as %s did not: %s", strings.Join(stoppedBy, ", "), strings.Join(notStarted, ", "))))
	}
	return results, errors.Join(errs...)
}

// Status is the run's exit status: the worst of the hosts that were
// started; hosts a failure kept from starting do not raise it.
func Status(results []Result) int {
	code := 0
	for _, r := range results {
		if r.Outcome != NotStarted {
			code = max(code, r.ExitCode)
		}
	}
	return code
}

func okOutcome(r Result) bool {
	return r.Err == nil && (r.Outcome == Switched || r.Outcome == Planned || r.Outcome == Unchanged)
}

// fail ends a host's result with err and its exit status.
func (r *Result) fail(outcome string, code int, err error) Result {
	r.Outcome, r.ExitCode, r.Err = outcome, code, exit.With(code, err)
	if r.Reason == "" && err != nil {
		r.Reason = err.Error()
	}
	return *r
}
