package jobwire_test

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
)

// dnsServer is a tiny authoritative DNS server on loopback UDP that answers
// every A query with the same addresses and every other query with no
// records. It stands in for a cluster DNS name with one record per broker
// replica, which this machine's /etc/hosts cannot express; the client's
// resolver speaks real DNS to it.
type dnsServer struct {
	conn net.PacketConn
	ips  []net.IP
}

// startDNS serves ips and returns a resolver that asks only this server.
func startDNS(t *testing.T, ips ...string) *net.Resolver {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: conn}
	for _, ip := range ips {
		s.ips = append(s.ips, net.ParseIP(ip).To4())
	}
	go s.serve()
	t.Cleanup(func() { conn.Close() })
	addr := conn.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if reply := s.answer(buf[:n]); reply != nil {
			_, _ = s.conn.WriteTo(reply, from)
		}
	}
}

// answer builds the reply to one query (RFC 1035, section 4.1): the header
// with QR, AA and RA set, the question echoed, and an A record per address
// when the question asks for A.
func (s *dnsServer) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	// The question: labels up to the zero byte, then type and class.
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // the zero byte, type, class
	if end > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[end-4 : end-2])
	var answers []net.IP
	if qtype == 1 { // A
		answers = s.ips
	}
	out := make([]byte, 12, 512)
	copy(out[0:2], q[0:2])                                                     // id
	flags := 0x8000 | 0x0400 | 0x0080 | binary.BigEndian.Uint16(q[2:4])&0x0100 // QR, AA, RA, RD echoed
	binary.BigEndian.PutUint16(out[2:4], flags)
	binary.BigEndian.PutUint16(out[4:6], 1)
	binary.BigEndian.PutUint16(out[6:8], uint16(len(answers)))
	out = append(out, q[12:end]...)
	for _, ip := range answers {
		out = append(out, 0xC0, 12)                  // the name: a pointer to the question's
		out = binary.BigEndian.AppendUint16(out, 1)  // type A
		out = binary.BigEndian.AppendUint16(out, 1)  // class IN
		out = binary.BigEndian.AppendUint32(out, 60) // TTL
		out = binary.BigEndian.AppendUint16(out, 4)
		out = append(out, ip...)
	}
	return out
}

// The test DNS server itself: a name resolves to both addresses, in order.
func TestDNSServerAnswersBothRecords(t *testing.T) {
	r := startDNS(t, "127.0.0.1", "127.0.0.2")
	got, err := r.LookupHost(context.Background(), "brokers.jobwire.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "127.0.0.1" || got[1] != "127.0.0.2" {
		t.Errorf("LookupHost = %v, want [127.0.0.1 127.0.0.2]", got)
	}
}
