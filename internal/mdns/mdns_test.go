package mdns

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Response builds a response as avahi sends one to a legacy unicast browse:
// the question repeated, and the records as answers.
func response(t testing.TB, add func(b *dnsmessage.Builder)) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 9, Response: true, Authoritative: true})
	b.EnableCompression()
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("_keystone-installer._tcp.local."), Type: TypePTR, Class: dnsmessage.ClassINET})
	b.StartAnswers()
	add(&b)
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func hdr(name string, class dnsmessage.Class) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Class: class, TTL: 10}
}

func TestParse(t *testing.T) {
	flush := dnsmessage.ClassINET | 0x8000
	msg := response(t, func(b *dnsmessage.Builder) {
		b.PTRResource(hdr("_keystone-installer._tcp.local.", dnsmessage.ClassINET), dnsmessage.PTRResource{PTR: dnsmessage.MustNewName("installer-1a2b._keystone-installer._tcp.local.")})
		b.SRVResource(hdr("installer-1a2b._keystone-installer._tcp.local.", flush), dnsmessage.SRVResource{Port: 22, Target: dnsmessage.MustNewName("nixos.local.")})
		b.TXTResource(hdr("installer-1a2b._keystone-installer._tcp.local.", flush), dnsmessage.TXTResource{TXT: []string{"firmware=uefi", "x=\x1b[31m;rm -rf /"}})
		b.AResource(hdr("nixos.local.", flush), dnsmessage.AResource{A: [4]byte{192, 0, 2, 10}})
		b.AAAAResource(hdr("nixos.local.", flush), dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fe80::1").As16()})
		b.AResource(hdr("chaos.local.", dnsmessage.ClassCHAOS), dnsmessage.AResource{A: [4]byte{1, 2, 3, 4}})
		b.MXResource(hdr("nixos.local.", flush), dnsmessage.MXResource{MX: dnsmessage.MustNewName("mx.local.")})
	})
	got, err := Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Name: "_keystone-installer._tcp.local", Type: TypePTR, TTL: 10, Target: "installer-1a2b._keystone-installer._tcp.local"},
		{Name: "installer-1a2b._keystone-installer._tcp.local", Type: TypeSRV, TTL: 10, Target: "nixos.local", Port: 22},
		{Name: "installer-1a2b._keystone-installer._tcp.local", Type: TypeTXT, TTL: 10, Text: []string{"firmware=uefi", "x=\x1b[31m;rm -rf /"}},
		{Name: "nixos.local", Type: TypeA, TTL: 10, IP: netip.MustParseAddr("192.0.2.10")},
		{Name: "nixos.local", Type: TypeAAAA, TTL: 10, IP: netip.MustParseAddr("fe80::1")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records:\n%+v\nwant\n%+v", got, want)
	}
	for i := range msg {
		if _, err := Parse(msg[:i]); err == nil && i > 12 {
			t.Errorf("cut at %d bytes: no error", i)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	q, err := Query(0, Question{"_keystone-installer._tcp.local", TypePTR})
	if err != nil {
		t.Fatal(err)
	}
	many := response(t, func(b *dnsmessage.Builder) {
		for range maxRecords + 1 {
			b.AResource(hdr("a.local.", dnsmessage.ClassINET), dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}})
		}
	})
	big := append(response(t, func(*dnsmessage.Builder) {}), make([]byte, MaxMessage)...)
	loop := []byte{0, 0, 0x84, 0, 0, 0, 0, 1, 0xC0, 12, 0xC0, 8}
	for _, tc := range []struct {
		name string
		msg  []byte
		want error
	}{
		{"a query", q, ErrNotResponse},
		{"too many records", many, nil},
		{"over 9000 bytes", big, ErrTooLarge},
		{"a pointer loop", loop, nil},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.msg)
			if err == nil || got != nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Parse = %v, %v; want an error %v", got, err, tc.want)
			}
		})
	}
}

func TestQuery(t *testing.T) {
	q, err := Query(7, Question{"web1.local", TypeA}, Question{"web1.local.", TypeAAAA})
	if err != nil {
		t.Fatal(err)
	}
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.ID != 7 || h.Response {
		t.Fatalf("header %+v, %v", h, err)
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 2 || qs[0].Name.String() != "web1.local." || qs[1].Type != TypeAAAA {
		t.Errorf("questions %v, %v", qs, err)
	}
	if _, err := Query(1, Question{string(make([]byte, 300)), TypeA}); err == nil {
		t.Error("a 300-byte name was asked for")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(response(f, func(b *dnsmessage.Builder) {
		b.SRVResource(hdr("i._keystone-installer._tcp.local.", dnsmessage.ClassINET), dnsmessage.SRVResource{Port: 22, Target: dnsmessage.MustNewName("nixos.local.")})
		b.TXTResource(hdr("i._keystone-installer._tcp.local.", dnsmessage.ClassINET), dnsmessage.TXTResource{TXT: []string{"a=b"}})
	}))
	f.Add([]byte{0, 0, 0x84, 0, 0, 0, 0, 1, 0xC0, 12, 0xC0, 8})
	f.Fuzz(func(t *testing.T, msg []byte) {
		records, err := Parse(msg)
		if err != nil && records != nil {
			t.Fatal("records with an error")
		}
		if len(records) > maxRecords {
			t.Fatalf("%d records", len(records))
		}
		for _, r := range records {
			if (r.Type == TypeA || r.Type == TypeAAAA) != r.IP.IsValid() {
				t.Fatalf("record %+v", r)
			}
		}
	})
}
