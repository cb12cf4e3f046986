package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/keystone-nix/keystone/internal/mdns"
)

var mdnsGroup = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}

const (
	mdnsTimeout = 5 * time.Second
	mdnsRetry   = time.Second
)

// errNotOnLink is the SKIP reason: multicast does not cross routers.
var errNotOnLink = errors.New("not on the host's link")

// resolveMDNS asks the local network for name's IPv4 address with one
// multicast query, sent from the interface whose network holds near, the
// host's address. It asks from port 5353, so the answer comes back by
// multicast to port 5353, which a verifier running avahi (and on NixOS its
// firewall) lets in. When 5353 cannot be shared, it asks from an ephemeral
// port (RFC 6762 section 6.7), and the answer comes back by unicast.
func resolveMDNS(ctx context.Context, name string, near net.IP) ([]net.IP, error) {
	if near.To4() == nil {
		return resolveMDNS6(ctx, name, near, "")
	}
	ifaceAddr, err := onLink(near)
	if err != nil {
		return nil, err
	}
	// A multicast query from port 5353 has ID 0 (RFC 6762 section 18.1);
	// a one-shot query from another port carries one to match the answer.
	var id uint16
	conn, err := mdnsSocket(ifaceAddr, mdnsGroup.Port)
	if err != nil {
		if conn, err = mdnsSocket(ifaceAddr, 0); err != nil {
			return nil, err
		}
		id = uint16(time.Now().UnixNano())
	}
	defer conn.Close()
	return askMDNS(ctx, conn, mdnsGroup, id, name, typeA)
}

// askMDNS asks group for name's records of qtype on conn until an answer
// comes or mdnsTimeout (or ctx) ends. It asks again every second: a host
// that just booted answers only once avahi has probed and announced its
// name.
func askMDNS(ctx context.Context, conn *net.UDPConn, group *net.UDPAddr, id uint16, name string, qtype uint16) ([]net.IP, error) {
	deadline := time.Now().Add(mdnsTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	query := mdnsQuery(id, name, qtype)
	if query == nil {
		return nil, fmt.Errorf("%q is not a name mDNS can ask for", name)
	}
	buf := make([]byte, mdns.MaxMessage+1)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := conn.WriteToUDP(query, group); err != nil {
			return nil, err
		}
		conn.SetReadDeadline(minTime(deadline, time.Now().Add(mdnsRetry)))
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if ips := mdnsAnswers(buf[:n], name, qtype); len(ips) > 0 {
				return ips, nil
			}
		}
	}
	return nil, fmt.Errorf("no mDNS answer for %s within %s (a firewall here must let UDP 5353 in)", name, mdnsTimeout)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// mdnsSocket is a UDP socket on port (0 for any) that sends multicast out
// of the interface with address ifaceAddr and, on 5353, receives the
// group's traffic there too, beside any avahi on the same port.
func mdnsSocket(ifaceAddr net.IP, port int) (*net.UDPConn, error) {
	var ip [4]byte
	copy(ip[:], ifaceAddr.To4())
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			set := func(level, opt, v int) {
				if serr == nil {
					serr = syscall.SetsockoptInt(int(fd), level, opt, v)
				}
			}
			set(syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			set(syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			set(syscall.IPPROTO_IP, syscall.IP_MULTICAST_TTL, 255)
			set(syscall.IPPROTO_IP, syscall.IP_MULTICAST_LOOP, 0)
			if serr == nil {
				serr = syscall.SetsockoptInet4Addr(int(fd), syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, ip)
			}
			if serr == nil && port != 0 {
				mreq := &syscall.IPMreq{Multiaddr: [4]byte{224, 0, 0, 251}, Interface: ip}
				serr = syscall.SetsockoptIPMreq(int(fd), syscall.IPPROTO_IP, syscall.IP_ADD_MEMBERSHIP, mreq)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	addr := ifaceAddr.String()
	if port != 0 {
		addr = "0.0.0.0" // multicast to the group arrives addressed to the group
	}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// onLink returns the verifier's address on the network that holds ip.
func onLink(ip net.IP) (net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && n.Contains(ip) {
			return n.IP, nil
		}
	}
	return nil, errNotOnLink
}

// DNS record types asked for.
const (
	typeA    = uint16(mdns.TypeA)
	typeAAAA = uint16(mdns.TypeAAAA)
)

// mdnsQuery is a DNS query for name's record of type qtype.
func mdnsQuery(id uint16, name string, qtype uint16) []byte {
	q, err := mdns.Query(id, mdns.Question{Name: name, Type: dnsmessage.Type(qtype)})
	if err != nil {
		return nil // a host name expectations accepted is a valid DNS name
	}
	return q
}

// mdnsAnswers returns the A or AAAA (qtype) records for name in a DNS
// response; anything malformed yields none.
func mdnsAnswers(msg []byte, name string, qtype uint16) []net.IP {
	records, err := mdns.Parse(msg)
	if err != nil {
		return nil
	}
	var ips []net.IP
	for _, r := range records {
		if uint16(r.Type) == qtype && mdns.SameName(r.Name, name) {
			ips = append(ips, net.IP(r.IP.AsSlice()))
		}
	}
	return ips
}
