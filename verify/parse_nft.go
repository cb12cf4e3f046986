package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// nftTable is the table that nixos/modules/services/networking/
// firewall-nftables.nix loads: table inet nixos-fw.
const (
	nftFamily = "inet"
	nftTable  = "nixos-fw"
)

// ParseNftJSON reads the output of `nft -j list ruleset` on a NixOS host
// whose firewall uses the nftables backend.
//
// present is true when table inet nixos-fw exists and has a base chain on
// the input hook (nftables.service's stop flushes the whole ruleset).
//
// open is the TCP and UDP ports accepted from everyone by the rules of
// that table's input chains: the base chain and every chain it jumps or
// goes to (input-allow, through the ct state vmap). A rule counts when it
// ends in accept and does not match an input interface (iifname, as
// networking.firewall.interfaces.<name> and trustedInterfaces make), a
// source or destination address (as the DHCPv6 rule to fe80::/64), or ct
// states without new. A match on a named set (meta l4proto . th dport
// @temp-ports, which nixos-firewall-tool fills) opens the set's elements.
// A rule without a port match opens 1-65535; "!=" opens the complement.
// Restrictions on the rule that jumps to a chain are not carried into it.
func ParseNftJSON(out []byte) (present bool, open Ports, err error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return false, Ports{}, fmt.Errorf("not nft JSON: %v", err)
	}
	if doc.Nftables == nil {
		return false, Ports{}, errors.New("not nft JSON: no \"nftables\" list")
	}
	type chain struct {
		Family, Table, Name, Hook string
	}
	type rule struct {
		Family, Table, Chain string
		Expr                 []map[string]json.RawMessage
	}
	type set struct {
		Family, Table, Name string
		Elem                []json.RawMessage
	}
	var (
		hasTable bool
		chains   []chain
		rules    []rule
		sets     = map[string][]json.RawMessage{}
	)
	mine := func(family, table string) bool { return family == nftFamily && table == nftTable }
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			switch kind {
			case "table":
				var t struct{ Family, Name string }
				if json.Unmarshal(raw, &t) == nil && mine(t.Family, t.Name) {
					hasTable = true
				}
			case "chain":
				var c chain
				if json.Unmarshal(raw, &c) == nil && mine(c.Family, c.Table) {
					chains = append(chains, c)
				}
			case "rule":
				var r rule
				if err := json.Unmarshal(raw, &r); err != nil {
					return false, Ports{}, fmt.Errorf("reading a rule: %v", err)
				}
				if mine(r.Family, r.Table) {
					rules = append(rules, r)
				}
			case "set":
				var s set
				if json.Unmarshal(raw, &s) == nil && mine(s.Family, s.Table) {
					sets[s.Name] = s.Elem
				}
			}
		}
	}
	// The input chains: base chains on the input hook and what they reach.
	input := map[string]bool{}
	var queue []string
	for _, c := range chains {
		if c.Hook == "input" {
			input[c.Name] = true
			queue = append(queue, c.Name)
		}
	}
	present = hasTable && len(queue) > 0
	if !present {
		return false, Ports{}, nil
	}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		for _, r := range rules {
			if r.Chain != name {
				continue
			}
			for _, e := range r.Expr {
				for _, target := range nftJumpTargets(e) {
					if !input[target] {
						input[target] = true
						queue = append(queue, target)
					}
				}
			}
		}
	}
	for _, r := range rules {
		if !input[r.Chain] {
			continue
		}
		if err := nftRuleOpens(r.Expr, sets, &open); err != nil {
			return present, Ports{}, fmt.Errorf("chain %s: %v", r.Chain, err)
		}
	}
	return present, open.Normalized(), nil
}

// nftJumpTargets is the chains that one statement jumps or goes to,
// directly or through a verdict map.
func nftJumpTargets(stmt map[string]json.RawMessage) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				if k == "jump" || k == "goto" {
					if m, ok := sub.(map[string]any); ok {
						if t, ok := m["target"].(string); ok {
							out = append(out, t)
						}
					}
					continue
				}
				walk(sub)
			}
		case []any:
			for _, sub := range v {
				walk(sub)
			}
		}
	}
	for k, raw := range stmt {
		var v any
		if json.Unmarshal(raw, &v) == nil {
			walk(map[string]any{k: v})
		}
	}
	return out
}

// nftRuleOpens adds to open what one rule accepts from everyone.
func nftRuleOpens(expr []map[string]json.RawMessage, sets map[string][]json.RawMessage, open *Ports) error {
	protos := bothProtos
	var (
		ports    []PortRange
		hasPort  bool
		setPorts *Ports // from a "l4proto . dport" set lookup
		accept   bool
	)
	for _, stmt := range expr {
		if _, ok := stmt["accept"]; ok {
			accept = true
			continue
		}
		raw, ok := stmt["match"]
		if !ok {
			continue
		}
		var m struct {
			Op    string
			Left  any
			Right any
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("reading a match: %v", err)
		}
		neg := m.Op == "!="
		positive := m.Op == "==" || m.Op == "in" || m.Op == ""
		left, _ := m.Left.(map[string]any)
		switch {
		case nftIsPayload(left, "", "dport"):
			proto := nftPayloadProto(left)
			switch proto {
			case "tcp":
				protos = protos.and(protoSet{tcp: true})
			case "udp":
				protos = protos.and(protoSet{udp: true})
			case "th":
			default: // sctp, dccp: neither TCP nor UDP
				protos = protoSet{}
			}
			if !neg && !positive {
				continue // <, >, … : keep it simple, count every port
			}
			rs, err := nftPortValues(m.Right)
			if err != nil {
				return err
			}
			ports, hasPort = narrow(ports, hasPort, rs, neg), true
		case nftIsMeta(left, "l4proto") || nftIsPayload(left, "ip", "protocol") || nftIsPayload(left, "ip6", "nexthdr"):
			s, err := nftProtoValues(m.Right)
			if err != nil {
				return err
			}
			if neg {
				s = protoSet{!s.tcp, !s.udp}
			}
			protos = protos.and(s)
		case nftIsConcatSetLookup(left):
			name, _ := m.Right.(string)
			elems, ok := sets[strings.TrimPrefix(name, "@")]
			if !ok || !strings.HasPrefix(name, "@") || neg {
				continue
			}
			p, err := nftSetPorts(elems)
			if err != nil {
				return fmt.Errorf("set %s: %v", name, err)
			}
			setPorts = &p
		case nftIsMeta(left, "iifname", "iif", "iifgroup", "iiftype", "iifkind"):
			if positive && m.Right != "*" {
				return nil
			}
		case nftIsPayload(left, "", "saddr") || nftIsPayload(left, "", "daddr"):
			if positive {
				return nil
			}
		case nftIsCt(left, "state"):
			hasNew := nftValuesContain(m.Right, "new") || nftValuesContain(m.Right, "untracked")
			if hasNew == neg {
				return nil
			}
		case left != nil && left["payload"] != nil:
			// A match on another protocol's header (icmp type, …) means
			// the packet is not TCP or UDP.
			switch nftPayloadProto(left) {
			case "ip", "ip6", "tcp", "udp", "th", "ether", "vlan", "inet":
			default:
				protos = protoSet{}
			}
		}
	}
	if !accept {
		return nil
	}
	if setPorts != nil {
		open.add(protos.and(protoSet{tcp: true}), setPorts.TCP)
		open.add(protos.and(protoSet{udp: true}), setPorts.UDP)
		return nil
	}
	if !hasPort {
		ports = []PortRange{allPorts}
	}
	open.add(protos, ports)
	return nil
}

func nftIsPayload(left map[string]any, proto, field string) bool {
	p, ok := left["payload"].(map[string]any)
	if !ok {
		return false
	}
	return p["field"] == field && (proto == "" || p["protocol"] == proto)
}

func nftPayloadProto(left map[string]any) string {
	p, _ := left["payload"].(map[string]any)
	s, _ := p["protocol"].(string)
	return s
}

func nftIsMeta(left map[string]any, keys ...string) bool {
	m, ok := left["meta"].(map[string]any)
	if !ok {
		return false
	}
	for _, k := range keys {
		if m["key"] == k {
			return true
		}
	}
	return false
}

func nftIsCt(left map[string]any, key string) bool {
	m, ok := left["ct"].(map[string]any)
	return ok && m["key"] == key
}

// nftIsConcatSetLookup matches "meta l4proto . th dport" (and the tcp/udp
// spellings of the second half).
func nftIsConcatSetLookup(left map[string]any) bool {
	c, ok := left["concat"].([]any)
	if !ok || len(c) != 2 {
		return false
	}
	a, _ := c[0].(map[string]any)
	b, _ := c[1].(map[string]any)
	return (nftIsMeta(a, "l4proto") || nftIsPayload(a, "ip", "protocol") || nftIsPayload(a, "ip6", "nexthdr")) &&
		nftIsPayload(b, "", "dport")
}

// nftValues flattens a right-hand side into its elements: a value, an
// anonymous set {"set": […]}, or set elements {"elem": {"val": …}}.
func nftValues(v any) []any {
	switch v := v.(type) {
	case map[string]any:
		if s, ok := v["set"]; ok {
			return nftValues(s)
		}
		if e, ok := v["elem"].(map[string]any); ok {
			return nftValues(e["val"])
		}
		return []any{v}
	case []any:
		var out []any
		for _, x := range v {
			out = append(out, nftValues(x)...)
		}
		return out
	}
	return []any{v}
}

func nftValuesContain(v any, want string) bool {
	for _, x := range nftValues(v) {
		if x == want {
			return true
		}
	}
	return false
}

func nftPortValues(v any) ([]PortRange, error) {
	var out []PortRange
	for _, x := range nftValues(v) {
		r, err := nftPortRange(x)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func nftPortRange(x any) (PortRange, error) {
	if m, ok := x.(map[string]any); ok {
		if rg, ok := m["range"].([]any); ok && len(rg) == 2 {
			a, err := nftPort(rg[0])
			if err != nil {
				return PortRange{}, err
			}
			b, err := nftPort(rg[1])
			if err != nil {
				return PortRange{}, err
			}
			return PortRange{min(a, b), max(a, b)}, nil
		}
	}
	p, err := nftPort(x)
	return PortRange{p, p}, err
}

func nftPort(x any) (int, error) {
	switch x := x.(type) {
	case float64:
		if x == float64(int(x)) && x >= 0 && x <= 65535 {
			return int(x), nil
		}
	case string:
		if x == "ssh" { // nft -S names services; only one NixOS opens by default
			return 22, nil
		}
		return parsePort(x)
	}
	return 0, fmt.Errorf("bad port %v", x)
}

func nftProtoValues(v any) (protoSet, error) {
	var s protoSet
	for _, x := range nftValues(v) {
		switch x {
		case "tcp", float64(6):
			s.tcp = true
		case "udp", float64(17):
			s.udp = true
		}
	}
	return s, nil
}

// nftSetPorts reads the elements of an "inet_proto . inet_service" set
// such as temp-ports: {"concat": ["tcp", 8888]} or with a range.
func nftSetPorts(elems []json.RawMessage) (Ports, error) {
	var p Ports
	for _, raw := range elems {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return p, err
		}
		for _, x := range nftValues(v) {
			m, _ := x.(map[string]any)
			c, ok := m["concat"].([]any)
			if !ok || len(c) != 2 {
				return p, fmt.Errorf("element %s is not proto . port", raw)
			}
			r, err := nftPortRange(c[1])
			if err != nil {
				return p, err
			}
			proto, err := nftProtoValues(c[0])
			if err != nil {
				return p, err
			}
			p.add(proto, []PortRange{r})
		}
	}
	return p, nil
}
