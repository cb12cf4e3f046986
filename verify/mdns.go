package verify

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	buf := make([]byte, 9000)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := conn.WriteToUDP(mdnsQuery(id, name, qtype), group); err != nil {
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
	typeA    = 1
	typeAAAA = 28
)

// mdnsQuery is a DNS query for name's record of type qtype.
func mdnsQuery(id uint16, name string, qtype uint16) []byte {
	msg := binary.BigEndian.AppendUint16(nil, id)
	msg = append(msg, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) // flags, one question
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	msg = append(msg, 0) // root
	msg = binary.BigEndian.AppendUint16(msg, qtype)
	return append(msg, 0x80, 1) // class IN, QU
}

// mdnsAnswers returns the A or AAAA (qtype) records for name in a DNS
// response; anything malformed yields none.
func mdnsAnswers(msg []byte, name string, qtype uint16) []net.IP {
	size := 4
	if qtype == typeAAAA {
		size = 16
	}
	if len(msg) < 12 || msg[2]&0x80 == 0 {
		return nil // not a response
	}
	qd, an := int(binary.BigEndian.Uint16(msg[4:])), int(binary.BigEndian.Uint16(msg[6:]))
	off := 12
	for i := 0; i < qd; i++ {
		_, next, ok := readName(msg, off)
		if !ok || next+4 > len(msg) {
			return nil
		}
		off = next + 4
	}
	var ips []net.IP
	for i := 0; i < an; i++ {
		owner, next, ok := readName(msg, off)
		if !ok || next+10 > len(msg) {
			return ips
		}
		typ := binary.BigEndian.Uint16(msg[next:])
		rdlen := int(binary.BigEndian.Uint16(msg[next+8:]))
		rdata := next + 10
		if rdata+rdlen > len(msg) {
			return ips
		}
		if typ == qtype && rdlen == size && strings.EqualFold(owner, strings.TrimSuffix(name, ".")) {
			ips = append(ips, net.IP(append([]byte(nil), msg[rdata:rdata+size]...)))
		}
		off = rdata + rdlen
	}
	return ips
}

// readName reads a possibly compressed DNS name at off, returning it and
// the offset after it.
func readName(msg []byte, off int) (string, int, bool) {
	var labels []string
	next := -1
	for hops := 0; hops < 32; hops++ {
		if off >= len(msg) {
			return "", 0, false
		}
		l := int(msg[off])
		switch {
		case l == 0:
			if next < 0 {
				next = off + 1
			}
			return strings.Join(labels, "."), next, true
		case l&0xC0 == 0xC0:
			if off+1 >= len(msg) {
				return "", 0, false
			}
			if next < 0 {
				next = off + 2
			}
			off = int(binary.BigEndian.Uint16(msg[off:]) & 0x3FFF)
		default:
			if off+1+l > len(msg) {
				return "", 0, false
			}
			labels = append(labels, string(msg[off+1:off+1+l]))
			off += 1 + l
		}
	}
	return "", 0, false
}
