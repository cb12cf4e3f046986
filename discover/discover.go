// Package discover finds the machines booted from keystone's installer on
// the local network: each announces the mDNS service Service (avahi, see
// nix/installer-iso.nix) with TXT records saying what it is. It asks every
// multicast link (IPv4 and IPv6), checks each answer, and, asked to, lists
// each machine's disks over SSH, read-only.
package discover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/keystone-nix/keystone/deploy"
	"github.com/keystone-nix/keystone/internal/exit"
	"github.com/keystone-nix/keystone/internal/hint"
	"github.com/keystone-nix/keystone/internal/mdns"
)

// Service is the DNS-SD service type the installer announces. It must be
// the one nix/installer-announce.sh writes.
const Service = "_keystone-installer._tcp.local"

// Exit statuses of discover.
const (
	ExitNone   = 1 // nobody answered
	ExitCannot = 2 // no link to ask on, or a machine's disks could not be read
)

const (
	// askEvery: avahi answers a browse once it has probed and announced,
	// a moment after it starts; asking again also fills in what is missing.
	askEvery     = time.Second
	maxQuestions = 24 // a query stays far below the 512 bytes every responder takes
)

// Options says where and how long to look.
type Options struct {
	Timeout    time.Duration // how long to listen for answers; 3 s by default
	Interfaces []string      // ask only on these; default: every link that can
	Warn       io.Writer     // dropped answers and the like, one line each
}

// Installer is one machine that announced itself. What came from the
// network is kept as sent only when it has the form it must have;
// anything else is in Problems, escaped.
type Installer struct {
	Name        string   `json:"name"` // the DNS-SD instance name
	Host        string   `json:"host"` // the host name its SRV record names
	Addresses   []string `json:"addresses"`
	Port        int      `json:"port"`
	Fingerprint string   `json:"fingerprint"` // SHA256 of its ed25519 host key, as announced: compare it with the console
	Firmware    string   `json:"firmware"`    // uefi or bios
	System      string   `json:"system"`      // x86_64-linux, …
	Version     string   `json:"version"`     // keystone's version the installer was built with
	Disks       *int     `json:"disks"`       // how many disks it counted at boot
	Links       []string `json:"links"`       // the interfaces here it answered on
	Problems    []string `json:"problems"`

	DiskList  []deploy.Disk `json:"diskList,omitempty"` // with --disks
	DiskError string        `json:"diskError,omitempty"`
}

// Find asks the links for installers for o.Timeout and returns what
// answered, each machine once.
func Find(ctx context.Context, o Options) ([]Installer, error) {
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	if o.Warn == nil {
		o.Warn = io.Discard
	}
	links, err := multicastLinks(o.Interfaces)
	if err != nil {
		return nil, err
	}
	var socks []*sock
	defer func() {
		for _, s := range socks {
			s.conn.Close()
		}
	}()
	var errs []error
	for _, l := range links {
		for _, v6 := range []bool{false, true} {
			s, err := open(l, v6)
			switch {
			case err != nil:
				errs = append(errs, err)
			case s != nil:
				socks = append(socks, s)
			}
		}
	}
	if len(socks) == 0 {
		return nil, exit.With(ExitCannot, hint.Wrap(fmt.Errorf("cannot ask for installers on %s: %w", linkNames(links), errors.Join(errs...)),
			"discover needs to send UDP multicast (224.0.0.251 or ff02::fb, port 5353)"))
	}

	deadline := time.Now().Add(o.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	type packet struct {
		l   link
		src netip.Addr
		msg []byte
	}
	packets := make(chan packet)
	var wg sync.WaitGroup
	for _, s := range socks {
		s.conn.SetReadDeadline(deadline)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, mdns.MaxMessage+1)
			for {
				n, ifIndex, src, err := s.read(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) || errors.Is(err, errDeadline) {
						return
					}
					continue
				}
				if ifIndex != 0 && ifIndex != s.link.Index {
					continue // another link's traffic, to the same port
				}
				packets <- packet{s.link, src, slices.Clone(buf[:n])}
			}
		}()
	}
	go func() { wg.Wait(); close(packets) }()

	c := newCollector()
	ask := func() {
		qs := append([]mdns.Question{{Name: Service, Type: mdns.TypePTR}}, c.missing()...)
		for len(qs) > 0 {
			n := min(len(qs), maxQuestions)
			msg, err := mdns.Query(uint16(rand.Uint32()), qs[:n]...)
			qs = qs[n:]
			if err != nil {
				continue // a name from the network that DNS cannot ask for
			}
			for _, s := range socks {
				s.send(msg)
			}
		}
	}
	ask()
	tick := time.NewTicker(askEvery)
	defer tick.Stop()
	cancelled := ctx.Done()
	for done := false; !done; {
		select {
		case p, ok := <-packets:
			if !ok {
				done = true
				break
			}
			c.add(p.l, p.src, p.msg)
		case <-tick.C:
			if time.Until(deadline) > askEvery/2 {
				ask()
			}
		case <-cancelled:
			cancelled = nil
			for _, s := range socks {
				s.conn.SetReadDeadline(time.Now())
			}
		}
	}
	for _, why := range sortedKeys(c.dropped) {
		fmt.Fprintf(o.Warn, "keystone: warning: dropped %d %s\n", c.dropped[why], why)
	}
	found := c.installers()
	if err := ctx.Err(); err != nil {
		return found, err
	}
	if len(found) == 0 {
		return nil, exit.With(ExitNone, hint.Errorf("boot the machine from keystone's installer (keystone iso) on this network, or wait longer with --timeout",
			"no keystone installer answered on %s within %s", linkNames(links), o.Timeout))
	}
	sameKey(found, o.Warn)
	return found, nil
}

// sameKey warns of machines that announce one host key under two names.
func sameKey(found []Installer, w io.Writer) {
	by := map[string][]string{}
	for _, m := range found {
		if m.Fingerprint != "" {
			by[m.Fingerprint] = append(by[m.Fingerprint], show(m.Name))
		}
	}
	for _, fp := range sortedKeys(by) {
		if names := by[fp]; len(names) > 1 {
			fmt.Fprintf(w, "keystone: warning: %s announce one host key (%s): one machine twice, or a copy\n", strings.Join(names, " and "), fp)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// multicastLinks are the interfaces to ask on: the named ones, which must
// be able to, or every one that is up, multicast, not loopback nor
// point-to-point (avahi's default, as NixOS's avahi module says), and has
// an address.
func multicastLinks(names []string) ([]link, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, exit.With(ExitCannot, fmt.Errorf("listing network interfaces: %w", err))
	}
	var out []link
	var why []string
	for _, ifc := range ifaces {
		if len(names) > 0 && !slices.Contains(names, ifc.Name) {
			continue
		}
		l := link{Name: ifc.Name, Index: ifc.Index}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ip, _ := netip.AddrFromSlice(n.IP)
				ones, _ := n.Mask.Size()
				l.Prefixes = append(l.Prefixes, netip.PrefixFrom(ip.Unmap(), ones).Masked())
			}
		}
		switch {
		case ifc.Flags&net.FlagLoopback != 0:
			why = append(why, ifc.Name+" is loopback")
		case ifc.Flags&net.FlagPointToPoint != 0:
			why = append(why, ifc.Name+" is point-to-point")
		case ifc.Flags&net.FlagUp == 0:
			why = append(why, ifc.Name+" is down")
		case ifc.Flags&net.FlagMulticast == 0:
			why = append(why, ifc.Name+" cannot multicast")
		case len(l.Prefixes) == 0:
			why = append(why, ifc.Name+" has no address")
		default:
			out = append(out, l)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(ifaces, func(i net.Interface) bool { return i.Name == n }) {
			return nil, exit.UsageError(hint.Errorf("see ip link", "--interface %s: no such interface", show(n)))
		}
	}
	if len(out) == 0 {
		reason := "there is none but loopback"
		if len(why) > 0 {
			reason = strings.Join(why, ", ")
		}
		return nil, exit.With(ExitCannot, hint.Errorf("connect this machine to the installers' network (discover asks only on the local link)",
			"no network interface to ask for installers on: %s", reason))
	}
	return out, nil
}

func linkNames(links []link) string {
	var n []string
	for _, l := range links {
		n = append(n, l.Name)
	}
	return strings.Join(n, ", ")
}

// sock is one UDP socket on one link and family, on an ephemeral port: a
// one-shot query (RFC 6762 section 6.7) whose answers come back by
// unicast, whatever else holds port 5353 here (avahi, say).
type sock struct {
	link  link
	conn  net.PacketConn
	group *net.UDPAddr
	p4    *ipv4.PacketConn
	p6    *ipv6.PacketConn
}

var errDeadline = errors.New("deadline")

// open makes the socket for l and one family; nil, nil when l has no
// address of that family.
func open(l link, v6 bool) (*sock, error) {
	has := slices.ContainsFunc(l.Prefixes, func(p netip.Prefix) bool { return p.Addr().Is6() == v6 })
	if !has {
		return nil, nil
	}
	ifc, err := net.InterfaceByIndex(l.Index)
	if err != nil {
		return nil, err
	}
	s := &sock{link: l}
	if v6 {
		c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified})
		if err != nil {
			return nil, fmt.Errorf("%s (IPv6): %w", l.Name, err)
		}
		s.conn, s.p6 = c, ipv6.NewPacketConn(c)
		s.group = &net.UDPAddr{IP: net.ParseIP("ff02::fb"), Port: 5353, Zone: l.Name}
		err = errors.Join(s.p6.SetMulticastInterface(ifc), s.p6.SetMulticastHopLimit(255),
			s.p6.SetMulticastLoopback(false), s.p6.SetControlMessage(ipv6.FlagInterface, true))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%s (IPv6): %w", l.Name, err)
		}
		return s, nil
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return nil, fmt.Errorf("%s (IPv4): %w", l.Name, err)
	}
	s.conn, s.p4 = c, ipv4.NewPacketConn(c)
	s.group = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353}
	err = errors.Join(s.p4.SetMulticastInterface(ifc), s.p4.SetMulticastTTL(255),
		s.p4.SetMulticastLoopback(false), s.p4.SetControlMessage(ipv4.FlagInterface, true))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s (IPv4): %w", l.Name, err)
	}
	return s, nil
}

func (s *sock) send(msg []byte) {
	// A link that cannot send now (no route yet, say) may later: the
	// next round asks again.
	s.conn.WriteTo(msg, s.group)
}

// read returns one datagram, the interface it came in on (0 unknown) and
// its source.
func (s *sock) read(buf []byte) (int, int, netip.Addr, error) {
	var n, ifIndex int
	var src net.Addr
	var err error
	if s.p6 != nil {
		var cm *ipv6.ControlMessage
		n, cm, src, err = s.p6.ReadFrom(buf)
		if cm != nil {
			ifIndex = cm.IfIndex
		}
	} else {
		var cm *ipv4.ControlMessage
		n, cm, src, err = s.p4.ReadFrom(buf)
		if cm != nil {
			ifIndex = cm.IfIndex
		}
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, 0, netip.Addr{}, errDeadline
		}
		return 0, 0, netip.Addr{}, err
	}
	u, _ := src.(*net.UDPAddr)
	if u == nil {
		return 0, 0, netip.Addr{}, errors.New("not UDP")
	}
	ip, _ := netip.AddrFromSlice(u.IP)
	return n, ifIndex, ip.Unmap(), nil
}
