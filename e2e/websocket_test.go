package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// TestMain fails the package if any goroutine outlives the tests: every
// stream pump, local connection and client session must have stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Issue 3, point 1: the upgrade handshake.
func TestWebSocketHandshake(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			l := newLocal(t)
			routes := map[string]http.HandlerFunc{
				"/chat/": func(w http.ResponseWriter, r *http.Request) {
					// Headers set before Accept go out with the 101.
					w.Header().Set("X-Custom", "on-the-101")
					w.Header().Add("Set-Cookie", "session=s1; Path=/; HttpOnly")
					l.accept(&websocket.AcceptOptions{
						Subprotocols:   []string{"beta", "alpha"},
						OriginPatterns: []string{"app.example"},
					})(w, r)
				},
				"/forbidden": func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("X-Reason", "not-allowed")
					w.WriteHeader(http.StatusForbidden)
					w.Write([]byte("no websocket for you\n"))
				},
				// No route for /missing: the mux answers 404.
				"/strict": l.accept(nil), // coder/websocket's own Origin check
			}
			tun := startTunnel(t, env, m, mux(routes))

			t.Run("request reaches local service with path, query, headers, origin and subprotocols", func(t *testing.T) {
				h := http.Header{}
				h.Add("X-Multi", "one")
				h.Add("X-Multi", "two")
				h.Set("Origin", "http://app.example")
				vis, resp, err := tryDialVisitor(ctx, env, wsURL(tun, "/chat/room%2F1?user=ann&tag=a&tag=b"), &websocket.DialOptions{
					HTTPHeader:   h,
					Subprotocols: []string{"gamma", "alpha", "beta"},
				})
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer vis.CloseNow()
				a := l.next(ctx)
				r := a.req
				checks := []struct{ what, got, want string }{
					{"path", r.URL.EscapedPath(), "/chat/room%2F1"},
					{"query", r.URL.RawQuery, "user=ann&tag=a&tag=b"},
					{"X-Multi", strings.Join(r.Header["X-Multi"], ","), "one,two"},
					{"Origin", r.Header.Get("Origin"), "http://app.example"},
					{"offered subprotocols, in order", strings.Join(tokens(r.Header["Sec-Websocket-Protocol"]), " "), "gamma alpha beta"},
					{"Host", r.Host, tun.Host()},
					{"X-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"), "http"},
					// The public side gets exactly what the local service chose.
					{"negotiated subprotocol (visitor)", vis.Subprotocol(), "beta"},
					{"negotiated subprotocol (local)", a.conn.Subprotocol(), "beta"},
					{"X-Custom on the 101", resp.Header.Get("X-Custom"), "on-the-101"},
					{"Set-Cookie on the 101", resp.Header.Get("Set-Cookie"), "session=s1; Path=/; HttpOnly"},
					{"status", fmt.Sprint(resp.StatusCode), "101"},
				}
				for _, c := range checks {
					if c.got != c.want {
						t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
					}
				}
				// The stream works once open.
				if err := vis.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
					t.Fatal(err)
				}
				if _, b, err := a.conn.Read(ctx); err != nil || string(b) != "ping" {
					t.Fatalf("local read: %q %v", b, err)
				}
			})

			t.Run("no subprotocol when the local service picks none", func(t *testing.T) {
				vis, _, err := tryDialVisitor(ctx, env, wsURL(tun, "/echo"), &websocket.DialOptions{Subprotocols: []string{"x", "y"}})
				if err != nil {
					t.Fatal(err)
				}
				defer vis.CloseNow()
				if p := vis.Subprotocol(); p != "" {
					t.Fatalf("subprotocol %q, want none", p)
				}
			})

			refusals := []struct {
				name, path, origin string
				status             int
				body, header       string
			}{
				{"local refusal 403 reaches the visitor as 403 with no 101", "/forbidden", "", 403, "no websocket for you\n", "not-allowed"},
				{"local refusal 404 reaches the visitor as 404 with no 101", "/missing", "", 404, "404 page not found\n", ""},
				{"local origin check refusal reaches the visitor as 403 with no 101", "/strict", "evil.example", 403, "", ""},
			}
			for _, c := range refusals {
				t.Run(c.name, func(t *testing.T) {
					origin := c.origin
					if origin == "" {
						origin = tun.Host()
					}
					status, h, body := rawUpgradeWith(t, env, tun.Host(), c.path, origin)
					if status != c.status {
						t.Fatalf("status %d, want %d (body %q)", status, c.status, body)
					}
					if c.body != "" && body != c.body {
						t.Errorf("body %q, want %q", body, c.body)
					}
					if h.Get("X-Reason") != c.header {
						t.Errorf("X-Reason %q, want %q", h.Get("X-Reason"), c.header)
					}
					if h.Get("Upgrade") != "" || h.Get("Sec-Websocket-Accept") != "" {
						t.Errorf("refusal carries handshake headers: %v", h)
					}
				})
			}
		})
	}

	t.Run("unknown host is 404 with no 101", func(t *testing.T) {
		for _, host := range []string{"nosuchname.localhost", "example.com", "localhost"} {
			if status, _, _ := rawUpgrade(t, env, host+":80", "/ws"); status != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404", host, status)
			}
		}
	})

	t.Run("tunnel offline is 502 with no 101", func(t *testing.T) {
		// A hostname whose key never connected...
		pub := tunneltest.NewKey(t).Public().(ed25519.PublicKey)
		label, err := messages.Hostname(pub)
		if err != nil {
			t.Fatal(err)
		}
		if status, _, _ := rawUpgrade(t, env, label+".localhost", "/echo"); status != http.StatusBadGateway {
			t.Errorf("never connected: status %d, want 502", status)
		}
		// ...and one whose client has stopped.
		tun := env.Serve(mux(nil))
		tun.Stop()
		tunneltest.Eventually(t, 5*time.Second, "stopped tunnel answers 502", func() bool {
			status, _, _ := rawUpgrade(t, env, tun.Host(), "/echo")
			return status == http.StatusBadGateway
		})
	})
}

// tokens splits comma-separated header values.
func tokens(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, t := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(t))
		}
	}
	return out
}

// Issue 3, point 1, the timeout row: no WSResponse within Timeout is 504.
func TestWebSocketHandshakeTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: timeout})

	t.Run("client never answers the WSRequest: 504 with no 101", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		rc := dialRaw(ctx, t, env)
		host := strings.TrimPrefix(rc.reg.URL, "http://")
		start := time.Now()
		status, _, _ := rawUpgrade(t, env, host, "/slow")
		elapsed := time.Since(start)
		if status != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504", status)
		}
		if elapsed < timeout || elapsed > timeout+3*time.Second {
			t.Errorf("504 after %v, want just after %v", elapsed, timeout)
		}
		// The client saw the request, and is told the proxy gave up.
		req, ok := rc.read(ctx).(*messages.WSRequest)
		if !ok || req.URI != "/slow" {
			t.Fatalf("raw client got %+v, want the WSRequest for /slow", req)
		}
		e, ok := rc.read(ctx).(*messages.Error)
		if !ok || e.ID != req.ID || e.Code != messages.CodeCanceled {
			t.Fatalf("raw client got %+v, want Error canceled for %v", e, req.ID)
		}
	})

	for _, m := range modes {
		t.Run("local service slower than the timeout: 504 with no 101/"+string(m), func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			slow := func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/slow": slow}))
			if status, _, _ := rawUpgrade(t, env, tun.Host(), "/slow"); status != http.StatusGatewayTimeout {
				t.Fatalf("status %d, want 504", status)
			}
			// The tunnel is fine afterwards.
			if err := getHello(env, tun); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// wireMessage is one WebSocket message as sent and as it must arrive.
type wireMessage struct {
	typ  websocket.MessageType
	data []byte
}

// sequence returns n messages, text and binary mixed, seeded by seed: empty
// ones of both types, UTF-8 text with its number, and random binary with
// plenty of zero bytes.
func sequence(seed uint64, n int) []wireMessage {
	r := rand.New(rand.NewPCG(seed, seed))
	out := make([]wireMessage, n)
	for i := range out {
		switch {
		case i == 0:
			out[i] = wireMessage{websocket.MessageText, []byte{}}
		case i == 1:
			out[i] = wireMessage{websocket.MessageBinary, []byte{}}
		case i == 2:
			out[i] = wireMessage{websocket.MessageBinary, make([]byte, 300)} // all zeros
		case i%3 == 0:
			out[i] = wireMessage{websocket.MessageText, fmt.Appendf(nil, "#%d héllo ✓ %s", i, strings.Repeat("z", r.IntN(200)))}
		default:
			b := make([]byte, r.IntN(3000))
			for j := range b {
				if r.IntN(4) != 0 { // a quarter stay zero
					b[j] = byte(r.Uint32())
				}
			}
			out[i] = wireMessage{websocket.MessageBinary, b}
		}
	}
	return out
}

// sendAll writes msgs on c in order.
func sendAll(ctx context.Context, c *websocket.Conn, msgs []wireMessage) error {
	for i, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			return fmt.Errorf("write #%d: %w", i, err)
		}
	}
	return nil
}

// expectAll reads len(want) messages from c and compares each, type and
// bytes, in order.
func expectAll(ctx context.Context, c *websocket.Conn, want []wireMessage) error {
	for i, w := range want {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("read #%d: %w", i, err)
		}
		if typ != w.typ || !bytes.Equal(b, w.data) {
			return fmt.Errorf("message #%d: got %v of %d bytes, want %v of %d bytes", i, typ, len(b), w.typ, len(w.data))
		}
	}
	return nil
}

// Issue 3, point 2: messages.
func TestWebSocketMessages(t *testing.T) {
	const maxBody = 64 << 10
	env := tunneltest.StartProxy(t, proxy.Config{MaxBody: limiter.Size(maxBody)})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			ctx := testCtx(t, 60*time.Second)
			l := newLocal(t)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/ws": l.accept(nil)}))

			t.Run("text and binary byte-exact and in order both ways, 1000 each", func(t *testing.T) {
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				defer vis.CloseNow()
				loc := l.next(ctx).conn
				up, down := sequence(1, 1000), sequence(2, 1000)
				var wg sync.WaitGroup
				errs := make(chan error, 4)
				for _, f := range []func() error{
					func() error { return sendAll(ctx, vis, up) },
					func() error { return expectAll(ctx, loc, up) },
					func() error { return sendAll(ctx, loc, down) },
					func() error { return expectAll(ctx, vis, down) },
				} {
					wg.Go(func() { errs <- f() })
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Error(err)
					}
				}
				vis.Close(websocket.StatusNormalClosure, "")
			})

			// Each limit case keeps a second stream open on the same tunnel
			// and checks that it, and plain HTTP, survive the 1009.
			limitCase := func(t *testing.T, sender, receiver func(vis, loc *websocket.Conn) *websocket.Conn) {
				other := dialVisitor(ctx, t, env, wsURL(tun, "/echo"), nil)
				defer other.CloseNow()
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				defer vis.CloseNow()
				loc := l.next(ctx).conn
				from, to := sender(vis, loc), receiver(vis, loc)

				exact := bytes.Repeat([]byte{0, 1, 2, 0xff}, maxBody/4)
				if err := from.Write(ctx, websocket.MessageBinary, exact); err != nil {
					t.Fatal(err)
				}
				typ, b, err := to.Read(ctx)
				if err != nil || typ != websocket.MessageBinary || !bytes.Equal(b, exact) {
					t.Fatalf("message of exactly MaxBody (%d): got %d bytes, %v", maxBody, len(b), err)
				}
				// limit+1: the receiving side refuses it with 1009, and both
				// ends of this stream see 1009.
				from.Write(ctx, websocket.MessageBinary, append(exact, 7)) // may fail: the close can race the write
				for _, c := range []struct {
					name string
					conn *websocket.Conn
				}{{"receiver", to}, {"sender", from}} {
					err := readUntilClose(t, c.name, c.conn, 5*time.Second)
					if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
						t.Errorf("%s: close %v (%v), want 1009", c.name, got, err)
					}
				}
				if err := echoOnce(ctx, other, "still here", 5*time.Second); err != nil {
					t.Errorf("other stream after the 1009: %v", err)
				}
				if err := getHello(env, tun); err != nil {
					t.Errorf("HTTP after the 1009: %v", err)
				}
			}
			visitor := func(vis, loc *websocket.Conn) *websocket.Conn { return vis }
			localSide := func(vis, loc *websocket.Conn) *websocket.Conn { return loc }
			t.Run("visitor to local: MaxBody passes, MaxBody+1 closes only that stream with 1009", func(t *testing.T) {
				limitCase(t, visitor, localSide)
			})
			t.Run("local to visitor: MaxBody passes, MaxBody+1 closes only that stream with 1009", func(t *testing.T) {
				limitCase(t, localSide, visitor)
			})
		})
	}
}

// Issue 3, point 2: the per-connection rate limit counts WS messages.
func TestWebSocketRateLimit(t *testing.T) {
	// Burst n+1: the upgrade is one request and takes one token, then n
	// messages pass. The rate is so low that no token comes back during
	// the test.
	const n = 5
	for _, m := range modes {
		t.Run(string(m)+"/message n+1 closes the stream with 1013 and HTTP then gets 429", func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			env := tunneltest.StartProxy(t, proxy.Config{Rate: 0.001, Burst: n + 1})
			l := newLocal(t)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/ws": l.accept(nil)}))
			vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
			defer vis.CloseNow()
			loc := l.next(ctx).conn
			for i := range n + 1 {
				if err := vis.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "m%d", i)); err != nil {
					t.Fatalf("write m%d: %v", i, err)
				}
			}
			var got []string
			var lerr error
			for {
				_, b, err := loc.Read(ctx)
				if err != nil {
					lerr = err
					break
				}
				got = append(got, string(b))
			}
			want := []string{"m0", "m1", "m2", "m3", "m4"}
			if !slices.Equal(got, want) {
				t.Errorf("local service received %q, want %q", got, want)
			}
			if ce := closeErr(t, "local", lerr); ce.Code != websocket.StatusTryAgainLater {
				t.Errorf("local: close %v, want 1013", ce)
			}
			verr := readUntilClose(t, "visitor", vis, 5*time.Second)
			if ce := closeErr(t, "visitor", verr); ce.Code != websocket.StatusTryAgainLater {
				t.Errorf("visitor: close %v, want 1013", ce)
			}
			resp, err := env.HTTP.Get(tun.URL + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
				t.Errorf("HTTP after the limit: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		})
	}
}

// Issue 3, point 3: teardown.
func TestWebSocketTeardown(t *testing.T) {
	const ping = 200 * time.Millisecond
	const window = 2 * time.Second // well inside the liveness window of 2 × ping, plus slack
	env := tunneltest.StartProxy(t, proxy.Config{Ping: ping})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			l := newLocal(t)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/ws": l.accept(nil)}))

			t.Run("visitor close 4001 bye reaches the local service", func(t *testing.T) {
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				defer vis.CloseNow()
				loc := l.next(ctx).conn
				go vis.Close(4001, "bye")
				_, _, err := loc.Read(ctx)
				if ce := closeErr(t, "local", err); ce.Code != 4001 || ce.Reason != "bye" {
					t.Fatalf("local saw %v, want 4001 bye", ce)
				}
			})

			t.Run("local close 4002 done reaches the visitor", func(t *testing.T) {
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				defer vis.CloseNow()
				loc := l.next(ctx).conn
				go loc.Close(4002, "done")
				_, _, err := vis.Read(ctx)
				if ce := closeErr(t, "visitor", err); ce.Code != 4002 || ce.Reason != "done" {
					t.Fatalf("visitor saw %v, want 4002 done", ce)
				}
			})

			// Frames cross in flight: the local service is still sending
			// when the visitor's close reaches the proxy. Its late messages
			// must be dropped quietly, not taken for a protocol violation
			// that would drop the whole tunnel.
			t.Run("visitor close while the local service is sending leaves the tunnel up", func(t *testing.T) {
				other := dialVisitor(ctx, t, env, wsURL(tun, "/echo"), nil)
				defer other.CloseNow()
				for range 3 {
					vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
					defer vis.CloseNow()
					loc := l.next(ctx).conn
					sending := make(chan struct{})
					go func() {
						defer close(sending)
						for loc.Write(ctx, websocket.MessageBinary, make([]byte, 1024)) == nil {
						}
					}()
					// Reading lets the local service see the close at once.
					go func() {
						for {
							if _, _, err := loc.Read(ctx); err != nil {
								return
							}
						}
					}()
					if _, _, err := vis.Read(ctx); err != nil {
						t.Fatal(err)
					}
					vis.Close(4001, "bye")
					<-sending
				}
				if err := echoOnce(ctx, other, "tunnel still up", 5*time.Second); err != nil {
					t.Fatalf("other stream: %v", err)
				}
			})

			t.Run("visitor vanishing without a close frame closes the local connection", func(t *testing.T) {
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				loc := l.next(ctx).conn
				vis.CloseNow()
				readUntilClose(t, "local", loc, window)
			})
		})
	}

	for _, m := range modes {
		t.Run(string(m)+"/client stop closes every public socket with 1011 or 1014", func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			l := newLocal(t)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/ws": l.accept(nil)}))
			var viss []*websocket.Conn
			for range 3 {
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				defer vis.CloseNow()
				l.next(ctx)
				viss = append(viss, vis)
			}
			tun.Stop()
			expectTunnelGone(t, viss, window)
		})
	}

	// A client that disappears without a close: its TCP connection is
	// reset, or it goes silent with the connection still up (a laptop
	// that sleeps, a partition). The second is the liveness case.
	for _, how := range []string{"connection reset", "silent"} {
		t.Run("client vanishes without a close ("+how+") closes every public socket with 1011 or 1014", func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			rc := dialRaw(ctx, t, env)
			var viss []*websocket.Conn
			for range 2 {
				dialed := make(chan *websocket.Conn, 1)
				go func() {
					c, _, err := tryDialVisitor(ctx, env, rc.url("/ws"), nil)
					if err != nil {
						t.Errorf("dial: %v", err)
					}
					dialed <- c
				}()
				rc.acceptStream(ctx)
				vis := <-dialed
				if vis == nil {
					t.FailNow()
				}
				defer vis.CloseNow()
				viss = append(viss, vis)
			}
			switch how {
			case "connection reset":
				rc.ws.CloseNow()
			case "silent":
				// Nothing more is read or written; the proxy's pings go
				// unanswered until it gives up.
			}
			expectTunnelGone(t, viss, window)
		})
	}
}

// expectTunnelGone checks that every visitor is closed with 1011 or 1014
// within d.
func expectTunnelGone(t *testing.T, viss []*websocket.Conn, d time.Duration) {
	t.Helper()
	start := time.Now()
	for i, vis := range viss {
		err := readUntilClose(t, fmt.Sprintf("visitor %d", i), vis, d-time.Since(start))
		code := websocket.CloseStatus(err)
		if code != websocket.StatusInternalError && code != websocket.StatusBadGateway {
			t.Errorf("visitor %d: closed with %v (%v), want 1011 or 1014", i, code, err)
		}
	}
	t.Logf("all %d public sockets closed %v after the client dropped", len(viss), time.Since(start).Round(time.Millisecond))
}

// Issue 3, point 4: isolation.
func TestWebSocketIsolation(t *testing.T) {
	const streamWriteTimeout = 2 * time.Second
	env := tunneltest.StartProxy(t, proxy.Config{StreamWriteTimeout: streamWriteTimeout})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			ctx := testCtx(t, 60*time.Second)
			l := newLocal(t)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/ws": l.accept(nil)}))

			// whileFlooding runs echo round trips on a second stream, and
			// GETs, on the same tunnel until the flood ends (the flooded
			// stream fails), and requires them to keep succeeding during
			// it. Latency is bounded, not zero: the kernel buffers of the
			// shared client connection hold megabytes of the flood ahead
			// of the other frames, which under -race on 2 cores is about a
			// second.
			whileFlooding := func(t *testing.T, other *websocket.Conn, floodEnded <-chan struct{}) {
				const bound = 5 * time.Second
				type result struct {
					what    string
					n       int
					slowest time.Duration
					err     error
				}
				results := make(chan result, 2)
				loop := func(what string, check func(i int) error) {
					r := result{what: what}
					start := time.Now()
					for i := 0; ; i++ {
						select {
						case <-floodEnded:
							r.err = nil
							results <- r
							return
						default:
						}
						t0 := time.Now()
						if err := check(i); err != nil {
							r.err = fmt.Errorf("%s #%d during the flood (%v into it): %w", what, i, time.Since(start).Round(time.Millisecond), err)
							results <- r
							return
						}
						d := time.Since(t0)
						r.slowest = max(r.slowest, d)
						if d > bound {
							r.err = fmt.Errorf("%s #%d took %v during the flood", what, i, d)
							results <- r
							return
						}
						select {
						case <-floodEnded: // this check may have needed the flood to end
						default:
							r.n++
						}
					}
				}
				go loop("echo on another stream", func(i int) error {
					return echoOnce(ctx, other, fmt.Sprintf("echo %d", i), bound)
				})
				go loop("GET /hello", func(int) error { return getHello(env, tun) })
				for range 2 {
					r := <-results
					if r.err != nil {
						t.Error(r.err)
						continue
					}
					t.Logf("%s: %d done during the flood, slowest %v", r.what, r.n, r.slowest.Round(time.Millisecond))
					if r.n < 1 {
						t.Errorf("%s: none completed while the flood lasted; that proves nothing", r.what)
					}
				}
			}

			t.Run("visitor that stops reading fails only its own stream with 1008", func(t *testing.T) {
				other := dialVisitor(ctx, t, env, wsURL(tun, "/echo"), nil)
				defer other.CloseNow()
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				defer vis.CloseNow()
				loc := l.next(ctx).conn
				// The visitor reads nothing. The local service floods it,
				// and reads to see the close the tunnel sends it.
				start := time.Now()
				var sent atomic.Int64
				floodDone := make(chan struct{})
				var lerr error
				go func() {
					defer close(floodDone)
					_, _, lerr = loc.Read(ctx)
				}()
				go func() {
					msg := bytes.Repeat([]byte("flood "), 32<<10/6)
					for loc.Write(ctx, websocket.MessageBinary, msg) == nil {
						sent.Add(int64(len(msg)))
					}
				}()
				whileFlooding(t, other, floodDone)
				select {
				case <-floodDone:
				case <-time.After(30 * time.Second):
					t.Fatal("the stalled stream was not failed")
				}
				t.Logf("the local service flooded %d MB in %v before the stream failed", sent.Load()>>20, time.Since(start).Round(time.Millisecond))
				if ce := closeErr(t, "local", lerr); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "visitor reads too slowly" {
					t.Errorf("local saw %v, want 1008 visitor reads too slowly", ce)
				}
				// The visitor, reading again, finds its stream ended.
				readUntilClose(t, "stalled visitor", vis, 10*time.Second)
			})

			t.Run("local service that stops reading fails only its own stream with 1008", func(t *testing.T) {
				other := dialVisitor(ctx, t, env, wsURL(tun, "/echo"), nil)
				defer other.CloseNow()
				vis := dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
				defer vis.CloseNow()
				l.next(ctx) // the local service never reads
				start := time.Now()
				var sent atomic.Int64
				floodDone := make(chan struct{})
				var verr error
				go func() {
					defer close(floodDone)
					_, _, verr = vis.Read(ctx)
				}()
				writerDone := make(chan struct{})
				go func() {
					defer close(writerDone)
					msg := bytes.Repeat([]byte("flood "), 32<<10/6)
					for vis.Write(ctx, websocket.MessageBinary, msg) == nil {
						sent.Add(int64(len(msg)))
					}
				}()
				whileFlooding(t, other, floodDone)
				select {
				case <-floodDone:
				case <-time.After(30 * time.Second):
					t.Fatal("the stalled stream was not failed")
				}
				t.Logf("the visitor flooded %d MB in %v before the stream failed", sent.Load()>>20, time.Since(start).Round(time.Millisecond))
				if ce := closeErr(t, "visitor", verr); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "local service reads too slowly" {
					t.Errorf("visitor saw %v, want 1008 local service reads too slowly", ce)
				}
				<-writerDone
			})
		})
	}

	t.Run("WSMessage for a stream ID the connection does not own closes it with 1008", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		cases := []struct {
			name string
			id   func(owner *rawClient, ownerStream messages.ID) messages.ID
		}{
			{"random ID", func(*rawClient, messages.ID) messages.ID { return messages.NewID() }},
			{"another connection's open stream", func(_ *rawClient, id messages.ID) messages.ID { return id }},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				owner := dialRaw(ctx, t, env)
				dialed := make(chan *websocket.Conn, 1)
				go func() {
					c, _, err := tryDialVisitor(ctx, env, owner.url("/ws"), nil)
					if err != nil {
						t.Errorf("dial: %v", err)
					}
					dialed <- c
				}()
				req := owner.acceptStream(ctx)
				vis := <-dialed
				if vis == nil {
					t.FailNow()
				}
				defer vis.CloseNow()

				intruder := dialRaw(ctx, t, env)
				intruder.send(ctx, &messages.WSMessage{ID: c.id(owner, req.ID), Opcode: messages.OpText, Fin: true, Data: []byte("forged")})
				_, err := intruder.tryRead(ctx)
				if ce := closeErr(t, "intruder", err); ce.Code != websocket.StatusPolicyViolation {
					t.Fatalf("intruder closed with %v, want 1008", ce)
				}
				// The forged message never reached the visitor: the next one
				// it gets is the owner's.
				owner.send(ctx, &messages.WSMessage{ID: req.ID, Opcode: messages.OpText, Fin: true, Data: []byte("genuine")})
				if _, b, err := vis.Read(ctx); err != nil || string(b) != "genuine" {
					t.Fatalf("visitor got %q, %v; want genuine", b, err)
				}
			})
		}
		t.Run("stream not yet accepted", func(t *testing.T) {
			rc := dialRaw(ctx, t, env)
			status := make(chan int, 1)
			go func() {
				_, resp, err := tryDialVisitor(ctx, env, rc.url("/ws"), nil)
				if err == nil {
					t.Error("upgrade succeeded")
				}
				if resp != nil {
					status <- resp.StatusCode
				} else {
					status <- 0
				}
			}()
			req, ok := rc.read(ctx).(*messages.WSRequest)
			if !ok {
				t.Fatal("no WSRequest")
			}
			rc.send(ctx, &messages.WSMessage{ID: req.ID, Opcode: messages.OpText, Fin: true, Data: []byte("too early")})
			_, err := rc.tryRead(ctx)
			if ce := closeErr(t, "client", err); ce.Code != websocket.StatusPolicyViolation {
				t.Fatalf("closed with %v, want 1008", ce)
			}
			if s := <-status; s != http.StatusBadGateway {
				t.Fatalf("visitor got %d, want 502", s)
			}
		})
	})
}
