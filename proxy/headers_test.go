package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// hopByHop are the headers that must never cross the tunnel. TE crosses
// only as "trailers", and Trailer (the message's own trailer fields) always.
var hopByHop = []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Proxy-Authorization", "Proxy-Authenticate", "Proxy-Connection"}

// headerNames returns h's names in canonical form.
func headerNames(h map[string][]string) []string {
	var names []string
	for k := range h {
		names = append(names, textproto.CanonicalMIMEHeaderKey(k))
	}
	return names
}

func TestMultiValuedHeadersByteExact(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	reqValues := map[string][]string{
		"X-Multi":  {"first", "second, with a comma", `"quoted"; q=0.5`, "tab\tinside", "utf-8 é ✓", "  "},
		"X-Single": {"only"},
		"Cookie":   {"a=1", "b=2"},
		"Accept":   {"text/html", "application/json"},
	}
	respValues := map[string][]string{
		"Set-Cookie": {"session=abc; Path=/; HttpOnly", "theme=dark; Max-Age=3600; SameSite=Lax"},
		"X-Rep":      {"3", "1", "2", "1"},
		"Vary":       {"Accept", "Cookie"},
		"X-Utf8":     {"é ✓"},
	}
	seen := make(chan http.Header, 1)
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		for k, vs := range respValues {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		io.WriteString(w, "ok")
	}))
	req := newRequest(t, http.MethodGet, tun.URL+"/h", nil)
	for k, vs := range reqValues {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	r := mustDo(t, env, req)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	got := <-seen
	for k, want := range reqValues {
		if k == "X-Multi" {
			// HTTP drops whitespace around a value; everything else is
			// byte-exact.
			want = append(slices.Clone(want[:len(want)-1]), "")
		}
		if !slices.Equal(got[k], want) {
			t.Errorf("request %s = %q, want %q", k, got[k], want)
		}
	}
	for k, want := range respValues {
		if !slices.Equal(r.header[k], want) {
			t.Errorf("response %s = %q, want %q", k, r.header[k], want)
		}
	}
}

func TestBinaryBodiesByteExact(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	random := make([]byte, 100<<10)
	rand.Read(random)
	received := make(chan []byte, 1)
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		received <- b
		w.Header().Set("Content-Type", "application/octet-stream")
		// Answer with the bytes reversed, so the response is not just the
		// request echoed by some layer.
		out := slices.Clone(b)
		slices.Reverse(out)
		w.Write(out)
	}))
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"every byte value", all},
		{"every byte value, twice", append(slices.Clone(all), all...)},
		{"random 100 KiB", random},
		{"CR LF NUL", []byte("\r\n\x00\r\n\r\n\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustDo(t, env, newRequest(t, http.MethodPost, tun.URL+"/bin", bytes.NewReader(tc.body)))
			got := <-received
			if !bytes.Equal(got, tc.body) {
				t.Fatalf("request body: %d bytes arrived, want %d, byte-exact", len(got), len(tc.body))
			}
			want := slices.Clone(tc.body)
			slices.Reverse(want)
			if r.status != 200 || r.body != string(want) {
				t.Fatalf("response body: status %d, %d bytes, want %d byte-exact", r.status, len(r.body), len(want))
			}
		})
	}
	// The proxy's own leg, seen by a raw client: the body travels as raw
	// bytes, and a raw answer comes back byte-exact.
	t.Run("raw client", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		ch := goDo(env, rc.request(http.MethodPut, "/raw", random))
		req := rc.nextRequest()
		if req.Method != http.MethodPut || !bytes.Equal(req.Body, random) {
			t.Fatalf("HTTPRequest %s with %d body bytes", req.Method, len(req.Body))
		}
		rc.respond(req.ID, 200, nil, all)
		if r := await(t, ch, 10*time.Second); r.status != 200 || r.body != string(all) {
			t.Fatalf("got %d, %d bytes", r.status, len(r.body))
		}
	})
}

// rawResult is a response read off the wire: the status line, the headers
// exactly as sent, and the body.
type rawResult struct {
	status string
	header textproto.MIMEHeader
	body   string
	err    error
}

// rawHTTP sends a request written out by hand to the proxy and reads the
// response. It may run on any goroutine.
func rawHTTP(env *tunneltest.Env, request string) (res rawResult) {
	conn, err := net.Dial("tcp", env.Addr)
	if err != nil {
		return rawResult{err: err}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// Write while reading: the server may answer (431) before it has read
	// everything.
	go io.WriteString(conn, request)
	br := bufio.NewReader(conn)
	tp := textproto.NewReader(br)
	if res.status, res.err = tp.ReadLine(); res.err != nil {
		return res
	}
	if res.header, res.err = tp.ReadMIMEHeader(); res.err != nil {
		return res
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(res.status+"\r\n"+headerText(res.header)+"\r\n"), br)), nil)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	res.body, res.err = string(b), err
	return res
}

// goRawHTTP is rawHTTP in the background.
func goRawHTTP(env *tunneltest.Env, request string) <-chan rawResult {
	ch := make(chan rawResult, 1)
	go func() { ch <- rawHTTP(env, request) }()
	return ch
}

func awaitRaw(t *testing.T, ch <-chan rawResult) rawResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("raw HTTP: %v", r.err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no response within 10s")
		return rawResult{}
	}
}

func headerText(h textproto.MIMEHeader) string {
	var b strings.Builder
	for k, vs := range h {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	return b.String()
}

func TestHopByHopStripped(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	rc := dialRaw(t, env).register(tunneltest.NewKey(t))

	t.Run("request", func(t *testing.T) {
		done := goRawHTTP(env, "POST /hop HTTP/1.1\r\n"+
			"Host: "+rc.host+"\r\n"+
			"Connection: keep-alive, X-Secret, x-other-secret\r\n"+
			"Keep-Alive: timeout=5\r\n"+
			"Te: trailers\r\n"+
			"Trailer: X-Trail\r\n"+
			"Transfer-Encoding: chunked\r\n"+
			"Upgrade: foo/1\r\n"+
			"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"+
			"Proxy-Connection: keep-alive\r\n"+
			"X-Secret: s3cret\r\n"+
			"X-Other-Secret: s3cret too\r\n"+
			"X-Kept: yes\r\n"+
			"\r\n"+
			"4\r\nbody\r\n0\r\nX-Trail: t\r\n\r\n")
		req := rc.nextRequest()
		for _, name := range headerNames(req.Header) {
			if slices.Contains(hopByHop, name) || name == "X-Secret" || name == "X-Other-Secret" || name == "X-Trail" {
				t.Errorf("header %s crossed the tunnel: %q", name, req.Header[name])
			}
		}
		if !slices.Equal(req.Header["X-Kept"], []string{"yes"}) || string(req.Body) != "body" || req.Method != "POST" {
			t.Errorf("request %s, X-Kept %q, body %q", req.Method, req.Header["X-Kept"], req.Body)
		}
		if !slices.Equal(req.Header["Te"], []string{"trailers"}) || !slices.Equal(req.Header["Trailer"], []string{"X-Trail"}) {
			t.Errorf("Te %q and Trailer %q, want trailers and X-Trail", req.Header["Te"], req.Header["Trailer"])
		}
		if !slices.Equal(req.Trailer["X-Trail"], []string{"t"}) {
			t.Errorf("trailer %v, want X-Trail: t", req.Trailer)
		}
		rc.respond(req.ID, 200, nil, []byte("done"))
		if o := awaitRaw(t, done); o.status != "HTTP/1.1 200 OK" || o.body != "done" {
			t.Fatalf("got %q %q", o.status, o.body)
		}
	})

	t.Run("response", func(t *testing.T) {
		done := goRawHTTP(env, "GET /hop HTTP/1.1\r\nHost: "+rc.host+"\r\n\r\n")
		req := rc.nextRequest()
		rc.respond(req.ID, 200, messages.Header{
			"Connection":          {"X-Secret, close", "x-other-secret"},
			"Keep-Alive":          {"timeout=5"},
			"Te":                  {"trailers"},
			"Transfer-Encoding":   {"chunked"},
			"Upgrade":             {"foo/1"},
			"Proxy-Authorization": {"Basic Zm9vOmJhcg=="},
			"Proxy-Authenticate":  {"Basic"},
			"Proxy-Connection":    {"keep-alive"},
			"proxy-connection":    {"keep-alive"}, // any spelling
			"X-Secret":            {"s3cret"},
			"x-other-secret":      {"s3cret too"},
			"X-Kept":              {"yes"},
			"Content-Length":      {"4"}, // so that the public response needs no chunking of its own
		}, []byte("done"))
		o := awaitRaw(t, done)
		if o.status != "HTTP/1.1 200 OK" || o.body != "done" {
			t.Fatalf("got %q %q", o.status, o.body)
		}
		for _, name := range headerNames(o.header) {
			if slices.Contains(hopByHop, name) || name == "X-Secret" || name == "X-Other-Secret" {
				t.Errorf("header %s reached the public: %q", name, o.header[name])
			}
		}
		if o.header.Get("X-Kept") != "yes" || o.header.Get("Content-Length") != "4" {
			t.Errorf("headers %v", o.header)
		}
	})
}

func TestForwardedHeaders(t *testing.T) {
	spoofed := map[string][]string{
		"X-Forwarded-For":   {"1.2.3.4, 5.6.7.8", "9.9.9.9"},
		"X-Forwarded-Proto": {"https"},
		"X-Forwarded-Host":  {"evil.example"},
		"Forwarded":         {"for=1.2.3.4;proto=https"},
		"X-Real-Ip":         {"1.2.3.4"},
	}
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		send    map[string][]string
		want    map[string][]string // nil value: absent; "HOST": the Host sent
	}{
		{"untrusted peer, no headers", nil, nil, map[string][]string{
			"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"HOST"},
			"Forwarded": nil, "X-Real-Ip": nil,
		}},
		{"untrusted peer, spoofed headers discarded", nil, spoofed, map[string][]string{
			"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"HOST"},
			"Forwarded": nil, "X-Real-Ip": nil,
		}},
		{"untrusted peer, another network trusted", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, spoofed, map[string][]string{
			"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"HOST"},
			"Forwarded": nil, "X-Real-Ip": nil,
		}},
		{"trusted peer, no headers", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, nil, map[string][]string{
			"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"HOST"},
		}},
		{"trusted peer, headers kept and appended", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, spoofed, map[string][]string{
			"X-Forwarded-For":   {"1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"},
			"X-Forwarded-Proto": {"https"},
			"X-Forwarded-Host":  {"evil.example"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := tunneltest.StartProxy(t, proxy.Config{TrustedProxies: tc.trusted})
			rc := dialRaw(t, env).register(tunneltest.NewKey(t))
			req := rc.request(http.MethodGet, "/fwd", nil)
			for k, vs := range tc.send {
				req.Header[k] = vs
			}
			ch := goDo(env, req)
			got := rc.nextRequest()
			rc.respond(got.ID, 204, nil, nil)
			if r := await(t, ch, 10*time.Second); r.status != 204 {
				t.Fatalf("status %d", r.status)
			}
			if got.Host != rc.host {
				t.Errorf("Host %q, want %q", got.Host, rc.host)
			}
			for k, want := range tc.want {
				if len(want) == 1 && want[0] == "HOST" {
					want = []string{rc.host}
				}
				if !slices.Equal(got.Header[k], want) {
					t.Errorf("%s = %q, want %q", k, got.Header[k], want)
				}
			}
		})
	}
}

func TestSetCookieDomain(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	var own string
	other := strings.Repeat("a", 52) + ".localhost"
	cookies := func() []struct {
		v  string
		ok bool
	} {
		return []struct {
			v  string
			ok bool
		}{
			{"hostonly=1; Path=/; HttpOnly", true},
			{"tunneldomain=1; Domain=localhost", false},
			{"dotdomain=1; Domain=.localhost; Path=/", false},
			{"upper=1; domain=LOCALHOST", false},
			{"othertunnel=1; Domain=" + other, false},
			{"own=1; Domain=" + own, true},
			{"owndot=1; Domain=." + own, true},
			{"twice=1; Domain=" + own + "; Domain=localhost", false},
			{"last=1; SameSite=Strict", true},
		}
	}
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range cookies() {
			w.Header().Add("Set-Cookie", c.v)
		}
	}))
	own, _, _ = net.SplitHostPort(tun.Host())
	r := get(t, env, tun.URL+"/")
	var want []string
	for _, c := range cookies() {
		if c.ok {
			want = append(want, c.v)
		}
	}
	if r.status != 200 || !slices.Equal(r.header["Set-Cookie"], want) {
		t.Fatalf("Set-Cookie = %q\nwant %q", r.header["Set-Cookie"], want)
	}
}

// Header names and values from the client are checked: CR, LF or NUL (or
// anything else not allowed in HTTP/1.1), or a status outside 200-599,
// gives that request 502 and resets its stream. The tunnel stays up: a
// visitor who can make a local service answer strangely must not be able to
// cut everyone else's requests.
func TestBadResponseHeader502(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: 20 * time.Second})
	for _, tc := range []struct {
		name   string
		header messages.Header
		status uint16
	}{
		{"CR LF in value", messages.Header{"X-A": {"a\r\nSet-Cookie: x=1"}}, 200},
		{"LF in value", messages.Header{"X-A": {"a\nb"}}, 200},
		{"CR in value", messages.Header{"X-A": {"a\rb"}}, 200},
		{"NUL in value", messages.Header{"X-A": {"a\x00b"}}, 200},
		{"bad value among good ones", messages.Header{"X-A": {"fine", "also fine", "bad\r\n"}}, 200},
		{"CR LF in name", messages.Header{"X-A\r\nX-B": {"v"}}, 200},
		{"NUL in name", messages.Header{"X-A\x00": {"v"}}, 200},
		{"LF in name", messages.Header{"X-A\n": {"v"}}, 200},
		{"space in name", messages.Header{"X A": {"v"}}, 200},
		{"colon in name", messages.Header{"X:A": {"v"}}, 200},
		{"empty name", messages.Header{"": {"v"}}, 200},
		{"Set-Cookie with CR LF", messages.Header{"Set-Cookie": {"a=1\r\nX-Injected: 1"}}, 200},
		{"status 101", nil, 101},
		{"status 199", nil, 199},
		{"status 600", nil, 600},
		{"status 1000", nil, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, env).register(tunneltest.NewKey(t))
			ch := goDo(env, rc.request(http.MethodGet, "/", nil))
			req := rc.nextRequest()
			rc.respond(req.ID, tc.status, tc.header, []byte("never shown"))
			r := await(t, ch, 10*time.Second)
			wantPublicError(t, r, http.StatusBadGateway)
			if r.took > 5*time.Second {
				t.Fatalf("took %v", r.took)
			}
			if r.header.Get("X-Injected") != "" || r.header.Get("X-B") != "" {
				t.Fatalf("injected header reached the public: %v", r.header)
			}
			// The client is told to stop, and the tunnel still serves.
			if m, ok := rc.next().(*messages.Error); !ok || m.ID != req.ID {
				t.Fatalf("got %+v, want an Error resetting the stream", m)
			}
			ch = goDo(env, rc.request(http.MethodGet, "/next", nil))
			req = rc.nextRequest()
			rc.respond(req.ID, 200, nil, []byte("still here"))
			if r := await(t, ch, 10*time.Second); r.status != 200 || r.body != "still here" {
				t.Fatalf("after the bad answer: %d %q", r.status, r.body)
			}
		})
	}
	t.Run("status 200 and 599 pass", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		for _, status := range []uint16{200, 599} {
			ch := goDo(env, rc.request(http.MethodGet, "/", nil))
			req := rc.nextRequest()
			rc.respond(req.ID, status, nil, []byte("edge"))
			if r := await(t, ch, 10*time.Second); r.status != int(status) || r.body != "edge" {
				t.Fatalf("status %d: got %d %q", status, r.status, r.body)
			}
		}
	})
	t.Run("obs-text and tabs are allowed", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		ch := goDo(env, rc.request(http.MethodGet, "/", nil))
		req := rc.nextRequest()
		rc.respond(req.ID, 200, messages.Header{"X-A": {"tab\there é"}, "x-lower": {"v"}}, []byte("ok"))
		r := await(t, ch, 10*time.Second)
		if r.status != 200 || r.header.Get("X-A") != "tab\there é" || r.header.Get("X-Lower") != "v" {
			t.Fatalf("got %d %v", r.status, r.header)
		}
	})
}

func TestMaxHeaderBytes431(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strconv.Itoa(len(r.Header.Get("X-Big"))))
	}))
	// net/http allows MaxHeaderBytes plus 4096 bytes of slack, so test well
	// under and well over.
	for _, tc := range []struct {
		name   string
		size   int
		status string
	}{
		{"half the limit passes", proxy.MaxHeaderBytes / 2, "HTTP/1.1 200 OK"},
		{"twice the limit gets 431", 2 * proxy.MaxHeaderBytes, "HTTP/1.1 431 Request Header Fields Too Large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := awaitRaw(t, goRawHTTP(env, "GET / HTTP/1.1\r\nHost: "+tun.Host()+"\r\nX-Big: "+strings.Repeat("b", tc.size)+"\r\n\r\n"))
			if r.status != tc.status {
				t.Fatalf("status %q, want %q", r.status, tc.status)
			}
			if want := strconv.Itoa(tc.size); tc.status == "HTTP/1.1 200 OK" && r.body != want {
				t.Fatalf("body %q, want %q", r.body, want)
			}
		})
	}
}
