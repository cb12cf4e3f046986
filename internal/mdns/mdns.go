// Package mdns builds and reads multicast DNS messages (RFC 6762) with
// golang.org/x/net/dns/dnsmessage, for verify's mdns check and for
// discover. It only reads what it was asked about: the records of a
// response, each checked by the library before it is used.
package mdns

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// MaxMessage is the largest message read: RFC 6762 section 17 lets an mDNS
// message be as large as a 9000-byte jumbo frame, and no larger. A
// longer one is refused, not cut.
const MaxMessage = 9000

// maxRecords bounds the records taken from one message: avahi answers a
// browse with a handful a machine, and a message of tiny records could
// otherwise hold hundreds.
const maxRecords = 256

// Record types asked for and read.
const (
	TypeA    = dnsmessage.TypeA
	TypeAAAA = dnsmessage.TypeAAAA
	TypePTR  = dnsmessage.TypePTR
	TypeSRV  = dnsmessage.TypeSRV
	TypeTXT  = dnsmessage.TypeTXT
)

// Question is one name and type asked for.
type Question struct {
	Name string // with or without the final dot
	Type dnsmessage.Type
}

// Record is one answer or additional record of a response, of a type this
// package reads: A, AAAA, PTR, SRV or TXT. Names have no final dot.
type Record struct {
	Name   string
	Type   dnsmessage.Type
	TTL    uint32
	IP     netip.Addr // A, AAAA
	Target string     // PTR: the instance; SRV: the host
	Port   uint16     // SRV
	Text   []string   // TXT: each string as sent, bytes unchecked
}

// Query is a DNS query with id for questions. A query from port 5353 has
// ID 0 (RFC 6762 section 18.1); a one-shot query from another port
// carries one to match the answer, which comes back by unicast (section
// 6.7).
func Query(id uint16, questions ...Question) ([]byte, error) {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, q := range questions {
		name, err := dnsmessage.NewName(strings.TrimSuffix(q.Name, ".") + ".")
		if err != nil {
			return nil, fmt.Errorf("mdns: name %q: %w", q.Name, err)
		}
		if err := b.Question(dnsmessage.Question{Name: name, Type: q.Type, Class: dnsmessage.ClassINET}); err != nil {
			return nil, fmt.Errorf("mdns: name %q: %w", q.Name, err)
		}
	}
	return b.Finish()
}

// Errors of Parse.
var (
	ErrNotResponse = errors.New("not a response")
	ErrTooLarge    = fmt.Errorf("larger than %d bytes", MaxMessage)
)

// Parse reads a response's answer and additional records of the types
// this package knows, in order. A message that is not a response, too
// large, or malformed anywhere yields an error and no records: a sender
// that gets the wire format wrong is not trusted with the rest.
func Parse(msg []byte) ([]Record, error) {
	if len(msg) > MaxMessage {
		return nil, ErrTooLarge
	}
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, err
	}
	if !h.Response {
		return nil, ErrNotResponse
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, err
	}
	var out []Record
	read := func(next func() (dnsmessage.ResourceHeader, error)) error {
		for {
			rh, err := next()
			if errors.Is(err, dnsmessage.ErrSectionDone) {
				return nil
			}
			if err != nil {
				return err
			}
			if len(out) == maxRecords {
				return fmt.Errorf("more than %d records", maxRecords)
			}
			r := Record{Name: strings.TrimSuffix(rh.Name.String(), "."), Type: rh.Type, TTL: rh.TTL}
			known := true
			switch typ := rh.Type; {
			// The top bit of the class is mDNS's cache-flush bit
			// (RFC 6762 section 10.2).
			case rh.Class&0x7fff != dnsmessage.ClassINET:
				known = false
				_, err = p.UnknownResource()
			case typ == TypeA:
				var a dnsmessage.AResource
				if a, err = p.AResource(); err == nil {
					r.IP = netip.AddrFrom4(a.A)
				}
			case typ == TypeAAAA:
				var a dnsmessage.AAAAResource
				if a, err = p.AAAAResource(); err == nil {
					r.IP = netip.AddrFrom16(a.AAAA)
				}
			case typ == TypePTR:
				var ptr dnsmessage.PTRResource
				if ptr, err = p.PTRResource(); err == nil {
					r.Target = strings.TrimSuffix(ptr.PTR.String(), ".")
				}
			case typ == TypeSRV:
				var srv dnsmessage.SRVResource
				if srv, err = p.SRVResource(); err == nil {
					r.Target, r.Port = strings.TrimSuffix(srv.Target.String(), "."), srv.Port
				}
			case typ == TypeTXT:
				var txt dnsmessage.TXTResource
				if txt, err = p.TXTResource(); err == nil {
					r.Text = txt.TXT
				}
			default:
				known = false
				_, err = p.UnknownResource()
			}
			if err != nil {
				return err
			}
			if known {
				out = append(out, r)
			}
		}
	}
	if err := read(p.AnswerHeader); err != nil {
		return nil, err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return nil, err
	}
	if err := read(p.AdditionalHeader); err != nil {
		return nil, err
	}
	return out, nil
}

// SameName compares DNS names as DNS does: ASCII letters without case, a
// final dot or not.
func SameName(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}
