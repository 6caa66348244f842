package inspect_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// BenchmarkTunnelCapture is requests through an in-process proxy and
// client to a local service, without an inspector and with capture on:
// the capture's share of a whole exchange. (The benchmark harness in
// bench/ measures the same across processes.)
func BenchmarkTunnelCapture(b *testing.B) {
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read all before answering: an HTTP/1.1 handler's request body
		// ends once its response is under way.
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	}))
	defer local.Close()
	target, _ := url.Parse(local.URL)
	for _, size := range []int{0, 16 << 10, 256 << 10} {
		body := bytes.Repeat([]byte("k"), size)
		for _, mode := range []string{"none", "on"} {
			b.Run(fmt.Sprintf("body=%d/%s", size, mode), func(b *testing.B) {
				env := tunneltest.StartProxy(b, proxy.Config{MaxBody: -1})
				c := &client.Client{Target: target}
				if mode == "on" {
					c.Inspect = inspect.New(inspect.Options{})
				}
				tun := env.Connect(c)
				b.SetBytes(int64(2 * size))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						resp, err := env.HTTP.Post(tun.URL+"/echo", "application/octet-stream", bytes.NewReader(body))
						if err != nil {
							b.Error(err)
							return
						}
						n, _ := io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 || n != int64(size) {
							b.Errorf("%d with %d bytes", resp.StatusCode, n)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			})
		}
	}
}
