package verify

import (
	"context"
	"net"
	"time"
)

var mdnsGroup6 = net.ParseIP("ff02::fb")

// resolveMDNS6 asks the link that holds near, an IPv6 address of the host
// (zone: its interface, for a link-local one), for name's AAAA records.
// It asks from an ephemeral port with an ID (RFC 6762 section 6.7), so
// the answer comes back by unicast, whatever else holds port 5353 here.
func resolveMDNS6(ctx context.Context, name string, near net.IP, zone string) ([]net.IP, error) {
	iface, err := onLink6(near, zone)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	group := &net.UDPAddr{IP: mdnsGroup6, Port: 5353, Zone: iface.Name}
	return askMDNS(ctx, conn, group, uint16(time.Now().UnixNano()), name, typeAAAA)
}

// onLink6 is the verifier's interface on the link that holds ip: the zone
// of a link-local address, or the interface with a prefix that holds it.
func onLink6(ip net.IP, zone string) (*net.Interface, error) {
	if zone != "" {
		return net.InterfaceByName(zone)
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil && !n.IP.IsLinkLocalUnicast() && n.Contains(ip) {
				return &ifc, nil
			}
		}
	}
	return nil, errNotOnLink
}
