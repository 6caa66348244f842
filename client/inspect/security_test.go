package inspect_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/client/inspect"
)

// serve runs one request through the handler as if it came from remote.
func serve(h http.Handler, method, target, host, remote string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.Host, r.RemoteAddr = host, remote
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestHostCheck(t *testing.T) {
	s := inspect.New(inspect.Options{})
	for _, tc := range []struct {
		name string
		o    inspect.HandlerOptions
		host string
		ok   bool
	}{
		{"127.0.0.1", inspect.HandlerOptions{}, "127.0.0.1:4040", true},
		{"another loopback address", inspect.HandlerOptions{}, "127.0.0.2:4040", true},
		{"localhost", inspect.HandlerOptions{}, "localhost:4040", true},
		{"localhost in capitals without a port", inspect.HandlerOptions{}, "LOCALHOST", true},
		{"IPv6 loopback", inspect.HandlerOptions{}, "[::1]:4040", true},
		{"a rebinding name", inspect.HandlerOptions{}, "attacker.example:4040", false},
		{"a name that resolves to loopback", inspect.HandlerOptions{}, "127.0.0.1.nip.io:4040", false},
		{"a name ending in localhost", inspect.HandlerOptions{}, "localhost.attacker.example", false},
		{"no Host", inspect.HandlerOptions{}, "", false},
		{"another IP address", inspect.HandlerOptions{}, "192.0.2.10:4040", false},
		{"the configured address", inspect.HandlerOptions{Addr: "192.0.2.10:4040"}, "192.0.2.10:4040", true},
		{"the configured name", inspect.HandlerOptions{Addr: "devbox.lan:4040"}, "devbox.lan:4040", true},
		{"any IP address when bound to all", inspect.HandlerOptions{Addr: "0.0.0.0:4040"}, "192.0.2.10:4040", true},
		{"still no names when bound to all", inspect.HandlerOptions{Addr: "0.0.0.0:4040"}, "attacker.example:4040", false},
		{"an allowed host", inspect.HandlerOptions{AllowedHosts: []string{"inspect.dev.example"}}, "inspect.dev.example", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(s.Handler(tc.o), "GET", "/api/tunnels", tc.host, "127.0.0.1:5000")
			if ok := w.Code == 200; ok != tc.ok {
				t.Errorf("Host %q: %d %s", tc.host, w.Code, w.Body)
			}
			if !tc.ok && (w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "DNS rebinding")) {
				t.Errorf("refusal: %d %s, want 403 naming DNS rebinding", w.Code, w.Body)
			}
		})
	}
}

func TestStateChangesNeedSameOrigin(t *testing.T) {
	s := inspect.New(inspect.Options{})
	h := s.Handler(inspect.HandlerOptions{Token: ""})
	const host = "127.0.0.1:4040"
	for _, tc := range []struct {
		name   string
		remote string
		header []string
		ok     bool
	}{
		{"the page itself", "127.0.0.1:5000", []string{"Origin", "http://127.0.0.1:4040", "Sec-Fetch-Site", "same-origin"}, true},
		{"a browser without Sec-Fetch-Site", "127.0.0.1:5000", []string{"Origin", "http://127.0.0.1:4040"}, true},
		{"another site's page", "127.0.0.1:5000", []string{"Origin", "https://attacker.example", "Sec-Fetch-Site", "cross-site"}, false},
		{"another site, Origin only", "127.0.0.1:5000", []string{"Origin", "https://attacker.example"}, false},
		{"another port of localhost", "127.0.0.1:5000", []string{"Origin", "http://127.0.0.1:3000", "Sec-Fetch-Site", "same-site"}, false},
		{"an opaque origin", "127.0.0.1:5000", []string{"Origin", "null"}, false},
		{"a cross-site form without Origin", "127.0.0.1:5000", []string{"Sec-Fetch-Site", "cross-site"}, false},
		{"curl on this machine", "127.0.0.1:5000", nil, true},
		{"curl on this machine over IPv6", "[::1]:5000", nil, true},
		{"curl from another machine", "192.0.2.7:5000", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(h, "DELETE", "/api/requests/http", host, tc.remote, tc.header...)
			if ok := w.Code == http.StatusNoContent; ok != tc.ok {
				t.Errorf("%d %s", w.Code, w.Body)
			}
			if !tc.ok && w.Code != http.StatusForbidden {
				t.Errorf("refused with %d, want 403", w.Code)
			}
			// Reading is never refused for the origin: the browser keeps
			// other sites from reading the answer.
			if w := serve(h, "GET", "/api/requests/http", host, tc.remote, tc.header...); w.Code != 200 {
				t.Errorf("GET: %d", w.Code)
			}
		})
	}
}

func TestToken(t *testing.T) {
	s := inspect.New(inspect.Options{})
	h := s.Handler(inspect.HandlerOptions{Addr: "0.0.0.0:4040", Token: "t0ken"})
	const host = "192.0.2.10:4040"
	const remote = "192.0.2.7:5000"
	for _, tc := range []struct {
		name   string
		method string
		target string
		header []string
		code   int
	}{
		{"no token", "GET", "/api/tunnels", nil, 401},
		{"the page without a token", "GET", "/", nil, 401},
		{"a wrong bearer token", "GET", "/api/tunnels", []string{"Authorization", "Bearer nope"}, 401},
		{"the bearer token", "GET", "/api/tunnels", []string{"Authorization", "Bearer t0ken"}, 200},
		{"the cookie", "GET", "/api/tunnels", []string{"Cookie", "keyhole_inspector=t0ken"}, 200},
		{"a wrong cookie", "GET", "/api/tunnels", []string{"Cookie", "keyhole_inspector=nope"}, 401},
		{"the page with ?token", "GET", "/?token=t0ken", nil, 303},
		{"a wrong ?token", "GET", "/?token=nope", nil, 401},
		{"a change with the bearer token from afar", "DELETE", "/api/requests/http", []string{"Authorization", "Bearer t0ken"}, 204},
		{"a change with only the cookie from afar", "DELETE", "/api/requests/http", []string{"Cookie", "keyhole_inspector=t0ken"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(h, tc.method, tc.target, host, remote, tc.header...)
			if w.Code != tc.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tc.code)
			}
			if tc.code == 303 {
				c := w.Result().Cookies()
				if len(c) != 1 || c[0].Value != "t0ken" || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
					t.Errorf("cookie %v", c)
				}
				if loc := w.Header().Get("Location"); strings.Contains(loc, "token") {
					t.Errorf("redirected to %q, which still holds the token", loc)
				}
			}
		})
	}
}

func TestCheckAddrAndListen(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		needsToken  bool
		invalid     bool
	}{
		{"127.0.0.1:4040", "", false, false},
		{"localhost:4040", "", false, false},
		{"[::1]:4040", "", false, false},
		{"0.0.0.0:4040", "", true, false},
		{":4040", "", true, false},
		{"192.0.2.10:4040", "", true, false},
		{"devbox.lan:4040", "", true, false},
		{"0.0.0.0:4040", "t", false, false},
		{"4040", "", false, true},
	} {
		err := inspect.CheckAddr(tc.addr, tc.token)
		switch {
		case tc.needsToken && !errors.Is(err, inspect.ErrNeedsToken):
			t.Errorf("CheckAddr(%q, %q) = %v, want ErrNeedsToken", tc.addr, tc.token, err)
		case tc.invalid && err == nil:
			t.Errorf("CheckAddr(%q) accepted", tc.addr)
		case !tc.needsToken && !tc.invalid && err != nil:
			t.Errorf("CheckAddr(%q, %q) = %v", tc.addr, tc.token, err)
		}
	}
	if _, err := inspect.Listen("0.0.0.0:0", ""); !errors.Is(err, inspect.ErrNeedsToken) {
		t.Errorf("Listen beyond loopback without a token: %v", err)
	}

	// A port in use: Listen moves up, as ngrok moves from 4040 to 4041.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	ln, err := inspect.Listen("127.0.0.1:"+strconv.Itoa(port), "")
	if err != nil {
		t.Fatalf("Listen on a taken port: %v", err)
	}
	defer ln.Close()
	got := ln.Addr().(*net.TCPAddr).Port
	if got <= port || got >= port+10 {
		t.Errorf("got port %d, want one of the 9 after %d", got, port)
	}
}
