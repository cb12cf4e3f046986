package verify

import (
	"strings"
)

// UnitState is one unit's block of `systemctl show -p
// Id,LoadState,ActiveState,SubState,Result`. A unit systemd does not know
// has LoadState "not-found". A oneshot service with RemainAfterExit (such
// as firewall.service) is healthy as ActiveState "active", SubState
// "exited".
type UnitState struct {
	Id, LoadState, ActiveState, SubState, Result string
	// Names holds the unit's aliases too (with -p Names): Debian's
	// sshd.service is an alias whose Id is ssh.service.
	Names []string
}

// ParseSystemctlShow reads `systemctl show -p … UNIT…`: one block of
// KEY=VALUE lines per unit, blocks separated by blank lines, properties in
// systemd's order rather than the -p order. It keys each block by its Id;
// a block without Id is dropped. systemctl exits 0 even for unknown units,
// whose Id is the name as given. A block is also found under each of its
// Names.
func ParseSystemctlShow(out string) map[string]UnitState {
	units := map[string]UnitState{}
	var cur UnitState
	flush := func() {
		if cur.Id != "" {
			units[cur.Id] = cur
			for _, n := range cur.Names {
				if _, taken := units[n]; !taken {
					units[n] = cur
				}
			}
		}
		cur = UnitState{}
	}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "Id":
			if cur.Id != "" { // a second Id without a blank line between
				flush()
			}
			cur.Id = v
		case "LoadState":
			cur.LoadState = v
		case "ActiveState":
			cur.ActiveState = v
		case "SubState":
			cur.SubState = v
		case "Result":
			cur.Result = v
		case "Names":
			cur.Names = strings.Fields(v)
		}
	}
	flush()
	return units
}

// ParseFailedUnits reads `systemctl list-units --failed --plain
// --no-legend`: the unit name is each line's first word. The "●" (or "*")
// marker that systemctl prints without --plain is skipped.
func ParseFailedUnits(out string) []string {
	var units []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "●" || f[0] == "*" || f[0] == "×") {
			f = f[1:]
		}
		if len(f) == 0 {
			continue
		}
		units = append(units, f[0])
	}
	return units
}

// systemStates is what `systemctl is-system-running` prints.
var systemStates = []string{"initializing", "starting", "running", "degraded", "maintenance", "stopping", "offline", "unknown"}

// ParseSystemState reads `systemctl is-system-running` (which exits
// non-zero for every state but running): its state, and whether it is
// one systemctl documents.
func ParseSystemState(out string) (state string, ok bool) {
	state = strings.TrimSpace(out)
	for _, s := range systemStates {
		if state == s {
			return state, true
		}
	}
	return state, false
}
