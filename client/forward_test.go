package client_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// seen is what the local service reports about the request it got.
type seen struct {
	RequestURI     string
	Host           string
	ForwardedHost  string
	ForwardedProto string
	Method         string
	Body           string
	LocalNetwork   string
}

func reportRequest(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s := seen{
		RequestURI:     r.RequestURI,
		Host:           r.Host,
		ForwardedHost:  r.Header.Get("X-Forwarded-Host"),
		ForwardedProto: r.Header.Get("X-Forwarded-Proto"),
		Method:         r.Method,
		Body:           string(b),
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		s.LocalNetwork = a.Network()
	}
	w.Header().Add("X-Multi", "one")
	w.Header().Add("X-Multi", "two")
	json.NewEncoder(w).Encode(s)
}

func fetchSeen(t *testing.T, env *tunneltest.Env, method, rawURL, body string) seen {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, rawURL, resp.StatusCode, b)
	}
	if got := resp.Header.Values("X-Multi"); len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("X-Multi = %q, want [one two]", got)
	}
	var s seen
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return s
}

func TestForwardJoinsPaths(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	origin := httptest.NewServer(http.HandlerFunc(reportRequest))
	defer origin.Close()
	for _, tc := range []struct {
		name, base, uri, want string
	}{
		{"no prefix, query kept byte for byte", "", "/x/y?q=1&q=2&s=a+b%26c&t=%7e", "/x/y?q=1&q=2&s=a+b%26c&t=%7e"},
		{"prefix", "/base", "/x", "/base/x"},
		{"prefix with slash", "/base/", "/x?k=v", "/base/x?k=v"},
		{"root under prefix", "/base", "/", "/base/"},
		{"encoded slash kept", "/base", "/a%2Fb", "/base/a%2Fb"},
		{"encoded slash, no prefix", "", "/a%2Fb?x=%2F", "/a%2Fb?x=%2F"},
		{"escaped prefix", "/b%20c", "/a%2Fb", "/b%20c/a%2Fb"},
		{"encoded slash in prefix", "/x%2Fy", "/z", "/x%2Fy/z"},
		{"trailing slash kept", "/base", "/dir/", "/base/dir/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, err := url.Parse(origin.URL + tc.base)
			if err != nil {
				t.Fatal(err)
			}
			tun := env.Connect(&client.Client{Target: target})
			defer tun.Stop()
			s := fetchSeen(t, env, "GET", tun.URL+tc.uri, "")
			if s.RequestURI != tc.want {
				t.Errorf("local service got %q, want %q", s.RequestURI, tc.want)
			}
		})
	}
}

func TestForwardHostHeader(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	origin := httptest.NewServer(http.HandlerFunc(reportRequest))
	defer origin.Close()
	target, _ := url.Parse(origin.URL)
	for _, tc := range []struct {
		hostHeader string
		want       func(tun *tunneltest.Tunnel) string
	}{
		{"", func(tun *tunneltest.Tunnel) string { return tun.Host() }},
		{"rewrite", func(*tunneltest.Tunnel) string { return target.Host }},
		{"app.internal:3000", func(*tunneltest.Tunnel) string { return "app.internal:3000" }},
	} {
		t.Run("HostHeader="+tc.hostHeader, func(t *testing.T) {
			tun := env.Connect(&client.Client{Target: target, HostHeader: tc.hostHeader})
			defer tun.Stop()
			s := fetchSeen(t, env, "POST", tun.URL+"/form", "a=1")
			if want := tc.want(tun); s.Host != want {
				t.Errorf("Host = %q, want %q", s.Host, want)
			}
			// Whatever Host the service sees, it can still learn the public
			// one.
			if s.ForwardedHost != tun.Host() || s.ForwardedProto != "http" {
				t.Errorf("X-Forwarded-Host %q, -Proto %q; want %q, http", s.ForwardedHost, s.ForwardedProto, tun.Host())
			}
			if s.Method != "POST" || s.Body != "a=1" {
				t.Errorf("got %s with body %q", s.Method, s.Body)
			}
		})
	}
}

func TestHandlerInProcess(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	tun := env.Serve(http.HandlerFunc(reportRequest))
	s := fetchSeen(t, env, "PATCH", tun.URL+"/items/7?fields=a,b", "{\"n\":1}")
	want := seen{
		RequestURI:     "/items/7?fields=a,b",
		Host:           tun.Host(),
		ForwardedHost:  tun.Host(),
		ForwardedProto: "http",
		Method:         "PATCH",
		Body:           `{"n":1}`,
		LocalNetwork:   "pipe", // an in-memory pipe, not a socket
	}
	if s != want {
		t.Errorf("handler saw %+v\nwant %+v", s, want)
	}
}
