package inspect

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// frame encodes one WebSocket frame (RFC 6455 section 5.2), masked with a
// fixed key when mask is set, as a client's frames are.
func frame(fin bool, op byte, payload []byte, mask bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var mbit byte
	if mask {
		mbit = 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	p := bytes.Clone(payload)
	if mask {
		key := []byte{0x37, 0xfa, 0x21, 0x3d}
		out = append(out, key...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(out, p...)
}

func TestFrameParser(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 70000)
	mid := bytes.Repeat([]byte{7}, 300)
	closePayload := append(binary.BigEndian.AppendUint16(nil, 1001), "going"...)
	for _, mask := range []bool{false, true} {
		var stream []byte
		stream = append(stream, frame(true, 1, []byte("hello"), mask)...)
		stream = append(stream, frame(true, 2, mid, mask)...)
		stream = append(stream, frame(false, 1, []byte("hel"), mask)...)
		stream = append(stream, frame(true, 9, []byte("pi"), mask)...) // a ping between fragments
		stream = append(stream, frame(true, 0, []byte("lo ✓"), mask)...)
		stream = append(stream, frame(true, 1, big, mask)...)
		stream = append(stream, frame(true, 1, nil, mask)...)
		stream = append(stream, frame(true, 8, closePayload, mask)...)
		want := []string{
			"text 5 hello false 0",
			"binary 300 " + string(mid[:16]) + " true 0",
			"ping 2 pi false 0",
			"text 9 hello ✓ false 0",
			"text 70000 zzzzzzzzzzzzzzzz true 0",
			"text 0  false 0",
			"close 7 going false 1001",
		}
		for _, chunk := range []int{1, 3, 7, 1000, len(stream)} {
			t.Run(fmt.Sprintf("mask=%v/chunk=%d", mask, chunk), func(t *testing.T) {
				s := New(Options{PreviewLimit: 16})
				x := s.BeginWebSocket(messages.ID{1}, "/ws", "h", nil)
				p := &frameParser{x: x, dir: DirIn, max: 16}
				for b := stream; len(b) > 0; {
					n := min(chunk, len(b))
					p.feed(b[:n])
					b = b[n:]
				}
				r, _ := s.snapshot(x.r.ID)
				var got []string
				for _, m := range r.WS {
					if m.Direction != DirIn {
						t.Errorf("direction %q", m.Direction)
					}
					got = append(got, fmt.Sprintf("%s %d %s%s %v %d", m.Type, m.Size, m.Text, m.Data, m.Truncated, m.CloseCode))
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("messages:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			})
		}
	}
}

func TestSSEParser(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream string
		want   []string
	}{
		{"fields, comments, CRLF and a BOM",
			"\xef\xbb\xbf: a comment\r\nid: 1\r\nevent: greet\r\ndata: hello\r\ndata:  world\r\n\r\ndata: second\r\n\r\n",
			[]string{"1|greet|hello\n world|12", "||second|6"}},
		{"LF and CR line ends",
			"data: a\n\ndata: b\r\rdata\n\n",
			[]string{"||a|1", "||b|1", "|||0"}},
		{"an event without data",
			"event: ping\n\n",
			[]string{"|ping||0"}},
		{"an unfinished event is dropped",
			"data: done\n\ndata: unfinished",
			[]string{"||done|4"}},
		{"data past the preview limit",
			"data: 0123456789abcdefXYZ\n\n",
			[]string{"||0123456789abcdef|19 truncated"}},
	} {
		// Every split of the stream in two: a line or a CRLF cut
		// between reads must parse the same.
		for cut := 0; cut <= len(tc.stream); cut++ {
			t.Run(fmt.Sprintf("%s/cut=%d", tc.name, cut), func(t *testing.T) {
				s := New(Options{PreviewLimit: 16})
				x := s.BeginHTTP(messages.ID{1}, "GET", "/events", "h", nil)
				x.Response(&http.Response{StatusCode: 200}, messages.Header{"Content-Type": {"text/event-stream; charset=utf-8"}})
				s.appendBody(x, true, []byte(tc.stream[:cut]), false, -1)
				s.appendBody(x, true, []byte(tc.stream[cut:]), false, -1)
				x.End(200, false)
				r, _ := s.snapshot(x.r.ID)
				var got []string
				for _, e := range r.SSE {
					g := fmt.Sprintf("%s|%s|%s|%d", e.ID, e.Event, e.Data, e.Size)
					if e.Truncated {
						g += " truncated"
					}
					got = append(got, g)
				}
				if strings.Join(got, ";") != strings.Join(tc.want, ";") {
					t.Fatalf("events %q, want %q", got, tc.want)
				}
			})
		}
	}
}
