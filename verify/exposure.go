package verify

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/text"
)

// loopbackForward is the probe's answer for a target on loopback.
const loopbackForward = "loopback-forward"

// exposureCheck scans the host from the verifier, at the address it was
// reached at and at each global or unique-local IPv6 address it has, and
// fails on any open TCP port that the config does not open.
var exposureCheck = Check{
	Name:    "exposure",
	Applies: always,
	Commands: func(*Expectations) []string {
		// What listens, so the scan covers it whatever --ports says, and
		// the host's addresses, so the scan covers each family.
		return []string{"ss -Htln", "ip -j addr"}
	},
	Probe: scanProbe,
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		o := outs[len(outs)-1]
		if o.Err != nil {
			return Fail, "scanning: " + o.Err.Error()
		}
		if o.Stdout == loopbackForward {
			return Skip, "reached through a port forward on loopback: a scan would see this machine, not the host (the firewall check still reads the host's rules)"
		}
		want := expectedTCP(e, o.Stderr)
		var fails, warns, opens, notes []string
		for i, line := range strings.Split(strings.TrimSpace(o.Stdout), "\n") {
			kind, rest, _ := strings.Cut(line, " ")
			addr, ports := "", line
			switch kind {
			case "unreachable":
				a, why, _ := strings.Cut(rest, " ")
				notes = append(notes, fmt.Sprintf("could not reach %s (%s), not scanned there", a, why))
				continue
			case "open":
				addr, ports, _ = strings.Cut(rest, " ")
			}
			open := parseInts(ports)
			var unexpected, missing []string
			for _, p := range open {
				if !slices.Contains(want, p) {
					unexpected = append(unexpected, strconv.Itoa(p))
				}
			}
			for _, p := range want {
				if !slices.Contains(open, p) {
					missing = append(missing, strconv.Itoa(p))
				}
			}
			at := ""
			if addr != "" {
				at = " at " + addr
			}
			opens = append(opens, fmt.Sprintf("open TCP %s%s", joinInts(open), at))
			if len(unexpected) > 0 {
				initrd := ""
				if e.Unlock != nil && slices.Contains(open, e.Unlock.Port) && !slices.Contains(want, e.Unlock.Port) {
					initrd = fmt.Sprintf(" (%d is the initrd's SSH port, which must be closed once the system runs)", e.Unlock.Port)
				}
				fails = append(fails, fmt.Sprintf("open TCP ports %s%s, only %s expected%s", strings.Join(unexpected, ","), at, joinInts(want), initrd))
			}
			// Only where verify reached the host: a service may well
			// listen on one family alone.
			if i == 0 && len(missing) > 0 {
				warns = append(warns, fmt.Sprintf("open TCP %s%s; expected %s open too but nothing answers there", joinInts(open), at, strings.Join(missing, ",")))
			}
		}
		scanned := "(" + text.FirstLine(o.Stderr) + ")"
		switch {
		case len(fails) > 0:
			return Fail, evidence(strings.Join(fails, "; "), strings.Join(notes, "; ")) + " " + scanned
		case len(warns) > 0:
			// The warning already lists the first address's ports.
			return Warn, evidence(strings.Join(warns, "; "), strings.Join(opens[1:], "; "), strings.Join(notes, "; ")) + " " + scanned
		case len(notes) > 0:
			return Warn, evidence(strings.Join(opens, "; "), strings.Join(notes, "; ")) + " " + scanned
		}
		return Pass, strings.Join(opens, "; ") + " " + scanned
	},
}
