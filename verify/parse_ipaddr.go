package verify

import (
	"encoding/json"
	"fmt"
	"net"
)

// HostAddr is one address of the host, from `ip -j addr`.
type HostAddr struct {
	IP    net.IP
	Iface string
	Scope string // "global" (also unique-local IPv6), "link", "host"
}

// ParseIPAddrJSON reads `ip -j addr` (iproute2's JSON).
func ParseIPAddrJSON(out []byte) ([]HostAddr, error) {
	var links []struct {
		Ifname   string `json:"ifname"`
		AddrInfo []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
			Scope  string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("not ip -j addr output: %v", err)
	}
	var addrs []HostAddr
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if ip := net.ParseIP(a.Local); ip != nil {
				addrs = append(addrs, HostAddr{IP: ip, Iface: l.Ifname, Scope: a.Scope})
			}
		}
	}
	return addrs, nil
}

// globalIPv6 is the host's IPv6 addresses other than loopback and
// link-local: global and unique-local ones, which others can reach.
func globalIPv6(addrs []HostAddr) []net.IP {
	var out []net.IP
	for _, a := range addrs {
		if a.IP.To4() == nil && a.Scope == "global" && !a.IP.IsLoopback() && !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IP)
		}
	}
	return out
}
