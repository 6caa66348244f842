package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Issue 13, point 3: raw TCP tunnels, reached with a Visitor (what
// `client connect` runs), through in-process proxies.

// tcpTarget is a local TCP service: each connection runs handle, in a
// goroutine the test waits for at cleanup.
func tcpTarget(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// tcpEcho copies what it reads back until EOF, then half-closes.
func tcpEcho(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// publishTCP connects a client publishing target as a TCP tunnel and
// returns its hostname.
func publishTCP(t testing.TB, env *tunneltest.Env, svc client.TCPService) string {
	t.Helper()
	tun := env.Connect(&client.Client{TCP: &svc})
	u, err := url.Parse(tun.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname()
}

func newVisitor(t testing.TB, env *tunneltest.Env) *client.Visitor {
	t.Helper()
	v := &client.Visitor{Proxy: env.ProxyURL(), Logger: tunneltest.Logger(t)}
	t.Cleanup(func() { v.Close() })
	return v
}

// halfCloser is a connection that can end its writing alone.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// How a visitor's program reaches a TCP tunnel: through a Visitor's Dial
// (a net.Conn in the same process), or through a local port that Forward
// serves, as `client connect` does.
var visitorModes = []string{"dial", "forward"}

// tunnelConn is a visitor's connection to a TCP tunnel.
type tunnelConn struct {
	halfCloser
	forwarded chan error // "forward": what Forward returned, once it has
	once      sync.Once
	ferr      error
}

// forwardErr waits for what Forward returned ("forward" mode only).
func (c *tunnelConn) forwardErr(t testing.TB) error {
	t.Helper()
	c.once.Do(func() {
		select {
		case c.ferr = <-c.forwarded:
		case <-time.After(10 * time.Second):
			t.Fatal("Forward did not return")
		}
	})
	return c.ferr
}

// openVisitor opens a connection to host through v, in mode. In
// "forward" mode a refusal shows as a connection that ends; Forward's
// error is c.forwardErr.
func openVisitor(ctx context.Context, t testing.TB, v *client.Visitor, mode, host, token string) (*tunnelConn, error) {
	t.Helper()
	if mode == "dial" {
		c, err := v.Dial(ctx, host, token)
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		return &tunnelConn{halfCloser: c.(halfCloser)}, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tc := &tunnelConn{forwarded: make(chan error, 1)}
	accepted := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		close(accepted)
		if err != nil {
			tc.forwarded <- err
			return
		}
		tc.forwarded <- v.Forward(ctx, c, host, token)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// The listener closes on return: a connection still in its backlog
	// then would be reset, never accepted.
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the visitor's listener did not accept")
	}
	tc.halfCloser = c.(*net.TCPConn)
	t.Cleanup(func() {
		c.Close()
		tc.forwardErr(t)
	})
	return tc, nil
}

// Half-close in both directions: each side's end of writing reaches the
// other as EOF while the other direction goes on.
func TestTCPHalfClose(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	// The target reads to EOF, then answers with what it read; or it
	// writes first, half-closes, and reads what comes after.
	got := make(chan string, 4)
	answerAfterEOF := tcpTarget(t, func(c *net.TCPConn) {
		b, err := io.ReadAll(c)
		if err != nil {
			got <- "read error: " + err.Error()
			return
		}
		fmt.Fprintf(c, "you sent %q", b)
		c.CloseWrite()
	})
	speakFirst := tcpTarget(t, func(c *net.TCPConn) {
		c.Write([]byte("banner, then nothing more from me"))
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			got <- "read error: " + err.Error()
			return
		}
		got <- string(b)
	})
	v := newVisitor(t, env)
	for _, mode := range visitorModes {
		t.Run(mode, func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			t.Run("visitor-closes-write", func(t *testing.T) {
				host := publishTCP(t, env, client.TCPService{Target: answerAfterEOF})
				c, err := openVisitor(ctx, t, v, mode, host, "")
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("read after CloseWrite: %v", err)
				}
				if want := `you sent "ping"`; string(b) != want {
					t.Fatalf("got %q, want %q", b, want)
				}
			})
			t.Run("target-closes-write", func(t *testing.T) {
				host := publishTCP(t, env, client.TCPService{Target: speakFirst})
				c, err := openVisitor(ctx, t, v, mode, host, "")
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b, err := io.ReadAll(c)
				if err != nil || string(b) != "banner, then nothing more from me" {
					t.Fatalf("read to EOF: %q, %v", b, err)
				}
				// The target's direction is over; ours still carries.
				if _, err := c.Write([]byte("still heard after your EOF")); err != nil {
					t.Fatalf("write after EOF: %v", err)
				}
				c.CloseWrite()
				select {
				case s := <-got:
					if s != "still heard after your EOF" {
						t.Fatalf("target read %q", s)
					}
				case <-ctx.Done():
					t.Fatal("the target never saw the visitor's EOF")
				}
			})
		})
	}
}

// pattern is n bytes of a fixed pseudo-random sequence, read in pieces.
func pattern(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n)
}

// A large transfer is byte-exact in both directions at once.
func TestTCPLargeTransfer(t *testing.T) {
	// 16 MiB keeps the test quick under -race (websocket masking is most of
	// its time); BenchmarkTCPThroughput moves 64 MiB.
	const size = 16 << 20
	env := tunneltest.StartProxy(t, proxy.Config{})
	host := publishTCP(t, env, client.TCPService{Target: tcpTarget(t, tcpEcho)})
	v := newVisitor(t, env)
	for _, mode := range visitorModes {
		t.Run(mode, func(t *testing.T) {
			ctx := testCtx(t, 60*time.Second)
			c, err := openVisitor(ctx, t, v, mode, host, "")
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(50 * time.Second))
			start := time.Now()
			sent := sha256.New()
			wrote := make(chan error, 1)
			go func() {
				_, err := io.Copy(c, io.TeeReader(pattern(7, size), sent))
				if err == nil {
					err = c.CloseWrite()
				}
				wrote <- err
			}()
			got := sha256.New()
			n, err := io.Copy(got, c)
			if err != nil {
				t.Fatalf("read after %d bytes: %v", n, err)
			}
			if err := <-wrote; err != nil {
				t.Fatalf("write: %v", err)
			}
			d := time.Since(start)
			if n != size || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
				t.Fatalf("echoed %d bytes, sha256 %x; sent %d, sha256 %x", n, got.Sum(nil), int64(size), sent.Sum(nil))
			}
			t.Logf("%d MiB each way in %v: %.1f MB/s each way", size>>20, d.Round(time.Millisecond), float64(size)/d.Seconds()/1e6)
		})
	}
}

// A stream whose visitor stops reading holds up only itself: another
// stream on the same tunnel and the same visitor connection goes on at
// the speed it had alone, and the stalled one buffers no more than its
// windows.
func TestTCPStalledReaderAlone(t *testing.T) {
	const (
		bulk      = 4 << 20  // what the flowing stream moves, each time
		firehose  = 64 << 20 // what the stalled stream's target would send, at most
		maxQueued = 40 << 20 // windows along the way, and socket buffers
	)
	env := tunneltest.StartProxy(t, proxy.Config{})
	var pushed atomic.Int64 // by the stalled stream's target
	target := tcpTarget(t, func(c *net.TCPConn) {
		kind := make([]byte, 1)
		if _, err := io.ReadFull(c, kind); err != nil {
			return
		}
		n := int64(bulk)
		if kind[0] == 'F' {
			n = firehose
		}
		buf := make([]byte, 32<<10)
		for sent := int64(0); sent < n; sent += int64(len(buf)) {
			if _, err := c.Write(buf); err != nil {
				return
			}
			if kind[0] == 'F' {
				pushed.Add(int64(len(buf)))
			}
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	host := publishTCP(t, env, client.TCPService{Target: target})
	v := newVisitor(t, env)
	ctx := testCtx(t, 60*time.Second)
	open := func(kind string) halfCloser {
		c, err := openVisitor(ctx, t, v, "dial", host, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(kind)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	timeBulk := func() time.Duration {
		start := time.Now()
		c := open("B")
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != bulk {
			t.Fatalf("bulk stream: %d bytes, %v", n, err)
		}
		c.Close()
		return time.Since(start)
	}
	alone := timeBulk()

	stalled := open("F")
	// Wait until the stalled stream's target can push no more: every
	// window on the way is full.
	last, since := int64(-1), time.Now()
	tunneltest.Eventually(t, 20*time.Second, "the stalled stream never filled its windows", func() bool {
		if p := pushed.Load(); p != last {
			last, since = p, time.Now()
		}
		return last > 0 && time.Since(since) > 300*time.Millisecond
	})
	beside := timeBulk()
	t.Logf("%d MiB alone in %v, beside a stalled stream in %v; the stalled one buffered %.1f MiB",
		bulk>>20, alone.Round(time.Millisecond), beside.Round(time.Millisecond), float64(pushed.Load())/(1<<20))
	if limit := 3*alone + time.Second; beside > limit {
		t.Errorf("beside a stalled stream the transfer took %v, more than %v (alone %v)", beside, limit, alone)
	}
	if p := pushed.Load(); p > maxQueued {
		t.Errorf("the stalled stream took %d bytes from its target, more than %d: its windows do not hold it", p, maxQueued)
	}
	// The stalled stream was only waiting: it goes on once read.
	stalled.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := io.CopyN(io.Discard, stalled, 1<<20); err != nil {
		t.Fatalf("the stalled stream after it was read again: %d bytes, %v", n, err)
	}
}

// A stream the tunnel cannot carry is refused with a reason the visitor
// sees: nothing listens at the target, no such tunnel, a tunnel of the
// other kind, an address the tunnel's rules refuse.
func TestTCPRefused(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()
	refusing := publishTCP(t, env, client.TCPService{Target: closedPort})
	httpTun := env.Serve(http.NotFoundHandler())
	httpHost, _, _ := strings.Cut(httpTun.Host(), ":")
	denied := env.Connect(&client.Client{
		TCP:    &client.TCPService{Target: tcpTarget(t, tcpEcho)},
		DenyIP: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	deniedHost, _, _ := strings.Cut(denied.Host(), ":")
	offline := strings.Repeat("a", messages.HostnameLen) + ".localhost"
	v := newVisitor(t, env)
	// A tunnel over its rate: one stream a minute, and one was had.
	limited := tunneltest.StartProxy(t, proxy.Config{Rate: 1.0 / 60, Burst: 1})
	limitedHost := publishTCP(t, limited, client.TCPService{Target: tcpTarget(t, tcpEcho)})
	lv := newVisitor(t, limited)
	first, err := lv.Dial(testCtx(t, 10*time.Second), limitedHost, "")
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	for _, tc := range []struct {
		name, host, reason string
		v                  *client.Visitor
	}{
		{"target refuses", refusing, "the tunnel's target refused the connection", nil},
		{"HTTP tunnel", httpHost, httpHost + " is an HTTP tunnel, not a TCP one", nil},
		{"offline", offline, "the tunnel is offline", nil},
		{"not a tunnel hostname", "example.com", "no tunnel has this hostname", nil},
		{"address denied", deniedHost, "this tunnel does not admit your address", nil},
		{"over the rate", limitedHost, "the tunnel is over its rate limit; retry later", lv},
	} {
		for _, mode := range visitorModes {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				tv := v
				if tc.v != nil {
					tv = tc.v
				}
				c, err := openVisitor(ctx, t, tv, mode, tc.host, "")
				if mode == "forward" {
					// The local program sees its connection end; Forward
					// says why.
					c.SetReadDeadline(time.Now().Add(10 * time.Second))
					if n, rerr := c.Read(make([]byte, 1)); n != 0 || rerr == nil {
						t.Fatalf("read %d bytes, %v; want the connection ended", n, rerr)
					}
					c.Close()
					err = c.forwardErr(t)
				}
				var refused *client.RefusedStreamError
				if !errors.As(err, &refused) || refused.Reason != tc.reason {
					t.Fatalf("err = %v, want a refusal saying %q", err, tc.reason)
				}
			})
		}
	}
}

// A tunnel with a visitor token lets in only the streams that present it;
// the others are refused with a reason, and no token is ever logged.
func TestTCPVisitorToken(t *testing.T) {
	const token, wrong = "correct horse battery staple", "tr0ub4dor&3"
	var logs lockedBuffer // webhook_test.go
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	env := tunneltest.StartProxy(t, proxy.Config{Logger: logger})
	tun := env.Connect(&client.Client{TCP: &client.TCPService{Target: tcpTarget(t, tcpEcho), VisitorToken: token}, Logger: logger})
	host, _, _ := strings.Cut(tun.Host(), ":")
	v := &client.Visitor{Proxy: env.ProxyURL(), Logger: logger}
	t.Cleanup(func() { v.Close() })
	for _, tc := range []struct {
		name, token, refusal string
	}{
		{"missing", "", "this tunnel requires a visitor token (client connect --token)"},
		{"wrong", wrong, "wrong visitor token"},
		{"a prefix of it", token[:10], "wrong visitor token"},
		{"right", token, ""},
	} {
		for _, mode := range visitorModes {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				c, err := openVisitor(ctx, t, v, mode, host, tc.token)
				if err == nil {
					c.SetDeadline(time.Now().Add(10 * time.Second))
					c.Write([]byte("hello"))
					c.CloseWrite()
					b, rerr := io.ReadAll(c)
					if tc.refusal == "" && (rerr != nil || string(b) != "hello") {
						t.Fatalf("echo through the tunnel: %q, %v", b, rerr)
					}
					if mode == "forward" {
						err = c.forwardErr(t)
					}
				}
				var refused *client.RefusedStreamError
				switch {
				case tc.refusal == "" && err != nil:
					t.Fatalf("refused: %v", err)
				case tc.refusal != "" && (!errors.As(err, &refused) || refused.Reason != tc.refusal):
					t.Fatalf("err = %v, want a refusal saying %q", err, tc.refusal)
				}
			})
		}
	}
	if l := logs.String(); !strings.Contains(l, "tcp stream refused") {
		t.Fatalf("no refusal logged:\n%s", l)
	} else if strings.Contains(l, token) || strings.Contains(l, wrong) {
		t.Fatalf("a visitor token reached the logs:\n%s", l)
	}
}

// HTTP visitors of a TCP tunnel get a page that says what it is and how
// to reach it, from the proxy; the tunnel's client never hears of them.
func TestTCPTunnelAnswersHTTP(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	var accepted atomic.Int64
	target := tcpTarget(t, func(c *net.TCPConn) { accepted.Add(1) })
	tun := env.Connect(&client.Client{TCP: &client.TCPService{Target: target}})
	host, _, _ := strings.Cut(tun.Host(), ":")
	for _, method := range []string{"GET", "POST", "HEAD"} {
		t.Run(method, func(t *testing.T) {
			req, err := http.NewRequest(method, tun.URL+"/index.html", strings.NewReader("a body"))
			if err != nil {
				t.Fatal(err)
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
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if method == "HEAD" {
				if len(b) != 0 {
					t.Fatalf("HEAD got a body: %q", b)
				}
				return
			}
			for _, want := range []string{host + " is a TCP tunnel", "client connect --proxy " + "http://localhost:", " --listen 127.0.0.1:PORT " + host} {
				if !strings.Contains(string(b), want) {
					t.Fatalf("page lacks %q:\n%s", want, b)
				}
			}
		})
	}
	t.Run("websocket", func(t *testing.T) {
		ctx := testCtx(t, 10*time.Second)
		_, resp, err := tryDialVisitor(ctx, env, wsURL(tun, "/socket"), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("handshake: %v, %v; want it refused with 400", resp, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), host+" is a TCP tunnel") {
			t.Fatalf("refusal body %q", b)
		}
	})
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the target got %d connections from HTTP visitors", n)
	}
}

// Across two instances on one bus: the visitor's instance is not the one
// holding the client, and the stream goes through the bus, half-closes
// included.
func TestTCPAcrossInstances(t *testing.T) {
	m := bus.NewMemory()
	t.Cleanup(func() { m.Close() })
	holder := tunneltest.StartProxy(t, proxy.Config{Bus: m, Registry: m})
	other := tunneltest.StartProxy(t, proxy.Config{Bus: m, Registry: m})
	target := tcpTarget(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		sum := sha256.Sum256(b)
		fmt.Fprintf(c, "%d %x", len(b), sum)
		c.CloseWrite()
	})
	host := publishTCP(t, holder, client.TCPService{Target: target, VisitorToken: "t"})
	v := newVisitor(t, other)
	for _, mode := range visitorModes {
		t.Run(mode, func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			c, err := openVisitor(ctx, t, v, mode, host, "t")
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(15 * time.Second))
			sum := sha256.New()
			const size = 1 << 20
			if _, err := io.Copy(c, io.TeeReader(pattern(3, size), sum)); err != nil {
				if mode == "forward" {
					t.Fatalf("%v (Forward: %v)", err, c.forwardErr(t))
				}
				t.Fatal(err)
			}
			c.CloseWrite()
			b, err := io.ReadAll(c)
			if want := fmt.Sprintf("%d %x", size, sum.Sum(nil)); err != nil || string(b) != want {
				t.Fatalf("got %q, %v; want %q", b, err, want)
			}
		})
	}
}

// BenchmarkTCPThroughput moves 64 MiB one way, then the other, directly
// to a local TCP service and through a tunnel (the client connect path:
// a local port, a visitor connection, the proxy, the tunnel's client),
// for the throughput of each. Run it without -race:
//
//	go test -run '^$' -bench TCPThroughput -benchtime 3x ./e2e/
func BenchmarkTCPThroughput(b *testing.B) {
	const size = 64 << 20
	// The service reads to EOF and answers the count ("U"), or sends
	// size bytes ("D").
	target := tcpTarget(b, func(c *net.TCPConn) {
		kind := make([]byte, 1)
		if _, err := io.ReadFull(c, kind); err != nil {
			return
		}
		if kind[0] == 'D' {
			io.Copy(c, io.LimitReader(zeros{}, size))
			c.CloseWrite()
			return
		}
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprint(c, n)
		c.CloseWrite()
	})
	env := tunneltest.StartProxy(b, proxy.Config{})
	host := publishTCP(b, env, client.TCPService{Target: target})
	v := newVisitor(b, env)
	dial := map[string]func() net.Conn{
		"direct": func() net.Conn {
			c, err := net.Dial("tcp", target)
			if err != nil {
				b.Fatal(err)
			}
			return c
		},
		"tunnel": func() net.Conn {
			c, err := openVisitor(context.Background(), b, v, "forward", host, "")
			if err != nil {
				b.Fatal(err)
			}
			return c
		},
	}
	for _, path := range []string{"direct", "tunnel"} {
		b.Run(path+"/up", func(b *testing.B) {
			b.SetBytes(size)
			for range b.N {
				c := dial[path]()
				io.WriteString(c, "U")
				io.Copy(c, io.LimitReader(zeros{}, size))
				c.(halfCloser).CloseWrite()
				got, err := io.ReadAll(c)
				if err != nil || string(got) != fmt.Sprint(size) {
					b.Fatalf("the service read %q, %v", got, err)
				}
				c.Close()
			}
		})
		b.Run(path+"/down", func(b *testing.B) {
			b.SetBytes(size)
			for range b.N {
				c := dial[path]()
				io.WriteString(c, "D")
				if n, err := io.Copy(io.Discard, c); err != nil || n != size {
					b.Fatalf("read %d bytes, %v", n, err)
				}
				c.Close()
			}
		})
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
