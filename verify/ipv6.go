package verify

import (
	"fmt"
	"net"
	"strings"
)

// ipv6Check fails a host that has an IPv6 address others can reach (global
// or unique-local, from ip -j addr) and no firewall for IPv6: with the
// iptables backend each family has its own rules, and an empty ip6tables
// leaves every IPv6 port open while IPv4 looks right.
var ipv6Check = Check{
	Name: "ipv6",
	Applies: func(e *Expectations) (bool, string) {
		if e.Firewall == nil || !e.Firewall.Enable {
			return false, "the firewall is off in the config"
		}
		b := e.Firewall.Backend
		return b == "iptables" || b == "nftables", "no IPv6 rules to read for the " + b + " backend"
	},
	Commands: func(e *Expectations) []string {
		if e.Firewall.Backend == "nftables" {
			return []string{"ip -j addr", "nft -j list ruleset"}
		}
		return []string{"ip -j addr", "ip6tables-save"}
	},
	Judge: func(e *Expectations, outs []Output) (Status, string) {
		if msg, ok := failed("ip -j addr", outs[0]); !ok {
			return Fail, msg
		}
		addrs, err := ParseIPAddrJSON([]byte(outs[0].Stdout))
		if err != nil {
			return Fail, "ip -j addr: " + err.Error()
		}
		v6 := globalIPv6(addrs)
		if len(v6) == 0 {
			return Pass, "no IPv6 address other than link-local"
		}
		has := "the host has IPv6 address " + joinIPs(v6)
		want := Ports{TCP: singlePorts(e.Firewall.TCP), UDP: singlePorts(e.Firewall.UDP)}
		if e.Firewall.Backend == "nftables" {
			if msg, ok := failed("nft", outs[1]); !ok {
				return Fail, msg
			}
			present, open, err := ParseNftJSON([]byte(outs[1].Stdout))
			switch {
			case err != nil:
				return Fail, "nft: " + err.Error()
			case !present:
				return Fail, has + ", and no table inet nixos-fw: IPv6 is not firewalled"
			case !open.Equal(want):
				return Fail, fmt.Sprintf("%s; inet nixos-fw opens %s to IPv6 and IPv4, want %s", has, open, want)
			}
			return Pass, has + "; inet nixos-fw covers IPv6: opens " + open.String()
		}
		if msg, ok := failed("ip6tables-save", outs[1]); !ok {
			return Fail, msg
		}
		present, open, err := ParseIptablesSave(outs[1].Stdout)
		switch {
		case err != nil:
			return Fail, "ip6tables-save: " + err.Error()
		case !present:
			return Fail, has + ", and ip6tables has no nixos-fw rules: IPv6 is not firewalled"
		case !open.Equal(want):
			return Fail, fmt.Sprintf("%s; ip6tables opens %s to IPv6, want %s", has, open, want)
		}
		return Pass, has + "; ip6tables opens " + open.String()
	},
}

func joinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}
