package switcher

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/newboot"
	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/unlock"
	"github.com/keystone-nix/keystone/verify"
)

// bootPath is the switch through a reboot: the only way a new kernel or
// initrd runs, and the way past inhibitors. The supervisor makes the new
// system the boot default (profile, then switch-to-configuration boot);
// the host reboots into it; verify decides. On FAIL the old generation is
// made the default again and the host reboots into it.
func (w *watcher) bootPath(ctx context.Context, sup supervisor, e *verify.Expectations, o Options, res *Result, say func(string, ...any)) Result {
	before, _, err := newboot.Identity(ctx, w.r)
	if err != nil {
		return res.fail(Failed, ExitCannotReach, err)
	}
	if err := sup.start(ctx, w.r, res.New, "boot", o.Confirm, o.Activate); err != nil {
		return res.fail(Failed, ExitRefused, err)
	}
	st, err := w.until(ctx, sup, time.Now().Add(o.Activate+30*time.Second), status.terminal)
	switch {
	case err != nil:
		return res.fail(Failed, ExitRollbackFailed, hint.Wrap(fmt.Errorf("the host's boot default is unknown: %w", err),
			"on the host: readlink /nix/var/nix/profiles/system, and journalctl -u "+sup.unit))
	case st.State == "refused":
		return res.fail(Refused, ExitRefused, fmt.Errorf("%s: nothing was changed", st.Reason))
	case st.State != "kept":
		res.Journal = sup.journal(ctx, w.r)
		return res.fail(Failed, ExitActivation, fmt.Errorf("making it the boot default failed (switch-to-configuration boot exited %s); %s is the default again", st.BootExit, res.Old))
	}
	newGen := w.generation(ctx)
	say("%s is the boot default (%s); rebooting", res.New, newGen)
	if err := w.reboot(ctx, before, e.Hostname, o.RebootWait); err != nil {
		return res.fail(Failed, ExitRollbackFailed, hint.Wrap(fmt.Errorf("rebooted into %s (%s), and %w", res.New, newGen, err),
			"look at the host's console; the previous generation, "+st.Generation+", is in its boot menu"))
	}
	say("up again; verifying")
	rep := verify.Run(ctx, e, verify.Options{Name: res.Host, SSH: w.h.SSH(), Timeout: o.Timeout,
		Checks: o.Checks, ScanPorts: o.ScanPorts, System: res.New, Wait: time.Minute})
	res.Verify = &rep
	res.timing.verified = time.Now()
	if rep.ExitCode() == verify.ExitPass {
		res.timing.done = time.Now()
		say("switched: %s runs and boots %s (%s)", res.Host, res.New, newGen)
		res.Outcome, res.ExitCode = Switched, ExitSwitched
		return *res
	}
	why := failedChecks(rep)
	if rep.ExitCode() == verify.ExitCannotReach || w.redial(ctx) != nil {
		return res.fail(Failed, ExitRollbackFailed, hint.Wrap(fmt.Errorf("%s, and keystone cannot reach the host to make %s the default again: it runs and boots %s", why, res.Old, res.New),
			"on the console: boot "+st.Generation+" from the boot menu, or run nix-env -p "+profile+" --rollback and "+res.Old+"/bin/switch-to-configuration boot"))
	}
	say("%s; making %s (%s) the default again and rebooting", why, res.Old, st.Generation)
	before, _, err = newboot.Identity(ctx, w.r)
	if err == nil {
		err = w.restoreDefault(ctx, res.Old, st.Generation)
	}
	if err == nil {
		err = w.reboot(ctx, before, e.Hostname, o.RebootWait)
	}
	if err == nil {
		err = w.redial(ctx)
	}
	if err != nil {
		return res.fail(Failed, ExitRollbackFailed, hint.Wrap(fmt.Errorf("%s, and going back to %s failed: %w", why, res.Old, err),
			"look at the host's console; "+st.Generation+" is in its boot menu"))
	}
	running := strings.TrimSpace(w.r.Run(ctx, "readlink -f /run/current-system").Stdout)
	if running != res.Old {
		return res.fail(Failed, ExitRollbackFailed, fmt.Errorf("%s; after the reboot back the host runs %q, not %s", why, running, res.Old))
	}
	res.Reason = why
	say("rolled back: %s runs and boots %s (%s) again", res.Host, res.Old, w.generation(ctx))
	return res.fail(RolledBack, ExitVerifyFailed, fmt.Errorf("rebooted back into %s: %s", res.Old, why))
}

// generation is the system profile's current generation link.
func (w *watcher) generation(ctx context.Context) string {
	return strings.TrimSpace(w.r.Run(ctx, "readlink "+profile).Stdout)
}

// restoreDefault makes the recorded generation the profile's and the boot
// loader's default again.
func (w *watcher) restoreDefault(ctx context.Context, old, gen string) error {
	n := strings.TrimSuffix(gen, "-link")
	n = n[strings.LastIndexByte(n, '-')+1:]
	if gen == "" || !storePathRE.MatchString(old) || strings.Trim(n, "0123456789") != "" {
		return fmt.Errorf("no previous generation recorded (%q)", gen)
	}
	out := w.r.Run(ctx, "nix-env -p "+profile+" --switch-generation "+n+" && "+old+"/bin/switch-to-configuration boot")
	if out.Err != nil || out.Exit != 0 {
		return fmt.Errorf("making %s the default: exit %d %v %s", gen, out.Exit, out.Err, lastLines(out.Stderr, 3))
	}
	return nil
}

// reboot reboots the host and waits for its next boot, answering its
// initrd's password request on the way when it has one to answer.
func (w *watcher) reboot(ctx context.Context, before, hostname string, wait time.Duration) error {
	// --no-block: the command returns before the connection goes down.
	w.r.Run(ctx, "systemctl --no-block reboot")
	if w.initrd == nil {
		return newboot.Wait(ctx, w.h.SSH(), hostname, before, wait)
	}
	_, err := unlock.Run(ctx, *w.initrd, unlock.Options{Password: w.password, Wait: wait, Before: before}, w.out)
	return err
}

// testPassword checks, read-only, that the disk password opens every LUKS
// volume the host's expectations name, before a reboot would need it: a
// wrong file must not leave the host at its prompt. It returns their names.
func testPassword(ctx context.Context, r *remote.Runner, e *verify.Expectations, password func(int) ([]byte, error)) ([]string, error) {
	if e.LUKS == nil || len(e.LUKS.Volumes) == 0 {
		return nil, hint.Errorf("leave out --disk-password-file, or give the host its LUKS volumes in keystone.verify.expectations",
			"its expectations name no LUKS volume to check the disk password against")
	}
	pw, err := password(0)
	if err != nil {
		return nil, err
	}
	defer clear(pw)
	var names []string
	for _, v := range e.LUKS.Volumes {
		out := r.RunSecret(ctx, "keystone-switch", `cryptsetup open --test-passphrase --key-file="$f" -- `+remote.Quote(v.Device), pw)
		if out.Err != nil || out.Exit != 0 {
			return nil, hint.Errorf("check --disk-password-file: it must open the volumes the initrd asks for",
				"the disk password does not open %s (%s): %s; nothing was changed", v.Name, v.Device, cmp.Or(lastLines(out.Stderr, 1), fmt.Sprint(out.Err)))
		}
		names = append(names, v.Name)
	}
	return names, nil
}
