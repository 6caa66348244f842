package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// echo answers with the method, the request target, the Host and the body
// it received, and counts its calls.
func echo(hits *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		fmt.Fprintf(w, "%s %s %s %s", r.Method, r.URL.RequestURI(), r.Host, body)
	})
}

func TestRouting(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	var hits atomic.Int32
	tun := env.Serve(echo(&hits))
	host := tun.Host()
	label, _, _ := strings.Cut(host, ".")
	_, port, _ := net.SplitHostPort(host)
	base := "http://" + env.Addr

	t.Run("by Host", func(t *testing.T) {
		for _, tc := range []struct{ name, host string }{
			{"as registered", host},
			{"without port", label + ".localhost"},
			{"uppercase", strings.ToUpper(label) + ".LOCALHOST:" + port},
			{"mixed case", label[:10] + strings.ToUpper(label[10:]) + ".LocalHost:" + port},
			{"trailing dot", label + ".localhost.:" + port},
			{"trailing dot, no port", label + ".localhost."},
			{"another port", label + ".localhost:1"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req := newRequest(t, http.MethodGet, base+"/p?q=1", nil)
				req.Host = tc.host
				r := mustDo(t, env, req)
				if want := "GET /p?q=1 " + tc.host + " "; r.status != 200 || r.body != want {
					t.Fatalf("got %d %q, want 200 %q", r.status, r.body, want)
				}
			})
		}
	})

	t.Run("every method", func(t *testing.T) {
		for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"} {
			t.Run(method, func(t *testing.T) {
				before := hits.Load()
				req := newRequest(t, method, tun.URL+"/m", strings.NewReader("body-of-"+method))
				r := mustDo(t, env, req)
				if r.status != 200 || r.header.Get("X-Method") != method {
					t.Fatalf("got %d, X-Method %q", r.status, r.header.Get("X-Method"))
				}
				want := method + " /m " + host + " body-of-" + method
				if method == http.MethodHead {
					want = ""
					if cl := r.header.Get("Content-Length"); cl != fmt.Sprint(len(method+" /m "+host+" body-of-"+method)) {
						t.Fatalf("HEAD Content-Length %q", cl)
					}
				}
				if r.body != want {
					t.Fatalf("body %q, want %q", r.body, want)
				}
				if hits.Load() != before+1 {
					t.Fatalf("handler ran %d times", hits.Load()-before)
				}
			})
		}
	})

	t.Run("apex gets the landing page", func(t *testing.T) {
		for _, tc := range []struct{ name, method, host string }{
			{"GET", "GET", "localhost:" + port},
			{"no port", "GET", "localhost"},
			{"uppercase, trailing dot", "GET", "LOCALHOST.:" + port},
			{"HEAD", "HEAD", "localhost:" + port},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := hits.Load()
				req := newRequest(t, tc.method, base+"/", nil)
				req.Host = tc.host
				r := mustDo(t, env, req)
				if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
					t.Fatalf("got %d %q", r.status, r.header.Get("Content-Type"))
				}
				if tc.method == "GET" && !strings.Contains(r.body, "keyhole") {
					t.Fatalf("landing page %q", r.body)
				}
				if tc.method == "HEAD" && r.body != "" {
					t.Fatalf("HEAD body %q", r.body)
				}
				if hits.Load() != before {
					t.Fatal("the apex reached a tunnel")
				}
			})
		}
	})

	t.Run("other names get 404", func(t *testing.T) {
		for _, tc := range []struct{ name, host, path string }{
			{"unknown subdomain", "foo.localhost:" + port, "/"},
			{"label under another domain", label + ".example.com", "/"},
			{"uppercase label under another domain", strings.ToUpper(label) + ".EXAMPLE.COM", "/"},
			{"51-char label", label[:51] + ".localhost:" + port, "/"},
			{"53-char label", label + "a.localhost:" + port, "/"},
			{"label with non-base32 characters", strings.Repeat("1", 52) + ".localhost:" + port, "/"},
			{"subdomain of a tunnel", "x." + label + ".localhost:" + port, "/"},
			{"tunnel name as a prefix", label + ".localhost.evil.example", "/"},
			{"tunnel domain as a suffix only", label + "localhost", "/"},
			{"the proxy's IP", env.Addr, "/"},
			{"apex, another path", "localhost:" + port, "/p"},
			{"apex, the tunnel's path", "localhost:" + port, "/m"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := hits.Load()
				req := newRequest(t, http.MethodGet, base+tc.path, nil)
				req.Host = tc.host
				wantPublicError(t, mustDo(t, env, req), http.StatusNotFound)
				if hits.Load() != before {
					t.Fatal("the request reached a tunnel")
				}
			})
		}
	})

	t.Run("control path on a tunnel host goes to the tunnel", func(t *testing.T) {
		before := hits.Load()
		r := get(t, env, tun.URL+proxy.ControlPath)
		if want := "GET " + proxy.ControlPath + " " + host + " "; r.status != 200 || r.body != want {
			t.Fatalf("got %d %q, want %q", r.status, r.body, want)
		}
		if hits.Load() != before+1 {
			t.Fatal("the tunnel's handler did not run")
		}
	})
}
