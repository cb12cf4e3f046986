package verify

import (
	"errors"
	"fmt"
	"strings"
)

// ParseIptablesSave reads the output of iptables-save (or ip6tables-save)
// on a NixOS host whose firewall uses the iptables backend
// (nixos/modules/services/networking/firewall-iptables.nix).
//
// present is true when the filter table has the nixos-fw chain and INPUT
// jumps to it: firewall-stop removes that jump but leaves the chains, so a
// stopped firewall is not present. Empty output (no tables loaded) is not
// present and not an error.
//
// open is the TCP and UDP ports that the rules accept from everyone: rules
// in nixos-fw, and in INPUT before its jump to nixos-fw, that jump to
// nixos-fw-accept or ACCEPT. A rule limited to an input interface (-i, as
// networking.firewall.interfaces.<name> and trustedInterfaces make), to a
// source or destination address (-s, -d, as the DHCPv6 rule to fe80::/64),
// to an ipset or MAC address, or to conntrack states without NEW (the
// RELATED,ESTABLISHED rule) does not count. A rule without a port match
// opens 1-65535; one without -p opens both protocols; a negated port
// opens the complement. Rules in other chains that nixos-fw jumps to are
// not followed.
func ParseIptablesSave(out string) (present bool, open Ports, err error) {
	var (
		table               string
		sawTable, hasChain  bool
		hooked, afterHook   bool
		inputRules, fwRules [][]string
		inputLines, fwLines []int
	)
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			table, sawTable = line[1:], true
			continue
		case line == "COMMIT":
			table = ""
			continue
		case !sawTable:
			return false, Ports{}, fmt.Errorf("line %d: not iptables-save output: %q", i+1, line)
		case table != "filter":
			continue
		case strings.HasPrefix(line, ":"):
			if f := strings.Fields(line[1:]); len(f) > 0 && f[0] == "nixos-fw" {
				hasChain = true
			}
			continue
		}
		args, err := splitIptablesArgs(line)
		if err != nil {
			return false, Ports{}, fmt.Errorf("line %d: %v", i+1, err)
		}
		if len(args) < 2 || (args[0] != "-A" && args[0] != "-I") {
			continue
		}
		chain, rule := args[1], args[2:]
		switch chain {
		case "INPUT":
			if len(rule) == 2 && (rule[0] == "-j" || rule[0] == "--jump") && rule[1] == "nixos-fw" {
				hooked, afterHook = true, true
				continue
			}
			if !afterHook {
				inputRules, inputLines = append(inputRules, rule), append(inputLines, i+1)
			}
		case "nixos-fw":
			fwRules, fwLines = append(fwRules, rule), append(fwLines, i+1)
		}
	}
	present = hasChain && hooked
	if !present {
		return false, Ports{}, nil
	}
	rules, lines := append(inputRules, fwRules...), append(inputLines, fwLines...)
	for k, rule := range rules {
		if err := iptablesRuleOpens(rule, &open); err != nil {
			return present, Ports{}, fmt.Errorf("line %d: %v", lines[k], err)
		}
	}
	return present, open.Normalized(), nil
}

// iptablesRuleOpens adds to open what one rule (the words after "-A
// CHAIN") accepts from everyone.
func iptablesRuleOpens(rule []string, open *Ports) error {
	var (
		target     string
		protos     = bothProtos
		ports      []PortRange
		hasPort    bool
		restricted bool
		notNew     bool
	)
	for i := 0; i < len(rule); i++ {
		neg := false
		if rule[i] == "!" {
			neg = true
			i++
			if i >= len(rule) {
				return errors.New("\"!\" at the end of the rule")
			}
		}
		opt := rule[i]
		val := ""
		if strings.HasPrefix(opt, "-") && i+1 < len(rule) && rule[i+1] != "!" && !isIptablesOption(rule[i+1]) {
			val = rule[i+1]
		}
		switch opt {
		case "-j", "--jump", "-g", "--goto":
			target = val
		case "-p", "--protocol":
			if !neg {
				switch strings.ToLower(val) {
				case "tcp", "6":
					protos = protoSet{tcp: true}
				case "udp", "17":
					protos = protoSet{udp: true}
				case "all", "0":
				default:
					protos = protoSet{}
				}
			}
		case "-i", "--in-interface":
			if !neg && val != "+" {
				restricted = true
			}
		case "-s", "--source", "-d", "--destination":
			if !neg && val != "0.0.0.0/0" && val != "::/0" {
				restricted = true
			}
		case "--src-range", "--dst-range", "--mac-source", "--match-set":
			if !neg {
				restricted = true
			}
		case "--ctstate", "--state":
			hasNew := false
			for _, s := range strings.Split(val, ",") {
				if s == "NEW" || s == "UNTRACKED" {
					hasNew = true
				}
			}
			if hasNew == neg {
				notNew = true
			}
		case "--dport", "--destination-port", "--dports", "--destination-ports", "--ports":
			rs, err := parseIptablesPorts(val)
			if err != nil {
				return err
			}
			ports, hasPort = narrow(ports, hasPort, rs, neg), true
		}
		if val != "" {
			i++
		}
	}
	if target != "nixos-fw-accept" && target != "ACCEPT" {
		return nil
	}
	if restricted || notNew {
		return nil
	}
	if !hasPort {
		ports = []PortRange{allPorts}
	}
	open.add(protos, ports)
	return nil
}

// isIptablesOption tells a word that starts an option ("-j", "--dport")
// from a value.
func isIptablesOption(s string) bool {
	t := strings.TrimPrefix(s, "--")
	if t == s {
		t = strings.TrimPrefix(s, "-")
	}
	return t != s && t != "" && (t[0] >= 'a' && t[0] <= 'z' || t[0] >= 'A' && t[0] <= 'Z')
}

// parseIptablesPorts reads "22", "1000:2000", ":1024", "1024:" or a
// multiport list "22,80,1000:2000".
func parseIptablesPorts(s string) ([]PortRange, error) {
	if s == "" {
		return nil, errors.New("port match without a port")
	}
	var out []PortRange
	for _, part := range strings.Split(s, ",") {
		from, to, isRange := strings.Cut(part, ":")
		if !isRange {
			p, err := parsePort(part)
			if err != nil {
				return nil, err
			}
			out = append(out, PortRange{p, p})
			continue
		}
		r := PortRange{0, 65535}
		var err error
		if from != "" {
			if r.From, err = parsePort(from); err != nil {
				return nil, err
			}
		}
		if to != "" {
			if r.To, err = parsePort(to); err != nil {
				return nil, err
			}
		}
		if r.From > r.To {
			r.From, r.To = r.To, r.From
		}
		out = append(out, r)
	}
	return out, nil
}

func intersectRanges(a, b []PortRange) []PortRange {
	var out []PortRange
	for _, x := range mergeRanges(a) {
		for _, y := range mergeRanges(b) {
			if lo, hi := max(x.From, y.From), min(x.To, y.To); lo <= hi {
				out = append(out, PortRange{lo, hi})
			}
		}
	}
	return out
}

// splitIptablesArgs splits a rule line into words the way iptables-save
// quotes them: double quotes around words with spaces, backslash escapes
// inside.
func splitIptablesArgs(line string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inQ   bool
		inArg bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQ && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQ, inArg = !inQ, true
		case !inQ && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inQ {
		return nil, errors.New("unterminated quote")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}
