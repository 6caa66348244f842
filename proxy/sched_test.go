package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Frames of the goroutines an idle client connection may or may not cost.
const (
	writerFrame    = "proxy.(*clientConn).runWriter("
	readerFrame    = "proxy.(*clientConn).readLoop("
	schedulerFrame = "proxy.(*scheduler).run("
)

// goroutinesIn counts the goroutines with a frame of fn on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			n++
		}
	}
	return n
}

// smallBuffers makes every connection the proxy accepts keep at most a
// few KiB of unsent data in the kernel (it would otherwise grow to
// megabytes), so that a client that reads nothing soon holds the proxy's
// writer in its write.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// startProxyOn is tunneltest.StartProxy on a listener of one's own.
func startProxyOn(t *testing.T, ln net.Listener, cfg proxy.Config) *tunneltest.Env {
	t.Helper()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cfg.Domain = "localhost"
	cfg.PublicURL = "http://localhost:" + port
	cfg.Logger = tunneltest.Logger(t)
	p, err := proxy.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.MaxHeaderBytes = proxy.MaxHeaderBytes
	srv.Start()
	env := &tunneltest.Env{T: t, Proxy: p, Server: srv, Addr: ln.Addr().String(), HTTP: tunneltest.DialingClient(ln.Addr().String())}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		srv.Close()
		env.HTTP.CloseIdleConnections()
	})
	return env
}

// registerUnread registers rc but does not start its reader: until
// startReading, nothing the proxy sends is read, and once the kernel's
// buffers are full (see smallBuffers) the proxy's writes block.
func (rc *rawConn) registerUnread(t *testing.T) {
	t.Helper()
	jws, err := messages.SignRegistration(tunneltest.NewKey(t), rc.ch, messages.RegistrationClaims{})
	if err != nil {
		t.Fatal(err)
	}
	rc.send(&messages.RegistrationRequest{JWS: jws})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := rc.ws.Read(ctx)
	if err != nil {
		t.Fatalf("read registration response: %v", err)
	}
	m, err := messages.Decode(data)
	resp, ok := m.(*messages.RegistrationResponse)
	if err != nil || !ok {
		t.Fatalf("got %v, %v; want a RegistrationResponse", m, err)
	}
	rc.resp = *resp
	rc.url = resp.URL
}

func (rc *rawConn) startReading() {
	rc.started = true
	go rc.readLoop()
}

// The writer goroutine exists while frames wait to be written to the
// client, one at most, and is gone once everything is written: an idle
// connection costs its reader goroutine only.
func TestWriterRunsOnlyWhileThereIsSomethingToWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := startProxyOn(t, smallBuffers{ln}, proxy.Config{Ping: 10 * time.Second, Timeout: 20 * time.Second})
	rc := dialRaw(t, env)
	rc.registerUnread(t)
	tunneltest.Eventually(t, 5*time.Second, "an idle connection with a reader and no writer", func() bool {
		return goroutinesIn(readerFrame) == 1 && goroutinesIn(writerFrame) == 0
	})

	// A body of more than the stream's initial window (and less than the
	// 500 KB cap): the proxy writes what the window allows, which the
	// client does not read.
	body := bytes.Repeat([]byte("0123456789abcdef"), 300_000/16)
	done := goDo(env, rc.request(http.MethodPost, "/upload", body))
	most := 0
	tunneltest.Eventually(t, 10*time.Second, "a writer while frames wait for the client", func() bool {
		n := goroutinesIn(writerFrame)
		most = max(most, n)
		return n == 1
	})
	// The writer is stuck in its write; no second one starts meanwhile
	// (a measuring window, not a wait for state).
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); {
		most = max(most, goroutinesIn(writerFrame))
	}
	if most != 1 {
		t.Fatalf("%d writers at once for one connection", most)
	}

	rc.startReading()
	req := rc.nextRequest()
	if !bytes.Equal(req.Body, body) {
		t.Fatalf("the client got %d bytes of the %d-byte body", len(req.Body), len(body))
	}
	rc.respond(req.ID, 200, nil, []byte("stored"))
	if r := await(t, done, 10*time.Second); r.status != 200 || r.body != "stored" {
		t.Fatalf("upload: %d %q", r.status, r.body)
	}
	tunneltest.Eventually(t, 5*time.Second, "no writer once everything is written", func() bool {
		return goroutinesIn(writerFrame) == 0
	})
	if n := goroutinesIn(readerFrame); n != 1 {
		t.Fatalf("%d readers for one connection", n)
	}
}

// pingTimes reads rc's messages for the window and returns when each
// Ping arrived.
func pingTimes(t *testing.T, rc *rawConn, window time.Duration) []time.Time {
	t.Helper()
	var at []time.Time
	end := time.After(window)
	for {
		select {
		case m := <-rc.msgs:
			if m.Type() != messages.TypePing {
				t.Fatalf("got %v on an idle connection", m.Type())
			}
			at = append(at, time.Now())
		case <-rc.done:
			t.Fatalf("connection closed: %v", rc.err)
		case <-end:
			return at
		}
	}
}

// keepPinging sends the client's pings every half interval until the
// test ends, as a live client does.
func keepPinging(t *testing.T, rc *rawConn, every time.Duration) {
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := rc.ws.Write(ctx, websocket.MessageBinary, messages.Encode(&messages.Ping{}))
				cancel()
				if err != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-stopped
	})
}

// wantPingsEvery checks that pings came about once per interval: none
// sooner than an interval after the last write (the previous ping), none
// later than the scheduler's half-interval visits allow.
func wantPingsEvery(t *testing.T, at []time.Time, since time.Time, ping time.Duration, slack time.Duration) {
	t.Helper()
	if len(at) < 3 {
		t.Fatalf("%d pings, want several", len(at))
	}
	prev := since
	for i, a := range at {
		gap := a.Sub(prev)
		if gap < ping-50*time.Millisecond || gap > ping+ping/2+slack {
			t.Fatalf("ping %d came %v after the last write, want between %v and %v", i, gap, ping, ping+ping/2)
		}
		prev = a
	}
}

// One scheduler per instance serves every connection: idle ones get their
// pings at the interval, silent ones are dropped after two intervals, and
// the scheduler itself goes away with the last connection.
func TestSchedulerServesEveryConnection(t *testing.T) {
	const (
		ping  = 200 * time.Millisecond
		n     = 12
		slack = 250 * time.Millisecond // for a loaded machine under -race
	)
	env := tunneltest.StartProxy(t, proxy.Config{Ping: ping})

	t.Run("idle connections pinged at the interval", func(t *testing.T) {
		conns := make([]*rawConn, n)
		registered := make([]time.Time, n)
		for i := range conns {
			conns[i] = dialRaw(t, env).register(tunneltest.NewKey(t))
			registered[i] = time.Now()
			keepPinging(t, conns[i], ping/2)
		}
		if s := goroutinesIn(schedulerFrame); s != 1 {
			t.Fatalf("%d schedulers for %d connections of one instance", s, n)
		}
		tunneltest.Eventually(t, 5*time.Second, "a reader for each connection", func() bool {
			return goroutinesIn(readerFrame) == n
		})
		var wg sync.WaitGroup
		times := make([][]time.Time, n)
		for i, rc := range conns {
			wg.Go(func() { times[i] = pingTimes(t, rc, 6*ping) })
		}
		wg.Wait()
		for i := range conns {
			wantPingsEvery(t, times[i], registered[i], ping, slack)
		}
		for _, rc := range conns {
			rc.ws.Close(websocket.StatusNormalClosure, "")
		}
		tunneltest.Eventually(t, 5*time.Second, "the scheduler gone with its last connection", func() bool {
			return goroutinesIn(schedulerFrame) == 0
		})
	})

	t.Run("silent connections dropped after two intervals", func(t *testing.T) {
		conns := make([]*rawConn, n)
		registered := make([]time.Time, n)
		for i := range conns {
			conns[i] = dialRaw(t, env).register(tunneltest.NewKey(t))
			registered[i] = time.Now()
		}
		for i, rc := range conns {
			err := rc.closed(10 * time.Second)
			took := time.Since(registered[i])
			if took < 2*ping-50*time.Millisecond || took > 2*ping+ping/2+slack+time.Duration(n)*10*time.Millisecond {
				t.Fatalf("connection %d dropped after %v, want between 2 and 2.5 ping intervals (%v)", i, took, ping)
			}
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				t.Fatalf("connection %d got a close frame (%v); a silent client is dropped without one", i, err)
			}
		}
	})
}

// hungRegistry never answers a refresh until its context ends.
type hungRegistry struct {
	bus.Registry
	inFlight, most, calls atomic.Int32
}

func (h *hungRegistry) Refresh(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	h.calls.Add(1)
	n := h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
	}
	<-ctx.Done()
	return false, ctx.Err()
}

// A registry that hangs holds up no ping: the refresh runs beside the
// writer, one at a time per connection. (The hostname's entry lapses
// meanwhile, which is the registry's business.)
func TestHungRegistryDelaysNoPing(t *testing.T) {
	const ping = 100 * time.Millisecond
	m := bus.NewMemory()
	t.Cleanup(func() { m.Close() })
	reg := &hungRegistry{Registry: m}
	env := tunneltest.StartProxy(t, proxy.Config{Bus: m, Registry: reg, Ping: ping})
	rc := dialRaw(t, env).register(tunneltest.NewKey(t))
	since := time.Now()
	keepPinging(t, rc, ping/2)
	at := pingTimes(t, rc, 10*ping)
	wantPingsEvery(t, at, since, ping, 250*time.Millisecond)
	if reg.calls.Load() == 0 {
		t.Fatal("no refresh was tried: the test proves nothing")
	}
	if most := reg.most.Load(); most != 1 {
		t.Fatalf("%d refreshes in flight at once for one connection", most)
	}
}

// A replaced connection with nothing in flight closes as the newer one
// registers, not at the scheduler's next visit.
func TestReplacedIdleConnectionClosesAtOnce(t *testing.T) {
	const ping = 10 * time.Second
	env := tunneltest.StartProxy(t, proxy.Config{Ping: ping})
	key := tunneltest.NewKey(t)
	first := dialRaw(t, env).register(key)
	dialRaw(t, env).register(key)
	start := time.Now()
	wantClose(t, first.closed(ping/4), proxy.StatusReplaced, "replaced by a newer connection")
	if took := time.Since(start); took > time.Second {
		t.Fatalf("closed %v after the replacement", took)
	}
}
