package verify

import (
	"fmt"
	"strings"
)

// Listener is one listening socket from ss.
type Listener struct {
	Proto string // "tcp", "udp"; "" when ss printed no Netid column (one socket type asked for)
	Addr  string // "0.0.0.0", "::", "127.0.0.1", "*" (all addresses, IPv4 and IPv6)
	Iface string // the device a socket is bound to ("lo" in "127.0.0.53%lo:53"), or ""
	Port  int
	// Process is the first process name of ss -p's users:(("sshd",pid=…)),
	// or "".
	Process string
}

// ssStates are the socket states ss prints; a line starting with one has
// no Netid column.
var ssStates = map[string]bool{
	"LISTEN": true, "UNCONN": true, "ESTAB": true, "SYN-SENT": true, "SYN-RECV": true,
	"FIN-WAIT-1": true, "FIN-WAIT-2": true, "TIME-WAIT": true, "CLOSE-WAIT": true,
	"LAST-ACK": true, "CLOSING": true, "CLOSED": true,
}

// ParseSS reads `ss -Hltnu` or `ss -Hltnup` (a header line, as ss prints
// without -H, is skipped). Addresses must be numeric (-n).
func ParseSS(out string) ([]Listener, error) {
	var ls []Listener
	for i, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "Netid" || f[0] == "State" {
			continue
		}
		var l Listener
		if !ssStates[f[0]] {
			l.Proto, f = f[0], f[1:]
		}
		// State Recv-Q Send-Q Local Peer [Process]
		if len(f) < 5 {
			return nil, fmt.Errorf("line %d: too few columns: %q", i+1, line)
		}
		local := f[3]
		j := strings.LastIndexByte(local, ':')
		if j < 0 {
			return nil, fmt.Errorf("line %d: no port in %q", i+1, local)
		}
		port, err := parsePort(local[j+1:])
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		l.Port = port
		addr := local[:j]
		if a, iface, ok := strings.Cut(addr, "%"); ok {
			addr, l.Iface = a, iface
		}
		l.Addr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
		if len(f) > 5 {
			l.Process = ssProcess(strings.Join(f[5:], " "))
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// ssProcess is the first name in users:(("sshd",pid=1,fd=3),…).
func ssProcess(s string) string {
	_, rest, ok := strings.Cut(s, `(("`)
	if !ok {
		return ""
	}
	name, _, ok := strings.Cut(rest, `"`)
	if !ok {
		return ""
	}
	return name
}
