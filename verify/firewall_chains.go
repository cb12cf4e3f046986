package verify

import (
	"slices"
	"strconv"
	"strings"
)

// readChains are the filter chains ParseIptablesSave reads or knows the
// meaning of: NixOS's own.
var readChains = []string{"INPUT", "nixos-fw", "nixos-fw-accept", "nixos-fw-refuse", "nixos-fw-log-refuse"}

// IptablesUnreadChains lists the user chains of the filter table that INPUT
// or nixos-fw jump or go to and that ParseIptablesSave does not read: an
// ACCEPT in one of them opens ports the firewall check cannot see.
func IptablesUnreadChains(out string) []string {
	var (
		table    string
		declared = map[string]bool{}
		targets  []string
	)
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			continue
		case table != "filter":
			continue
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) > 0 {
				declared[f[0]] = true
			}
			continue
		}
		args, err := splitIptablesArgs(line)
		if err != nil || len(args) < 2 || (args[0] != "-A" && args[0] != "-I") || (args[1] != "INPUT" && args[1] != "nixos-fw") {
			continue
		}
		for i := 2; i+1 < len(args); i++ {
			switch args[i] {
			case "-j", "--jump", "-g", "--goto":
				targets = append(targets, args[i+1])
			}
		}
	}
	var unread []string
	for _, t := range targets {
		if declared[t] && !slices.Contains(readChains, t) && !slices.Contains(unread, t) {
			unread = append(unread, t)
		}
	}
	return unread
}

// warnUnreadChains turns a firewall PASS into a WARN when the rules jump
// into chains that the check did not read. It looks at every output that
// is iptables-save's, whatever the command order.
func warnUnreadChains(c Check) Check {
	judge := c.Judge
	c.Judge = func(e *Expectations, outs []Output) (Status, string) {
		status, ev := judge(e, outs)
		if status != Pass {
			return status, ev
		}
		var unread []string
		for _, o := range outs {
			if strings.HasPrefix(o.Stdout, "*") || strings.Contains(o.Stdout, "\n*filter") {
				for _, ch := range IptablesUnreadChains(o.Stdout) {
					if !slices.Contains(unread, ch) {
						unread = append(unread, ch)
					}
				}
			}
		}
		if len(unread) == 0 {
			return status, ev
		}
		return Warn, evidence(ev, "the rules jump to chain "+strings.Join(unread, ", ")+
			", which this check does not read: ports accepted there are not counted")
	}
	return c
}

// sshdPorts reads sshd -T's port lines.
func sshdPorts(lines []string) []int {
	var ports []int
	for _, l := range lines {
		if n, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			ports = append(ports, n)
		}
	}
	return sortedUnique(ports)
}

func sortedUnique(ns []int) []int {
	out := slices.Clone(ns)
	slices.Sort(out)
	return slices.Compact(out)
}
