package inspect

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// BenchmarkCapture measures what capture adds to one exchange on the
// client: the calls forward.go makes, with both bodies read in 64 KiB
// chunks as the transport and SendBody read them. "none" is a client
// without an inspector (a nil *Store), the baseline; "off" a Store with
// capture off; "on" the default Store. The difference between "on" and
// "none" is the capture's cost per exchange.
func BenchmarkCapture(b *testing.B) {
	header := messages.Header{
		"Content-Type": {"application/json"}, "User-Agent": {"bench/1"}, "Accept": {"*/*"},
		"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"},
	}
	respHeader := messages.Header{"Content-Type": {"application/json"}, "Content-Length": {"0"}}
	resp := &http.Response{StatusCode: 200, Proto: "HTTP/1.1"}
	for _, size := range []int{0, 1 << 10, 64 << 10, 1 << 20} {
		body := bytes.Repeat([]byte("x"), size)
		for _, mode := range []string{"none", "off", "on"} {
			var s *Store
			switch mode {
			case "off":
				s = New(Options{Budget: -1})
			case "on":
				s = New(Options{})
			}
			one := func(buf []byte, id messages.ID) {
				x := s.BeginHTTP(id, "POST", "/api/things?id=1", "abc.tunnel.example", header)
				var in io.ReadCloser = io.NopCloser(bytes.NewReader(body))
				in = x.RequestBody(in, int64(size))
				for {
					if _, err := in.Read(buf); err != nil {
						break
					}
				}
				x.Response(resp, respHeader)
				out := x.ResponseBody(bytes.NewReader(body), int64(size))
				for {
					if _, err := out.Read(buf); err != nil {
						break
					}
				}
				x.End(200, false)
			}
			// Each exchange has its own ID, as the proxy's are.
			var seq atomic.Uint64
			nextID := func() (id messages.ID) {
				binary.BigEndian.PutUint64(id[:], seq.Add(1))
				return id
			}
			b.Run(fmt.Sprintf("body=%d/%s", size, mode), func(b *testing.B) {
				buf := make([]byte, messages.MaxData)
				b.SetBytes(int64(2 * size))
				b.ReportAllocs()
				for b.Loop() {
					one(buf, nextID())
				}
			})
			b.Run(fmt.Sprintf("body=%d/%s/parallel", size, mode), func(b *testing.B) {
				b.SetBytes(int64(2 * size))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, messages.MaxData)
					for pb.Next() {
						one(buf, nextID())
					}
				})
			})
		}
	}
}
