package switcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
	"github.com/keystone-nix/keystone/unlock"
	"github.com/keystone-nix/keystone/verify"
)

// pollEvery is how often keystone reads the supervisor's state.
const pollEvery = 100 * time.Millisecond

// switchHost is one host's switch, from the build to the verdict's end.
func switchHost(ctx context.Context, h *fleet.Host, o Options, ui UI) Result {
	res := Result{Host: h.Name, Target: h.Target.String()}
	say := func(format string, args ...any) { fmt.Fprintf(ui, h.Name+": "+format+"\n", args...) }
	if h.Err != nil {
		return res.fail(Refused, ExitRefused, h.Err)
	}
	e, err := verify.ParseExpectations(h.Expectations)
	if err != nil {
		return res.fail(Refused, ExitRefused, fmt.Errorf("its expectations: %w", err))
	}
	if h.HostKeys.Pinned == nil {
		// nix copy must check the key too, and it is given only the pin.
		return res.fail(Refused, ExitRefused, hint.Errorf("keystone deploy pins it in "+h.PinFile+"; for a host installed otherwise, write its ssh_host_ed25519_key.pub there after checking it on the console",
			"no pinned host key in %s: switch only updates a host whose key is pinned", h.PinFile))
	}
	if !storePathRE.MatchString(h.Config.System) {
		return res.fail(Refused, ExitRefused, fmt.Errorf("the flake's system.build.toplevel %q is not a store path", h.Config.System))
	}
	// Where the boot path's reboots are unlocked, if they are.
	var initrd *unlock.Target
	if o.Boot && o.DiskPassword != nil && h.Config.Unlock.SSH.Enable {
		t, err := unlock.TargetOf(h, unlock.Options{InitrdPort: o.InitrdPort})
		if err != nil {
			return res.fail(Refused, ExitRefused, err)
		}
		t.Hostname = cmp.Or(e.Hostname, t.Hostname) // as the boot path waits for it
		initrd = &t
	}

	// Build.
	remoteBuild := cmp.Or(o.BuildOn, h.Config.Deploy.BuildOn) == "remote"
	sys, drv := h.Config.System, ""
	var cl []pathInfo
	var sf systemFacts
	if remoteBuild {
		if drv, err = drvPath(ctx, h); err != nil {
			return res.fail(Refused, ExitRefused, err)
		}
		if cl, err = closure(ctx, drv); err != nil {
			return res.fail(Refused, ExitRefused, err)
		}
	} else {
		say("building %s", sys)
		built, err := buildLocal(ctx, h, prefixed(ui, h.Name+": nix: "))
		if err != nil {
			return res.fail(Refused, ExitRefused, hint.Wrap(err, "nothing was changed on the host"))
		}
		if built != sys {
			return res.fail(Refused, ExitRefused, fmt.Errorf("nix build gave %s, but the evaluation said %s", built, sys))
		}
		if cl, err = closure(ctx, sys); err != nil {
			return res.fail(Refused, ExitRefused, err)
		}
		if sf, err = readSystem(ctx, sys); err != nil {
			return res.fail(Refused, ExitRefused, err)
		}
	}
	res.New = sys

	// Pre-flight, read-only.
	client, err := sshx.Dial(ctx, h.SSH())
	if err != nil {
		return res.fail(Failed, ExitCannotReach, err)
	}
	defer func() { client.Close() }()
	r := remote.New(client, h.Target.User != "root", o.Timeout)
	f, err := gather(ctx, r, cl)
	if err != nil {
		return res.fail(Failed, ExitCannotReach, err)
	}
	res.Old = f.Current
	if remoteBuild {
		sf.Inhibitors = f.Inhibitors // checked once built on the host
	}
	if err := judge(f, sf, o.Boot); err != nil {
		return res.fail(Refused, ExitRefused, err)
	}
	var opens []string
	if initrd != nil {
		if opens, err = testPassword(ctx, r, e, o.DiskPassword); err != nil {
			return res.fail(Refused, ExitRefused, err)
		}
	}

	// The plan.
	if f.Current == sys {
		say("already runs %s: nothing to switch", sys)
		res.Outcome = Unchanged
		return res
	}
	var need int64
	for _, p := range f.Missing {
		need += p.NarSize
	}
	say("%s -> %s", f.Current, sys)
	say("copy %d of %d paths (%s) to %s; build on %s", len(f.Missing), len(cl), size(need), h.Target.String(), map[bool]string{true: "the host", false: "this machine"}[remoteBuild])
	if !remoteBuild {
		kernel := "unchanged"
		if sf.Kernel != f.Kernel || sf.Initrd != f.Initrd {
			kernel = "changed: they run from the next boot (--boot reboots into them)"
		}
		say("kernel and initrd: %s", kernel)
		if d := diffClosures(ctx, f.Current, sys); d != "" {
			for _, l := range firstLines(d, 15) {
				say("  %s", l)
			}
		}
	}
	if o.Boot {
		say("make it the boot default, reboot, verify; on FAIL make %s the default again and reboot into it", f.Current)
		switch {
		case initrd != nil:
			say("at each reboot, answer its initrd's password request over SSH at %s (the password opens %s)", initrd.Initrd.Addr, strings.Join(opens, ", "))
		case h.Config.Unlock.SSH.Enable:
			say("if its initrd asks for the disk password at a reboot, answer it with keystone unlock %s (or switch with --disk-password-file)", h.Name)
		case o.DiskPassword != nil:
			say("its initrd runs no SSH server (keystone.unlock.ssh.enable is false): --disk-password-file is not used")
		}
	} else {
		say("activate with switch-to-configuration test, verify, then make it the boot default; the host rolls back on its own without a verdict within %s", o.Confirm)
	}
	if o.DryRun {
		say("dry run: nothing was changed")
		res.Outcome = Planned
		return res
	}

	// Copy.
	if remoteBuild {
		if err := copyClosure(ctx, h, drv, prefixed(ui, h.Name+": nix: ")); err != nil {
			return res.fail(Failed, ExitCannotReach, err)
		}
		say("building on the host")
		// A whole system's build: the limit of the switch, not of a command.
		build := remote.New(client, h.Target.User != "root", 2*time.Hour)
		out := build.Run(ctx, "nix-store --realise "+drv+" && tr -d '\\n' <"+sys+"/switch-inhibitors 2>/dev/null; echo")
		if out.Err != nil || out.Exit != 0 || strings.TrimSpace(firstLines(out.Stdout, 1)[0]) != sys {
			return res.fail(Failed, ExitRefused, fmt.Errorf("building %s on the host: %v %s", drv, out.Err, lastLines(out.Stderr, 3)))
		}
		// Built there, the new system's inhibitors are known only now.
		if inh := strings.Split(strings.TrimSpace(out.Stdout)+"\n", "\n")[1]; inh != f.Inhibitors {
			if err := judge(f, systemFacts{Inhibitors: inh}, o.Boot); err != nil {
				return res.fail(Refused, ExitRefused, err)
			}
		}
	} else if len(f.Missing) > 0 {
		say("copying")
		if err := copyClosure(ctx, h, sys, prefixed(ui, h.Name+": nix: ")); err != nil {
			return res.fail(Failed, ExitCannotReach, err)
		}
	}
	res.timing.copied = time.Now()

	sup := newSupervisor()
	res.Unit = sup.unit
	w := &watcher{h: h, r: r, client: client, timeout: o.Timeout, say: say, initrd: initrd, password: o.DiskPassword, out: ui}
	defer func() { w.client.Close() }()
	if o.Boot {
		return w.bootPath(ctx, sup, e, o, &res, say)
	}

	// Activate under the supervisor.
	if err := sup.start(ctx, r, sys, "test", o.Confirm, o.Activate); err != nil {
		return res.fail(Failed, ExitRefused, err)
	}
	say("activating in %s", sup.unit)
	// The supervisor ends by itself: after the activation (bounded), the
	// wait for a verdict and a rollback (bounded again).
	giveUp := time.Now().Add(2*o.Activate + o.Confirm + 30*time.Second)
	st, err := w.until(ctx, sup, giveUp, func(st status) bool { return st.State == "waiting" || st.terminal() })
	if err == nil && st.State == "waiting" {
		say("activated; verifying over a new connection")
		rep := verify.Run(ctx, e, verify.Options{Name: h.Name, SSH: h.SSH(), Timeout: o.Timeout,
			Checks: o.Checks, ScanPorts: o.ScanPorts, System: sys, Wait: min(10*time.Second, o.Confirm/2)})
		res.Verify = &rep
		keep, why := rep.ExitCode() == verify.ExitPass, failedChecks(rep)
		if ctx.Err() != nil {
			keep, why = false, "keystone was interrupted"
		}
		res.timing.verified = time.Now()
		if err := w.verdict(ctx, sup, keep, why, giveUp); err != nil && ctx.Err() == nil {
			say("could not give the verdict (%v): the host rolls back on its own at its deadline", err)
		}
		st, err = w.until(ctx, sup, giveUp, status.terminal)
	}
	if err != nil && ctx.Err() != nil {
		// Interrupted: roll back now rather than at the deadline, if the
		// host still listens; a few seconds, as the signal's grace allows.
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if sup.verdict(stop, w.r, false, "keystone was interrupted") == nil {
			st, err = w.until(stop, sup, time.Now().Add(9*time.Second), status.terminal)
		}
		ctx = stop
	}
	if err != nil {
		return res.fail(Failed, ExitRollbackFailed, hint.Wrap(fmt.Errorf("the host's state is unknown: %w", err),
			fmt.Sprintf("once it answers: readlink /run/current-system, and journalctl -u %s on the host", sup.unit)))
	}
	res.Old = cmp.Or(st.Old, res.Old)
	return w.finish(ctx, sup, st, &res, say)
}

// finish turns the supervisor's last state into the host's result.
func (w *watcher) finish(ctx context.Context, sup supervisor, st status, res *Result, say func(string, ...any)) Result {
	res.timing.done = time.Now()
	if st.State != "kept" {
		res.Journal = sup.journal(ctx, w.r)
		for _, l := range res.Journal {
			say("  journal: %s", l)
		}
	}
	switch st.State {
	case "kept":
		gen := strings.TrimSpace(w.r.Run(ctx, "readlink "+profile).Stdout)
		say("switched: %s runs and boots %s (%s)", res.Host, res.New, cmp.Or(gen, "profile unread"))
		res.Outcome, res.ExitCode = Switched, ExitSwitched
		return *res
	case "rolled-back":
		res.Reason = st.Reason
		say("rolled back to %s: %s", res.Old, st.Reason)
		if st.ActivateExit != "" && st.ActivateExit != "0" || st.BootExit != "" {
			return res.fail(RolledBack, ExitActivation, fmt.Errorf("activation failed (%s), rolled back to %s", st.Reason, res.Old))
		}
		return res.fail(RolledBack, ExitVerifyFailed, fmt.Errorf("rolled back to %s: %s", res.Old, st.Reason))
	case "refused":
		return res.fail(Refused, ExitRefused, errors.New(st.Reason))
	case "rollback-failed":
		return res.fail(Failed, ExitRollbackFailed, hint.Wrap(fmt.Errorf("%s, and the rollback to %s failed (exit %s): the host's state is unknown", st.Reason, res.Old, st.RollbackExit),
			fmt.Sprintf("on the host: %s/bin/switch-to-configuration test, and journalctl -u %s", res.Old, sup.unit)))
	}
	return res.fail(Failed, ExitRollbackFailed, fmt.Errorf("the supervisor ended in state %q", st.State))
}

// watcher follows the supervisor over SSH, dialing again when a switch
// took the connection down.
type watcher struct {
	h       *fleet.Host
	r       *remote.Runner
	client  *sshx.Client
	timeout time.Duration
	say     func(string, ...any)
	away    bool // said that the host is out of reach

	// The boot path's unlock at each reboot; nil initrd: none.
	initrd   *unlock.Target
	password func(int) ([]byte, error)
	out      io.Writer
}

// redial replaces a lost connection, trying once.
func (w *watcher) redial(ctx context.Context) error {
	o := w.h.SSH()
	o.Timeout = 3 * time.Second
	c, err := sshx.Dial(ctx, o)
	if err != nil {
		return err
	}
	w.client.Close()
	w.client, w.r = c, remote.New(c, w.h.Target.User != "root", w.timeout)
	return nil
}

// until reads the supervisor's state until done says so, or deadline.
func (w *watcher) until(ctx context.Context, sup supervisor, deadline time.Time, done func(status) bool) (status, error) {
	var last error
	for {
		st, err := sup.read(ctx, w.r)
		switch {
		case err == nil && done(st):
			return st, nil
		case err == nil && st.gone():
			return st, fmt.Errorf("the supervisor %s ended in state %q without a result (see journalctl -u %s)", sup.unit, st.State, sup.unit)
		case err != nil:
			last = err
			if err := w.redial(ctx); err != nil {
				if !w.away {
					w.away = true
					w.say("lost the connection (%v); without a verdict the host rolls back on its own; trying again until %s", err, deadline.Format(time.TimeOnly))
				}
				time.Sleep(time.Second) // the host is away: it switches, or rolls back
			}
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("no answer from the supervisor by %s: %v", deadline.Format(time.TimeOnly), last)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("interrupted while the switch runs: %w; without a verdict the host rolls back on its own", ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// verdict gives the supervisor the verdict, dialing again if needed.
func (w *watcher) verdict(ctx context.Context, sup supervisor, keep bool, why string, deadline time.Time) error {
	for {
		err := sup.verdict(ctx, w.r, keep, why)
		if err == nil || !errors.Is(err, remote.ErrLost) && w.r.Lost() == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		if w.redial(ctx) != nil {
			time.Sleep(time.Second)
		}
	}
}

// failedChecks says which checks failed, for the supervisor's journal.
func failedChecks(r verify.Report) string {
	if r.Error != "" {
		return "verify could not connect: " + r.Error
	}
	var failed []string
	for _, res := range r.Results {
		if res.Status == verify.Fail {
			failed = append(failed, res.Check+" ("+res.Evidence+")")
		}
	}
	if len(failed) == 0 {
		return "verify passed"
	}
	return "verify failed: " + strings.Join(failed, "; ")
}

func firstLines(s string, n int) []string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("… (%d more lines)", len(lines)-n))
	}
	return lines
}

// prefixed writes each line to w after prefix.
func prefixed(w io.Writer, prefix string) io.Writer { return &prefixWriter{w: w, prefix: prefix} }

type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		line := strings.TrimRight(string(p.buf[:i]), "\r")
		p.buf = p.buf[i+1:]
		if strings.TrimSpace(line) != "" {
			fmt.Fprintf(p.w, "%s%s\n", p.prefix, line)
		}
	}
}
