package verify

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
)

var mdnsGroup = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}

const mdnsTimeout = 3 * time.Second

// errNotOnLink is the SKIP reason: multicast does not cross routers.
var errNotOnLink = errors.New("not on the same link as the verifier")

// resolveMDNS asks the local network, by one multicast query from an
// ephemeral port (RFC 6762 section 5.1), for name's IPv4 address. It sends
// from the interface whose network holds near, the host's address.
func resolveMDNS(ctx context.Context, name string, near net.IP) ([]net.IP, error) {
	ifaceAddr, err := onLink(near)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ifaceAddr})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	raw.Control(func(fd uintptr) {
		var ip [4]byte
		copy(ip[:], ifaceAddr.To4())
		serr = syscall.SetsockoptInet4Addr(int(fd), syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, ip)
		if serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MULTICAST_TTL, 255)
		}
	})
	if serr != nil {
		return nil, serr
	}
	id := uint16(time.Now().UnixNano())
	if _, err := conn.WriteToUDP(mdnsQuery(id, name), mdnsGroup); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(mdnsTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetReadDeadline(deadline)
	buf := make([]byte, 9000)
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return nil, fmt.Errorf("no mDNS answer for %s within %s", name, mdnsTimeout)
		}
		if ips := mdnsAnswers(buf[:n], name); len(ips) > 0 {
			return ips, nil
		}
	}
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

// mdnsQuery is a DNS query for name's A record.
func mdnsQuery(id uint16, name string) []byte {
	msg := binary.BigEndian.AppendUint16(nil, id)
	msg = append(msg, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) // flags, one question
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	return append(msg, 0, 0, 1, 0, 1) // root, type A, class IN
}

// mdnsAnswers returns the A records for name in a DNS response; anything
// malformed yields none.
func mdnsAnswers(msg []byte, name string) []net.IP {
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
		if typ == 1 && rdlen == 4 && strings.EqualFold(owner, strings.TrimSuffix(name, ".")) {
			ips = append(ips, net.IP(append([]byte(nil), msg[rdata:rdata+4]...)))
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
