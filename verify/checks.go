package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/keystone-nix/keystone/internal/text"
)

// All is every check, in report order.
func All() []Check {
	return []Check{
		installerCheck,
		systemCheck,
		hostnameCheck,
		bootCheck,
		servicesCheck,
		sshdCheck,
		warnUnreadChains(firewallCheck),
		ipv6Check,
		exposureCheck,
		zfsCheck,
		luksCheck,
		tpmCheck,
		initrdKeyCheck,
		mountsCheck,
		mdnsCheck,
	}
}

// Names is every check name, for --only and --skip.
func Names() []string {
	names := []string{"ssh"}
	for _, c := range All() {
		names = append(names, c.Name)
	}
	return names
}

var installerCheck = Check{
	Name:     "installer",
	Applies:  always,
	Commands: func(*Expectations) []string { return []string{"cat /etc/os-release"} },
	Judge: func(_ *Expectations, outs []Output) (Status, string) {
		if msg, ok := failed("reading /etc/os-release", outs[0]); !ok {
			return Fail, msg
		}
		rel := ParseOSRelease(outs[0].Stdout)
		id := rel["PRETTY_NAME"]
		if v := rel["VARIANT_ID"]; v != "" {
			id += ", VARIANT_ID=" + v
		}
		if rel["VARIANT_ID"] == "installer" {
			return Fail, "still the NixOS installer (" + id + "): the install did not finish or did not reboot"
		}
		return Pass, id
	},
}

var hostnameCheck = Check{
	Name:     "hostname",
	Applies:  always,
	Commands: func(*Expectations) []string { return []string{"cat /proc/sys/kernel/hostname"} },
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		if msg, ok := failed("reading the hostname", outs[0]); !ok {
			return Fail, msg
		}
		got := strings.TrimSpace(outs[0].Stdout)
		if got != e.Hostname {
			return Fail, fmt.Sprintf("hostname is %q, want %q", got, e.Hostname)
		}
		return Pass, got
	},
}

var bootCheck = Check{
	Name:    "boot",
	Applies: always,
	Commands: func(*Expectations) []string {
		return []string{"systemctl is-system-running", "systemctl list-units --failed --plain --no-legend"}
	},
	Judge: func(_ *Expectations, outs []Output) (Status, string) {
		if outs[0].Err != nil {
			return Fail, "systemctl is-system-running: " + outs[0].Err.Error()
		}
		state, known := ParseSystemState(outs[0].Stdout)
		failedUnits := ParseFailedUnits(outs[1].Stdout)
		if !known {
			return Fail, "systemctl is-system-running: " + evidence(state, text.FirstLine(outs[0].Stderr))
		}
		switch state {
		case "running":
			return Pass, "running"
		case "degraded":
			return Fail, "degraded: failed units " + strings.Join(failedUnits, ", ")
		case "starting", "initializing":
			return Warn, state + " (still booting; --wait waits for it)"
		}
		return Fail, evidence(state, strings.Join(failedUnits, ", "))
	},
}

var servicesCheck = Check{
	Name: "services",
	Applies: func(e *Expectations) (bool, string) {
		return len(e.Services) > 0, "no services expected"
	},
	Commands: func(e *Expectations) []string {
		return []string{"systemctl show -p Id,Names,LoadState,ActiveState,SubState -- " + strings.Join(quoteAll(e.Services), " ")}
	},
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		if msg, ok := failed("systemctl show", outs[0]); !ok {
			return Fail, msg
		}
		units := ParseSystemctlShow(outs[0].Stdout)
		var bad, good []string
		for _, name := range e.Services {
			u, found := units[name]
			switch {
			case !found || u.LoadState == "not-found":
				bad = append(bad, name+" not found")
			case u.ActiveState != "active":
				bad = append(bad, fmt.Sprintf("%s %s (%s)", name, u.ActiveState, u.SubState))
			default:
				good = append(good, fmt.Sprintf("%s (%s)", strings.TrimSuffix(name, ".service"), u.SubState))
			}
		}
		if len(bad) > 0 {
			return Fail, strings.Join(bad, ", ")
		}
		return Pass, "active: " + strings.Join(good, ", ")
	},
}

// keyOnly is what sshd -T prints for root login with keys only, before and
// after OpenSSH 10.0 renamed it.
var keyOnly = []string{"prohibit-password", "without-password"}

var sshdCheck = Check{
	Name:     "sshd",
	Applies:  func(e *Expectations) (bool, string) { return e.SSHD != nil, "sshd is not enabled in the config" },
	Commands: func(*Expectations) []string { return []string{"sshd -T 2>&1 || /usr/sbin/sshd -T"} },
	Probe:    probeAuthMethods,
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		if msg, ok := failed("sshd -T", outs[0]); !ok {
			return Fail, msg
		}
		cfg := ParseSSHDConfig(outs[0].Stdout)
		get := func(k string) string {
			if v := cfg[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		var bad []string
		root := get("permitrootlogin")
		wantRoot := e.SSHD.PermitRootLogin
		if slices.Contains(keyOnly, wantRoot) {
			if !slices.Contains(keyOnly, root) && root != "no" {
				bad = append(bad, "root may log in with a password (permitrootlogin "+root+")")
			}
		} else if root != wantRoot {
			bad = append(bad, fmt.Sprintf("permitrootlogin %s, want %s", root, wantRoot))
		}
		if got := get("passwordauthentication") == "yes"; got != e.SSHD.PasswordAuthentication {
			bad = append(bad, "passwordauthentication "+get("passwordauthentication"))
		}
		if got := get("kbdinteractiveauthentication") == "yes"; got != e.SSHD.KbdInteractiveAuthentication {
			bad = append(bad, "kbdinteractiveauthentication "+get("kbdinteractiveauthentication"))
		}
		ports := sshdPorts(cfg["port"])
		if want := sortedUnique(e.SSHD.Ports); len(want) > 0 && !slices.Equal(ports, want) {
			bad = append(bad, fmt.Sprintf("sshd listens on port %s, want %s", joinInts(ports), joinInts(want)))
		}
		probe := outs[len(outs)-1]
		offered := strings.Fields(probe.Stdout)
		if probe.Err != nil {
			bad = append(bad, "asking the server for its auth methods: "+probe.Err.Error())
		} else if !e.SSHD.PasswordAuthentication && !e.SSHD.KbdInteractiveAuthentication {
			for _, m := range offered {
				if m == "password" || m == "keyboard-interactive" {
					bad = append(bad, "the server offers "+m+" login")
				}
			}
		}
		if len(bad) > 0 {
			return Fail, strings.Join(bad, "; ")
		}
		return Pass, fmt.Sprintf("port %s, permitrootlogin %s, passwordauthentication %s, kbdinteractiveauthentication %s; offers %s",
			joinInts(ports), root, get("passwordauthentication"), get("kbdinteractiveauthentication"), strings.Join(offered, ","))
	},
}

var firewallCheck = Check{
	Name: "firewall",
	Applies: func(e *Expectations) (bool, string) {
		if e.Firewall == nil || !e.Firewall.Enable {
			return false, "the firewall is off in the config"
		}
		// firewalld keeps the ports in its own zones (NixOS puts them in
		// zone nixos-fw-default), which neither nixos-fw chain shows: a
		// judge of those chains would FAIL a healthy host.
		if e.Firewall.Backend == "firewalld" {
			return false, "the firewalld backend is not read (the services check sees firewalld.service; the exposure check scans TCP)"
		}
		return true, ""
	},
	Commands: func(e *Expectations) []string {
		if e.Firewall.Backend == "nftables" {
			return []string{"nft -j list ruleset"}
		}
		return []string{"iptables-save", "ip6tables-save"}
	},
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		want := Ports{TCP: singlePorts(e.Firewall.TCP), UDP: singlePorts(e.Firewall.UDP)}
		var bad, good []string
		judge := func(what string, present bool, open Ports, err error) {
			switch {
			case err != nil:
				bad = append(bad, what+": "+err.Error())
			case !present:
				bad = append(bad, what+": no nixos-fw rules: the firewall is not running")
			case !open.Equal(want):
				bad = append(bad, fmt.Sprintf("%s opens %s, want %s", what, open, want))
			default:
				good = append(good, what+" opens "+open.String())
			}
		}
		if e.Firewall.Backend == "nftables" {
			if msg, ok := failed("nft", outs[0]); !ok {
				return Fail, msg
			}
			present, open, err := ParseNftJSON([]byte(outs[0].Stdout))
			judge("nftables inet nixos-fw", present, open, err)
		} else {
			if msg, ok := failed("iptables-save", outs[0]); !ok {
				return Fail, msg
			}
			present, open, err := ParseIptablesSave(outs[0].Stdout)
			judge("iptables", present, open, err)
			// IPv6 may be off on the host: judge it only when it has rules.
			if strings.Contains(outs[1].Stdout, "nixos-fw") {
				present, open, err := ParseIptablesSave(outs[1].Stdout)
				judge("ip6tables", present, open, err)
			}
		}
		if len(bad) > 0 {
			return Fail, strings.Join(bad, "; ")
		}
		return Pass, strings.Join(good, "; ")
	},
}

func singlePorts(ports []int) []PortRange {
	out := make([]PortRange, 0, len(ports))
	for _, p := range ports {
		out = append(out, PortRange{p, p})
	}
	return out
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = shellQuote(s)
	}
	return out
}

// expectedTCP is the firewall's TCP ports, or just SSH without a firewall.
func expectedTCP(e *Expectations, _ string) []int {
	if e.Firewall != nil && e.Firewall.Enable {
		return e.Firewall.TCP
	}
	if e.SSHD != nil {
		return e.SSHD.Ports
	}
	return []int{22}
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

var mdnsCheck = Check{
	Name:    "mdns",
	Applies: func(e *Expectations) (bool, string) { return e.MDNS != nil, "avahi is not enabled in the config" },
	Commands: func(e *Expectations) []string {
		// Asking a stopped avahi would start it through D-Bus activation:
		// verify changes nothing, so it looks first.
		return []string{"systemctl is-active --quiet avahi-daemon.service || { echo 'avahi-daemon is not running' >&2; exit 3; }; " +
			"avahi-resolve -4 -n -- " + shellQuote(e.Hostname+".local")}
	},
	Probe: func(ctx context.Context, e *Expectations, h Host) Output {
		// An on-link IPv6 target is asked over IPv6; a link-local one
		// names its interface after the %.
		addr, zone, _ := strings.Cut(h.Addr, "%")
		ip := net.ParseIP(addr)
		if ip == nil {
			ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", h.Addr)
			if err != nil || len(ips) == 0 {
				return Output{Err: fmt.Errorf("resolving %s: %v", h.Addr, err)}
			}
			ip = ips[0]
		}
		var ips []net.IP
		var err error
		if ip.To4() == nil {
			ips, err = resolveMDNS6(ctx, e.Hostname+".local", ip, zone)
		} else {
			ips, err = resolveMDNS(ctx, e.Hostname+".local", ip)
		}
		if err != nil {
			return Output{Err: err}
		}
		var s []string
		for _, a := range ips {
			s = append(s, a.String())
		}
		return Output{Stdout: strings.Join(s, " "), Stderr: ip.String()}
	},
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		name := e.Hostname + ".local"
		onHost, probe := outs[0], outs[1]
		if !e.MDNS.Publish {
			return Skip, "the config does not publish " + name
		}
		var bad []string
		addr, ok := ParseAvahiResolve(onHost.Stdout)
		if onHost.Err != nil || !ok {
			bad = append(bad, "on the host, avahi does not resolve "+name+": "+evidence(text.FirstLine(onHost.Stderr), errString(onHost.Err)))
		}
		switch {
		case errors.Is(probe.Err, errNotOnLink):
			if len(bad) > 0 {
				return Fail, strings.Join(bad, "; ")
			}
			return Skip, fmt.Sprintf("avahi on the host resolves %s to %s; the verifier is %v, so no multicast query", name, addr, errNotOnLink)
		case probe.Err != nil:
			bad = append(bad, "from the verifier: "+probe.Err.Error())
		case !slices.Contains(strings.Fields(probe.Stdout), probe.Stderr):
			bad = append(bad, fmt.Sprintf("from the verifier %s resolves to %s, not to the host's %s", name, probe.Stdout, probe.Stderr))
		}
		if len(bad) > 0 {
			return Fail, strings.Join(bad, "; ")
		}
		return Pass, fmt.Sprintf("%s resolves to %s from the verifier and on the host", name, probe.Stdout)
	},
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
