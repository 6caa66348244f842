package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/messages"
)

const testLabel = "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq"

func TestNormalizeHost(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"example.com:8080", "example.com"},
		{"example.com.", "example.com"},
		{"EXAMPLE.com.:443", "example.com"},
		{testLabel + ".localhost:1234", testLabel + ".localhost"},
		{strings.ToUpper(testLabel) + ".LOCALHOST.", testLabel + ".localhost"},
		{"[::1]:80", "::1"},
		{"127.0.0.1:80", "127.0.0.1"},
		{"", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := normalizeHost(tc.in); got != tc.want {
				t.Fatalf("normalizeHost(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTunnelLabel(t *testing.T) {
	p, err := New(context.Background(), Config{Domain: "Tunnel.Example."})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	for _, tc := range []struct {
		host, want string // want "" for not a tunnel's
	}{
		{testLabel + ".tunnel.example", testLabel},
		{"tunnel.example", ""},
		// Friendly names: any other DNS label that is not reserved.
		{"foo.tunnel.example", "foo"},
		{testLabel[:51] + ".tunnel.example", testLabel[:51]},
		{testLabel + "a.tunnel.example", testLabel + "a"},
		{strings.Repeat("1", 52) + ".tunnel.example", strings.Repeat("1", 52)},
		{"www.tunnel.example", ""},
		{"tunnel.tunnel.example", ""}, // the domain's first label is reserved
		{"my_app.tunnel.example", ""},
		{strings.Repeat("a", 64) + ".tunnel.example", ""},
		{"x." + testLabel + ".tunnel.example", ""},
		{testLabel + ".example", ""},
		{testLabel + ".tunnel.example.evil", ""},
		{testLabel + ".othertunnel.example", ""},
		// tunnelLabel sees hosts after normalizeHost, which lowercases.
		{strings.ToUpper(testLabel) + ".tunnel.example", ""},
	} {
		t.Run(tc.host, func(t *testing.T) {
			label, ok := p.tunnelLabel(tc.host)
			if ok != (tc.want != "") || label != tc.want {
				t.Fatalf("tunnelLabel(%q) = %q, %v; want %q", tc.host, label, ok, tc.want)
			}
		})
	}
}

func TestCookieAllowed(t *testing.T) {
	const domain = "localhost"
	own := testLabel + ".localhost"
	other := strings.Repeat("a", 52) + ".localhost"
	for _, tc := range []struct {
		name   string
		cookie string
		ok     bool
	}{
		{"host-only", "a=1", true},
		{"host-only with attributes", "a=1; Path=/; HttpOnly; Secure; SameSite=Lax", true},
		{"own host", "a=1; Domain=" + own, true},
		{"own host with leading dot", "a=1; Domain=." + own, true},
		{"own host uppercase", "a=1; domain=" + strings.ToUpper(own), true},
		{"own host trailing dot", "a=1; Domain=" + own + ".", true},
		{"empty domain is host-only", "a=1; Domain=", true},
		{"domain-like value in the cookie value", "a=Domain=localhost", true},
		{"tunnel domain", "a=1; Domain=localhost", false},
		{"tunnel domain leading dot", "a=1; Domain=.localhost", false},
		{"tunnel domain uppercase, spaced", "a=1; DOMAIN = LOCALHOST", false},
		{"tunnel domain trailing dot", "a=1; Domain=localhost.", false},
		{"another tunnel", "a=1; Domain=" + other, false},
		{"an unrelated domain", "a=1; Domain=example.com", false},
		{"own host then tunnel domain", "a=1; Domain=" + own + "; Domain=localhost", false},
		{"tunnel domain then own host", "a=1; Domain=localhost; Domain=" + own, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cookieAllowed(tc.cookie, own, domain); got != tc.ok {
				t.Fatalf("cookieAllowed(%q) = %v, want %v", tc.cookie, got, tc.ok)
			}
		})
	}
}

func TestRequestURI(t *testing.T) {
	for _, tc := range []struct {
		name, target, want string
	}{
		{"path", "/a/b", "/a/b"},
		{"query", "/search?q=a+b&x=%2F", "/search?q=a+b&x=%2F"},
		{"escaped slash kept", "/a%2Fb/c", "/a%2Fb/c"},
		{"double slash kept", "//x//y", "//x//y"},
		{"asterisk", "*", "*"},
		{"absolute form", "http://example.com/p?q=1", "/p?q=1"},
		{"absolute form, no path", "http://example.com", "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodGet
			if tc.target == "*" {
				method = http.MethodOptions
			}
			r := httptest.NewRequest(method, tc.target, nil)
			if got := requestURI(r); got != tc.want {
				t.Fatalf("requestURI(%q) = %q, want %q", tc.target, got, tc.want)
			}
		})
	}
}

func TestErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		code messages.ErrorCode
		want int
	}{
		{messages.CodeCanceled, http.StatusBadGateway},
		{messages.CodeUnavailable, http.StatusBadGateway},
		{messages.CodeRateLimited, http.StatusTooManyRequests},
		{messages.CodeTooLarge, http.StatusBadGateway},
		{messages.CodeBadResponse, http.StatusBadGateway},
		{messages.CodeUpstream, http.StatusBadGateway},
		{messages.CodeOverloaded, http.StatusServiceUnavailable},
		{messages.CodeReplaced, http.StatusBadGateway},
		{messages.CodeGoingAway, http.StatusBadGateway},
		{messages.CodePolicy, http.StatusBadGateway},
		{messages.CodeTimeout, http.StatusGatewayTimeout},
		{messages.ErrorCode(999), http.StatusBadGateway}, // unknown codes are a bad answer
	} {
		if got := errorStatus(tc.code); got != tc.want {
			t.Errorf("errorStatus(%d) = %d, want %d", tc.code, got, tc.want)
		}
	}
}

func TestCloseReason(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int // length of the result
	}{
		{"short", "nonce does not match", 20},
		{"exactly 123", strings.Repeat("a", 123), 123},
		{"124", strings.Repeat("a", 124), 123},
		{"multibyte at the edge", strings.Repeat("a", 122) + "é", 122}, // é would end at byte 124
		{"long multibyte", strings.Repeat("é", 100), 122},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := closeReason(tc.in)
			if len(got) != tc.want || !strings.HasPrefix(tc.in, got) || !utf8.ValidString(got) {
				t.Fatalf("closeReason gave %d bytes (%q), want %d, a valid prefix", len(got), got, tc.want)
			}
		})
	}
}

// Every error page the proxy writes is its fixed, generic message.
func TestPublicError(t *testing.T) {
	for status, msg := range publicMessages {
		t.Run(http.StatusText(status), func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("Content-Length", "12345") // left over from a client's answer
			if got := publicError(w, status); got != status {
				t.Fatalf("publicError returned %d", got)
			}
			if w.Code != status {
				t.Fatalf("status %d, want %d", w.Code, status)
			}
			if w.Body.String() != msg+"\n" {
				t.Fatalf("body %q", w.Body.String())
			}
			if !strings.HasPrefix(msg, strconv.Itoa(status)+" ") || len(msg) > 120 || strings.ContainsAny(msg, "<>\r\n") {
				t.Fatalf("message %q is not a short plain line starting with its status", msg)
			}
			h := w.Header()
			if h.Get("Content-Type") != "text/plain; charset=utf-8" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Content-Length") != "" {
				t.Fatalf("headers %v", h)
			}
		})
	}
	// A status without a fixed message still gets only its status text.
	w := httptest.NewRecorder()
	publicError(w, http.StatusTeapot)
	if w.Body.String() != "I'm a teapot\n" {
		t.Fatalf("body %q", w.Body.String())
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Domain != "localhost" || c.PublicURL != "http://localhost" || c.Timeout != defaultTimeout ||
		c.MaxBody != defaultMaxBody || c.Ping != defaultPing || c.challengeTTL <= 0 || c.StreamWriteTimeout <= 0 || c.Logger == nil {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = Config{Domain: "Tunnel.Example.", Rate: 5}.withDefaults()
	if err != nil || c.Domain != "tunnel.example" || c.Burst != 10 {
		t.Fatalf("got %q burst %d, %v", c.Domain, c.Burst, err)
	}
	if got := c.tunnelURL(testLabel); got != "http://"+testLabel+".tunnel.example" {
		t.Fatalf("tunnelURL = %q", got)
	}
	c, _ = Config{PublicURL: "https://localhost:8443"}.withDefaults()
	if got := c.tunnelURL(testLabel); got != "https://"+testLabel+".localhost:8443" {
		t.Fatalf("tunnelURL = %q", got)
	}
	for _, bad := range []Config{
		{Domain: "a/b"},
		{Domain: "a b"},
		{Domain: "localhost:80"},
		{PublicURL: "ftp://localhost"},
		{PublicURL: "http://other.example"},
		{PublicURL: "http://localhost/path"},
		{Timeout: -1},
		{IdleTimeout: -1},
		{Ping: -1},
		{MaxWindow: 1000},
		{WindowBudget: -1},
		{Rate: -1},
		{MaxBody: 1<<30 + 1},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestDetachKeepsHandedOffStreamsForwarded: a replaced connection that
// closes while streams it handed to its successor still have body frames
// on the way leaves those streams in the instance's forward table, so the
// frames reach the successor instead of being dropped.
func TestDetachKeepsHandedOffStreamsForwarded(t *testing.T) {
	m := bus.NewMemory()
	p, err := New(context.Background(), Config{Bus: m, Registry: m})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	id := messages.NewID()
	c := &clientConn{p: p, holder: p.instance + "/old", label: "old", gone: true, successor: "other/new",
		handedOff: map[messages.ID]string{id: "other/new"}, log: p.log}
	p.detach(c)
	frame := messages.Encode(&messages.Data{ID: id, End: true, Data: []byte("rest")})
	succ, last := p.forwarded(frame)
	if succ != "other/new" || !last {
		t.Fatalf("forwarded(body end of a handed-off stream) = %q, %v; want other/new, true", succ, last)
	}
	if other, _ := p.forwarded(messages.Encode(&messages.Data{ID: messages.NewID(), Data: []byte("x")})); other != "" {
		t.Fatalf("an unrelated stream is forwarded to %q", other)
	}
}
