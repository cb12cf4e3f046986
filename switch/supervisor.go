package switcher

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/internal/remote"
)

// The supervisor (supervisor.sh) runs on the host in a transient unit,
// keystone-switch-ID, and talks to keystone through files in its run's
// folder, /run/keystone/switch/ID, each written whole:
//
//	state       refused, activating, waiting, keeping, kept,
//	            rolling-back, rolled-back, rollback-failed, boot-failed
//	reason      why it refused or rolled back
//	old         the system it found running, which a rollback activates
//	generation  the system profile's link before, which a failed keep restores
//	deadline    when it stops waiting for a verdict (Unix seconds)
//	activate-exit, rollback-exit, boot-exit  switch-to-configuration's statuses
//	verdict     written by keystone: keep or rollback (verdict-reason: why)
//
// A verdict only counts while the state is waiting; a folder of its own
// for each run means no verdict of an earlier run can be taken for this one.
//
//go:embed supervisor.sh
var supervisorScript []byte

const (
	stateRoot  = "/run/keystone/switch"
	switchLock = "/run/keystone/switch.lock"
	profile    = "/nix/var/nix/profiles/system"
	nixosLock  = "/run/nixos/switch-to-configuration.lock"
	unitPrefix = "keystone-switch-"
)

// supervisor is one run of the supervisor on a host.
type supervisor struct {
	id, unit, dir string
}

func newSupervisor() supervisor {
	b := make([]byte, 4)
	rand.Read(b)
	id := hex.EncodeToString(b)
	return supervisor{id: id, unit: unitPrefix + id, dir: stateRoot + "/" + id}
}

// start puts the script on the host and starts it with systemd-run: the
// unit, not the SSH session, owns the switch from here, so a switch that
// restarts sshd or the network does not kill it (nixpkgs #39118).
func (s supervisor) start(ctx context.Context, r *remote.Runner, system, action string, confirm, activate time.Duration) error {
	secs := func(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }
	// PATH is the login's, which the script resolves to store paths at once.
	cmd := fmt.Sprintf(`set -e; umask 077; mkdir -p %[1]s; cat > %[1]s/supervisor.sh
systemd-run --unit=%[2]s --description='keystone switch to %[3]s' --collect --no-ask-password --quiet --service-type=exec \
  -E PATH="$PATH" ${LOCALE_ARCHIVE:+-E LOCALE_ARCHIVE="$LOCALE_ARCHIVE"} \
  -E KS_NEW=%[3]s -E KS_ACTION=%[4]s -E KS_STATE=%[1]s -E KS_LOCK=%[5]s -E KS_PROFILE=%[6]s \
  -E KS_CONFIRM=%[7]d -E KS_ACTIVATE=%[8]d /bin/sh %[1]s/supervisor.sh`,
		s.dir, s.unit, system, action, switchLock, profile, secs(confirm), secs(activate))
	out := r.RunInput(ctx, cmd, supervisorScript)
	if out.Err != nil {
		return fmt.Errorf("starting the supervisor: %w", out.Err)
	}
	if out.Exit != 0 {
		return fmt.Errorf("starting the supervisor: systemd-run exited %d: %s", out.Exit, strings.TrimSpace(out.Stderr))
	}
	return nil
}

// status is what the run's folder says.
type status struct {
	State, Reason, Old, Generation       string
	ActivateExit, RollbackExit, BootExit string
	Unit                                 string // systemctl is-active of the unit
}

// gone says the supervisor ended without saying how.
func (st status) gone() bool {
	switch st.Unit {
	case "active", "activating", "deactivating", "reloading":
		return false
	}
	return !st.terminal()
}

// terminal says whether the supervisor is done with the run.
func (st status) terminal() bool {
	switch st.State {
	case "refused", "kept", "rolled-back", "rollback-failed", "boot-failed":
		return true
	}
	return false
}

// read reads the run's folder in one command.
func (s supervisor) read(ctx context.Context, r *remote.Runner) (status, error) {
	// The unit first: a state read after it shows what the supervisor
	// wrote before it ended.
	out := r.Run(ctx, "echo unit=$(systemctl is-active "+s.unit+"); cd "+s.dir+" 2>/dev/null || exit 0; "+
		"for f in state reason old generation activate-exit rollback-exit boot-exit; do printf '%s=' $f; cat $f 2>/dev/null || echo; done")
	if out.Err != nil {
		return status{}, out.Err
	}
	var st status
	for _, l := range strings.Split(out.Stdout, "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "state":
			st.State = v
		case "reason":
			st.Reason = v
		case "old":
			st.Old = v
		case "generation":
			st.Generation = v
		case "activate-exit":
			st.ActivateExit = v
		case "rollback-exit":
			st.RollbackExit = v
		case "boot-exit":
			st.BootExit = v
		case "unit":
			st.Unit = v
		}
	}
	return st, nil
}

// verdict tells the supervisor to keep the new system or roll back, in
// one rename, so that it never reads half a verdict.
func (s supervisor) verdict(ctx context.Context, r *remote.Runner, keep bool, why string) error {
	v := "rollback"
	if keep {
		v = "keep"
	}
	why = strings.ReplaceAll(why, "\n", " ")
	out := r.RunInput(ctx, fmt.Sprintf("cd %[1]s && cat > verdict-reason && printf '%[2]s\\n' > verdict.tmp && mv -f verdict.tmp verdict", s.dir, v), []byte(why+"\n"))
	if out.Err != nil {
		return out.Err
	}
	if out.Exit != 0 {
		return fmt.Errorf("writing the verdict: exit %d: %s", out.Exit, strings.TrimSpace(out.Stderr))
	}
	return nil
}

// journal is the supervisor's journal: what it and switch-to-configuration
// said.
func (s supervisor) journal(ctx context.Context, r *remote.Runner) []string {
	out := r.Run(ctx, "journalctl --no-pager -o cat -n 40 -u "+s.unit)
	lines := strings.Split(strings.TrimSpace(out.Stdout), "\n")
	if out.Err != nil || len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}
