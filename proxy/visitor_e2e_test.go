package proxy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
	"golang.org/x/crypto/bcrypt"
)

// countingService answers every request it gets, counts them, and keeps
// the last Authorization header it saw; /ws echoes one WebSocket message.
type countingService struct {
	n    atomic.Int64
	mu   sync.Mutex
	auth string
}

func (s *countingService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.n.Add(1)
	s.mu.Lock()
	s.auth = r.Header.Get("Authorization")
	s.mu.Unlock()
	if r.URL.Path == "/ws" {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		c.Write(r.Context(), typ, msg)
		c.Close(websocket.StatusNormalClosure, "")
		return
	}
	io.WriteString(w, "hello from the service")
}

func (s *countingService) lastAuth() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auth
}

// twoProxies starts two proxies sharing a memory bus, with cfg.
func twoProxies(t *testing.T, cfg proxy.Config) (holder, visitor *tunneltest.Env, m *bus.Memory) {
	m = bus.NewMemory()
	cfg.Bus, cfg.Registry = m, m
	return tunneltest.StartProxy(t, cfg), tunneltest.StartProxy(t, cfg), m
}

// visit sends a GET for path to label through env, with header pairs.
func visit(t *testing.T, env *tunneltest.Env, label, path string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", keyURL(env, label)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := env.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// dialWS opens a WebSocket to label's /ws through env and has one
// message echoed; it returns the handshake's status.
func dialWS(t *testing.T, env *tunneltest.Env, label string, header ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Add(header[i], header[i+1])
	}
	u := "ws" + strings.TrimPrefix(keyURL(env, label), "http") + "/ws"
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: env.HTTP, HTTPHeader: h})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", u, err)
		}
		return resp.StatusCode
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "ping" {
		t.Fatalf("echo: %q, %v", msg, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	return http.StatusSwitchingProtocols
}

// quickHash is a bcrypt hash of password at the lowest cost.
func quickHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// Basic auth declared by the client is enforced by the instance a visitor
// reaches, which does not hold the client: refused requests never reach
// the local service.
func TestVisitorBasicAuthE2E(t *testing.T) {
	a, b, _ := twoProxies(t, proxy.Config{})
	svc := &countingService{}
	key := tunneltest.NewKey(t)
	label, _ := messages.Hostname(key.Public())
	// Hashes of the lowest cost, made here: at the client's cost a
	// comparison takes 1.5 s under the race detector.
	a.Connect(&client.Client{Key: key, Handler: svc, BasicAuth: []client.Credential{
		{User: "alice", Hash: quickHash(t, "open: sesame, please")},
		{User: "bob", Hash: quickHash(t, "builder")},
	}})
	wantChallenge := `Basic realm="` + label + `.localhost", charset="UTF-8"`
	admitted := int64(0)
	for _, via := range []struct {
		name string
		env  *tunneltest.Env
	}{{"visitor's instance", b}, {"holder's instance", a}} {
		t.Run(via.name, func(t *testing.T) {
			for _, tc := range []struct {
				name   string
				header []string
				want   int
			}{
				{"missing", nil, 401},
				{"wrong password", []string{"Authorization", basicAuth("alice", "open: sesame")}, 401},
				{"wrong user", []string{"Authorization", basicAuth("carol", "builder")}, 401},
				{"another scheme", []string{"Authorization", "Bearer open: sesame, please"}, 401},
				{"right", []string{"Authorization", basicAuth("alice", "open: sesame, please")}, 200},
				{"right again, from the cache", []string{"Authorization", basicAuth("alice", "open: sesame, please")}, 200},
				{"second user", []string{"Authorization", basicAuth("bob", "builder")}, 200},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := svc.n.Load()
					resp, body := visit(t, via.env, label, "/page", tc.header...)
					if resp.StatusCode != tc.want {
						t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tc.want, body)
					}
					got := svc.n.Load() - before
					if tc.want != 200 {
						if got != 0 {
							t.Errorf("a refused request reached the service (%d)", got)
						}
						if c := resp.Header.Values("WWW-Authenticate"); len(c) != 1 || c[0] != wantChallenge {
							t.Errorf("WWW-Authenticate %q, want %q", c, wantChallenge)
						}
						if body != proxy.PublicMessage(401)+"\n" {
							t.Errorf("body %q, want the proxy's plain 401 page", body)
						}
						return
					}
					admitted++
					if got != 1 || body != "hello from the service" {
						t.Errorf("service reached %d times, body %q", got, body)
					}
					// Decided in docs/DECISIONS.md: the service sees who
					// logged in.
					if svc.lastAuth() != tc.header[1] {
						t.Errorf("the service saw Authorization %q, want it passed on", svc.lastAuth())
					}
				})
			}
			t.Run("websocket", func(t *testing.T) {
				before := svc.n.Load()
				if status := dialWS(t, via.env, label); status != 401 {
					t.Errorf("upgrade without credentials: %d, want 401", status)
				}
				if status := dialWS(t, via.env, label, "Authorization", basicAuth("bob", "wrong")); status != 401 {
					t.Errorf("upgrade with a wrong password: %d, want 401", status)
				}
				if n := svc.n.Load() - before; n != 0 {
					t.Errorf("refused upgrades reached the service %d times", n)
				}
				if status := dialWS(t, via.env, label, "Authorization", basicAuth("bob", "builder")); status != 101 {
					t.Errorf("upgrade with the right password: %d, want 101", status)
				}
				admitted++
			})
		})
	}
	if n := svc.n.Load(); n != admitted {
		t.Errorf("the service got %d requests, %d were admitted", n, admitted)
	}
}

// IP lists are checked against the visitor's address as the proxy sees
// it: here the proxies trust the loopback peer, so X-Forwarded-For says
// who the visitor is.
func TestVisitorIPRulesE2E(t *testing.T) {
	a, b, _ := twoProxies(t, proxy.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	svc := &countingService{}
	key := tunneltest.NewKey(t)
	label, _ := messages.Hostname(key.Public())
	a.Connect(&client.Client{
		Key: key, Handler: svc,
		AllowIP: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		// Host bits and IPv4-mapped form are the client's to normalise.
		DenyIP: []netip.Prefix{netip.MustParsePrefix("198.51.100.200/25"), netip.MustParsePrefix("::ffff:198.51.100.7/128")},
	})
	for _, tc := range []struct {
		name string
		xff  string // "" for none: the loopback peer itself
		want int
	}{
		{"first address allowed", "198.51.100.0", 200},
		{"last address below the denied half", "198.51.100.127", 200},
		{"just below the allowed prefix", "198.51.99.255", 403},
		{"just above it", "198.51.101.0", 403},
		{"first of the denied half", "198.51.100.128", 403},
		{"last of the denied half", "198.51.100.255", 403},
		{"a denied host", "198.51.100.7", 403},
		{"its neighbour", "198.51.100.8", 200},
		{"IPv6 allowed", "2001:db8::1", 200},
		{"IPv6 outside", "2001:db9::1", 403},
		{"spoofed entry left of the real one", "198.51.100.1, 203.0.113.9", 403},
		{"no header: the peer, 127.0.0.1", "", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h []string
			if tc.xff != "" {
				h = []string{"X-Forwarded-For", tc.xff}
			}
			before := svc.n.Load()
			resp, body := visit(t, b, label, "/", h...)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, tc.want, body)
			}
			reached := svc.n.Load() - before
			switch {
			case tc.want == 403 && (reached != 0 || body != proxy.PublicMessage(403)+"\n"):
				t.Errorf("refused: the service was reached %d times, body %q", reached, body)
			case tc.want == 200 && reached != 1:
				t.Errorf("admitted: the service was reached %d times", reached)
			}
		})
	}
	t.Run("websocket", func(t *testing.T) {
		before := svc.n.Load()
		if status := dialWS(t, b, label, "X-Forwarded-For", "198.51.100.200"); status != 403 {
			t.Errorf("upgrade from a denied address: %d, want 403", status)
		}
		if n := svc.n.Load() - before; n != 0 {
			t.Errorf("a refused upgrade reached the service")
		}
		if status := dialWS(t, b, label, "X-Forwarded-For", "198.51.100.20"); status != 101 {
			t.Errorf("upgrade from an allowed address: %d, want 101", status)
		}
	})
	t.Run("untrusted peer", func(t *testing.T) {
		// A proxy that trusts no one ignores the header: the visitor is
		// 127.0.0.1, which the allow list does not cover.
		m := bus.NewMemory()
		c := tunneltest.StartProxy(t, proxy.Config{Bus: m, Registry: m})
		key := tunneltest.NewKey(t)
		label, _ := messages.Hostname(key.Public())
		c.Connect(&client.Client{Key: key, Handler: svc, AllowIP: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}})
		if resp, _ := visit(t, c, label, "/", "X-Forwarded-For", "198.51.100.1"); resp.StatusCode != 403 {
			t.Errorf("spoofed header from an untrusted peer: %d, want 403", resp.StatusCode)
		}
	})
}

// What the proxy refuses at registration reaches the client as a
// RefusedError with the reason, and Run stops.
func TestVisitorProtectionRefusedE2E(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, tc := range []struct {
		name   string
		cred   client.Credential
		reason string
	}{
		{"cost over 12", client.Credential{User: "alice", Hash: "$2a$13$" + strings.Repeat("a", 53)},
			"basic auth user \"alice\": bcrypt cost 13 is over the proxy's limit of 12"},
		{"malformed hash", client.Credential{User: "alice", Hash: "$2a$10$tooShort"}, "malformed bcrypt hash"},
		{"a password where the hash goes", client.Credential{User: "alice", Hash: "hunter2"}, "malformed bcrypt hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := connectErr(t, env, &client.Client{Key: tunneltest.NewKey(t), Handler: named("x"), BasicAuth: []client.Credential{tc.cred}})
			var refused *client.RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("Run: %v, want a *client.RefusedError", err)
			}
			if !strings.Contains(refused.Reason, tc.reason) {
				t.Errorf("reason %q, want it to say %q", refused.Reason, tc.reason)
			}
		})
	}
	t.Run("cost 12 is accepted", func(t *testing.T) {
		// The shape of a hash of cost 12: the proxy checks the shape at
		// registration and compares only when a visitor logs in.
		hash12 := "$2a$12$" + strings.Repeat("a", 53)
		if err := connectErr(t, env, &client.Client{Key: tunneltest.NewKey(t), Handler: named("x"),
			BasicAuth: []client.Credential{{User: "alice", Hash: hash12}}}); err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}

// cutter relays TCP connections to addr and can cut them all, so a client
// behind it has to reconnect.
type cutter struct {
	ln    net.Listener
	addr  string
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutter(t *testing.T, addr string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, addr: addr}
	c.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", addr)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			c.wg.Go(func() { io.Copy(out, in); out.Close() })
			c.wg.Go(func() { io.Copy(in, out); in.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		c.cut()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// The client hashes its passwords once per Run: a reconnect registers the
// same hashes (the registry entry's rules are unchanged), and the
// password is nowhere in them. The one test at the client's real cost.
func TestVisitorHashOncePerRun(t *testing.T) {
	env, _, m := twoProxies(t, proxy.Config{})
	cut := newCutter(t, env.Addr)
	key := tunneltest.NewKey(t)
	label, _ := messages.Hostname(key.Public())
	var registered atomic.Int64
	env.Connect(&client.Client{
		Proxy: "ws://" + cut.ln.Addr().String(), Key: key, Handler: named("x"),
		BasicAuth:  []client.Credential{{User: "alice", Password: "the-password-itself"}},
		OnRegister: func(string) { registered.Add(1) },
	})
	entry := func() string {
		v, err := m.Lookup(context.Background(), label)
		if err != nil {
			return ""
		}
		return v
	}
	rulesOf := func(v string) string { _, r, _ := strings.Cut(v, "\n"); return r }
	first := entry()
	if !strings.Contains(rulesOf(first), `"user":"alice","hash":"$2a$10$`) || strings.Contains(first, "the-password-itself") {
		t.Fatalf("registry entry %q: want alice with a cost-10 bcrypt hash and no password", first)
	}
	cut.cut()
	tunneltest.Eventually(t, 10*time.Second, "the client registers again", func() bool {
		v := entry()
		return registered.Load() >= 2 && v != "" && v != first
	})
	if again := rulesOf(entry()); again != rulesOf(first) {
		t.Errorf("rules after the reconnect differ:\n%s\n%s", rulesOf(first), again)
	}
	if resp, _ := visit(t, env, label, "/", "Authorization", basicAuth("alice", "the-password-itself")); resp.StatusCode != 200 {
		t.Errorf("after the reconnect: %d", resp.StatusCode)
	}
}

// A registry entry whose rules do not decode is never served without
// them: 503, and the holder it names is never sent the request.
func TestVisitorRulesUnreadableE2E(t *testing.T) {
	a, b, m := twoProxies(t, proxy.Config{})
	svc := &countingService{}
	key := tunneltest.NewKey(t)
	label, _ := messages.Hostname(key.Public())
	a.Connect(&client.Client{Key: key, Handler: svc, AllowIP: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	good, err := m.Lookup(context.Background(), label)
	if err != nil {
		t.Fatal(err)
	}
	holder, rules, _ := strings.Cut(good, "\n")
	if rules != `{"allow_ip":["127.0.0.0/8"]}` {
		t.Fatalf("registry entry's rules %q", rules)
	}
	if resp, _ := visit(t, b, label, "/"); resp.StatusCode != 200 {
		t.Fatalf("with the rules intact: %d", resp.StatusCode)
	}
	// Rules as a registry entry could hold them that this proxy would
	// never write: not in canonical form (decodeVisitorPolicy's unit
	// tests cover the other ways).
	bad := `{"allow_ip":["127.0.0.1/8"]}`
	if _, err := m.Claim(context.Background(), label, holder+"\n"+bad, time.Minute); err != nil {
		t.Fatal(err)
	}
	// b's route cache holds the good entry for up to a second.
	tunneltest.Eventually(t, 5*time.Second, "503 for unreadable rules", func() bool {
		resp, _ := visit(t, b, label, "/")
		return resp.StatusCode == 503
	})
	// From then on, every request: nothing is cached of rules that did
	// not decode.
	before := svc.n.Load()
	for range 3 {
		if resp, body := visit(t, b, label, "/"); resp.StatusCode != 503 || body != proxy.PublicMessage(503)+"\n" {
			t.Errorf("after the first 503: %d %q", resp.StatusCode, body)
		}
	}
	if n := svc.n.Load() - before; n != 0 {
		t.Errorf("the service was reached %d times through unreadable rules", n)
	}
	// The holder's instance too, once its own cache of the entry expires.
	tunneltest.Eventually(t, 5*time.Second, "503 at the holder's instance", func() bool {
		resp, _ := visit(t, a, label, "/")
		return resp.StatusCode == 503
	})
}
