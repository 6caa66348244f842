package client_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// A response whose headers would push its frame past the proxy's read
// limit fails only that exchange: the client answers CodeTooLarge (502)
// instead of sending a frame that would end the whole connection.
func TestResponseHeadersOverLimit(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{MaxBody: 1000})
	big := strings.Repeat("x", proxy.MaxHeaderBytes)
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Header().Set("X-Big", big)
		}
		w.Write([]byte("ok"))
	}))
	if status, _ := env.Get(t, tun.URL+"/big"); status != http.StatusBadGateway {
		t.Fatalf("oversized headers: status %d, want 502", status)
	}
	// The connection survived: the next request is answered normally.
	if status, body := env.Get(t, tun.URL+"/small"); status != http.StatusOK || body != "ok" {
		t.Fatalf("after oversized headers: %d %q", status, body)
	}
}
