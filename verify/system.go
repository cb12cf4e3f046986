package verify

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// storePathRE is a top-level Nix store path, as nix eval prints a
// toplevel's outPath.
var storePathRE = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[[:alnum:]+._?=-]+$`)

// systemCheck tells whether the host runs what the flake builds: its
// /run/current-system against Options.System, the toplevel out path the
// caller evaluated. It is asked for (--drift) because that evaluation costs
// a full one.
var systemCheck = Check{
	Name:    "system",
	Applies: always,
	Commands: func(*Expectations) []string {
		// The running system, then the system profile's generation that
		// points at it, with the time it was made.
		return []string{`cur=$(readlink /run/current-system) || { echo 'no /run/current-system: not a NixOS host' >&2; exit 3; }; echo "$cur"; ` +
			`for l in /nix/var/nix/profiles/system-*-link; do [ "$(readlink "$l")" = "$cur" ] && stat -c '%n %Y' -- "$l"; done; true`}
	},
	Probe: func(_ context.Context, _ *Expectations, h Host) Output {
		return Output{Stdout: h.System}
	},
	Judge: func(_ *Expectations, outs []Output) (Status, string) {
		want := outs[len(outs)-1].Stdout
		if want == "" {
			return Skip, "not asked (--drift)"
		}
		if !storePathRE.MatchString(want) {
			return Fail, fmt.Sprintf("the flake's toplevel %q is not a store path", want)
		}
		if msg, ok := failed("readlink /run/current-system", outs[0]); !ok {
			return Fail, msg
		}
		running, gen := parseCurrentSystem(outs[0].Stdout)
		if running == want {
			return Pass, "running " + running + gen
		}
		return Fail, fmt.Sprintf("running %s%s, the flake builds %s", running, gen, want)
	},
}

// parseCurrentSystem reads systemCheck's command: the running system and
// " (generation N of DATE)" when a generation of the system profile
// points at it.
func parseCurrentSystem(out string) (running, gen string) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	running = strings.TrimSpace(lines[0])
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		base := f[0][strings.LastIndexByte(f[0], '/')+1:]
		n := strings.TrimSuffix(strings.TrimPrefix(base, "system-"), "-link")
		secs, err := strconv.ParseInt(f[1], 10, 64)
		if _, nerr := strconv.Atoi(n); nerr != nil || err != nil {
			continue
		}
		gen = fmt.Sprintf(" (generation %s of %s)", n, time.Unix(secs, 0).UTC().Format("2006-01-02 15:04 UTC"))
	}
	return running, gen
}
