package verify

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports; a single port has From == To.
type PortRange struct{ From, To int }

func (r PortRange) String() string {
	if r.From == r.To {
		return strconv.Itoa(r.From)
	}
	return fmt.Sprintf("%d-%d", r.From, r.To)
}

// allPorts is what a rule without a port match opens.
var allPorts = PortRange{1, 65535}

// Ports is the TCP and UDP ports a firewall opens to everyone.
type Ports struct{ TCP, UDP []PortRange }

// Normalized returns p with each list sorted and its overlapping or
// adjacent ranges merged, so that equal port sets compare equal.
func (p Ports) Normalized() Ports {
	return Ports{TCP: mergeRanges(p.TCP), UDP: mergeRanges(p.UDP)}
}

// Equal tells whether p and q open the same ports, however their ranges
// are split or ordered.
func (p Ports) Equal(q Ports) bool {
	a, b := p.Normalized(), q.Normalized()
	return slices.Equal(a.TCP, b.TCP) && slices.Equal(a.UDP, b.UDP)
}

// String is e.g. "tcp 22,1000-2000 udp 5353", or "none" for a list
// without ports.
func (p Ports) String() string {
	n := p.Normalized()
	return "tcp " + joinRanges(n.TCP) + " udp " + joinRanges(n.UDP)
}

func joinRanges(rs []PortRange) string {
	if len(rs) == 0 {
		return "none"
	}
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

func mergeRanges(rs []PortRange) []PortRange {
	if len(rs) == 0 {
		return nil
	}
	s := slices.Clone(rs)
	for i, r := range s {
		if r.From > r.To {
			s[i] = PortRange{r.To, r.From}
		}
	}
	slices.SortFunc(s, func(a, b PortRange) int {
		if a.From != b.From {
			return a.From - b.From
		}
		return a.To - b.To
	})
	out := []PortRange{s[0]}
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		if r.From <= last.To+1 {
			last.To = max(last.To, r.To)
			continue
		}
		out = append(out, r)
	}
	return out
}

// complementRanges is every port in 1-65535 that rs does not hold.
func complementRanges(rs []PortRange) []PortRange {
	var out []PortRange
	next := 1
	for _, r := range mergeRanges(rs) {
		if r.From > next {
			out = append(out, PortRange{next, r.From - 1})
		}
		next = max(next, r.To+1)
	}
	if next <= 65535 {
		out = append(out, PortRange{next, 65535})
	}
	return out
}

// add opens ranges for the protocols in protos ("tcp", "udp").
func (p *Ports) add(protos protoSet, ranges []PortRange) {
	if protos.tcp {
		p.TCP = append(p.TCP, ranges...)
	}
	if protos.udp {
		p.UDP = append(p.UDP, ranges...)
	}
}

type protoSet struct{ tcp, udp bool }

var bothProtos = protoSet{true, true}

func (s protoSet) and(t protoSet) protoSet { return protoSet{s.tcp && t.tcp, s.udp && t.udp} }

// parsePort reads a port number in 0-65535.
func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return n, nil
}

// narrow applies one port match of a rule to what the rule's earlier port
// matches allowed: rs, or all ports but rs when negated, within ports when
// has says there was an earlier match.
func narrow(ports []PortRange, has bool, rs []PortRange, neg bool) []PortRange {
	if neg {
		rs = complementRanges(rs)
	}
	if has {
		rs = intersectRanges(ports, rs)
	}
	return rs
}
