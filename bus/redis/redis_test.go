package redis_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/bus/bustest"
	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newBus connects to url and closes the bus when the test ends.
func newBus(t *testing.T, url string, opts redis.Options) *redis.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redis.New(ctx, url, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", url, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func TestConformance(t *testing.T) {
	srv := testenv.Redis(t)
	bustest.Run(t, func(t *testing.T) (bus.Bus, bus.Registry) {
		b := newBus(t, srv.URL(), redis.Options{})
		return b, b
	})
}

func TestNew(t *testing.T) {
	t.Parallel()
	open := testenv.Redis(t)
	locked := testenv.RedisWithArgs(t, "--requirepass", "pa:ss@word")
	closedPort := testenv.FreePort(t)

	tests := []struct {
		name    string
		url     string
		wantErr string // substring; "" means success
		timeout time.Duration
	}{
		{name: "plain", url: open.URL()},
		{name: "no db", url: "redis://" + open.Addr},
		{name: "other db", url: "redis://" + open.Addr + "/3"},
		{name: "password", url: "redis://:pa%3Ass%40word@" + locked.Addr + "/0"},
		{name: "user and password", url: "redis://default:pa%3Ass%40word@" + locked.Addr + "/0"},
		{name: "wrong password", url: "redis://:nope@" + locked.Addr + "/0", wantErr: "ping"},
		{name: "missing password", url: locked.URL(), wantErr: "ping"},
		{name: "bad scheme", url: "http://" + open.Addr, wantErr: "parse url"},
		{name: "not a url", url: "::::", wantErr: "parse url"},
		{name: "bad db", url: "redis://" + open.Addr + "/x", wantErr: "parse url"},
		{name: "nothing listening", url: "redis://127.0.0.1:" + itoa(closedPort) + "/0", wantErr: "ping"},
		// The plain server waits for a command line that the TLS hello never
		// completes, so only the context ends this one.
		{name: "tls to a plain server", url: "rediss://" + open.Addr + "/0", wantErr: "ping", timeout: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			b, err := redis.New(ctx, tt.url, redis.Options{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer b.Close()
				if err := b.Ping(ctx); err != nil {
					t.Fatalf("Ping: %v", err)
				}
				if _, err := b.Claim(ctx, "new-test-"+tt.name, "me", time.Minute); err != nil {
					t.Fatalf("Claim: %v", err)
				}
				return
			}
			if err == nil {
				b.Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "redis bus: ") {
				t.Fatalf("New: %v, want a redis bus error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "pa:ss@word") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// recv is a non-blocking handler that queues payloads.
type recv chan string

func (r recv) handle(p []byte) {
	select {
	case r <- string(p):
	default:
	}
}

func (r recv) wait(t *testing.T, want string) {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		select {
		case got := <-r:
			if got == want {
				return
			}
		case <-timer.C:
			t.Fatalf("%q not delivered", want)
		}
	}
}

// TestReceiverCount pins what Publish counts in Redis: subscribed
// connections, one per Bus, however many handlers a Bus has.
func TestReceiverCount(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	ctx := context.Background()
	a, b := newBus(t, srv.URL(), redis.Options{}), newBus(t, srv.URL(), redis.Options{})
	const topic = "count"
	steps := []struct {
		sub  *redis.Bus
		want int
	}{
		{a, 1}, // a: one handler
		{a, 1}, // a: two handlers, still one connection
		{b, 2}, // b joins
	}
	for i, s := range steps {
		r := make(recv, 4)
		if _, err := s.sub.Subscribe(ctx, topic, r.handle); err != nil {
			t.Fatal(err)
		}
		n, err := a.Publish(ctx, topic, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if n != s.want {
			t.Fatalf("step %d: Publish = %d receivers, want %d", i, n, s.want)
		}
	}
}

// TestShortTopic guards against go-redis v9.21-v9.22, whose RESP3 reader
// hung on subscribe confirmations shorter than 36 bytes (topics of up to six
// characters).
func TestShortTopic(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	b := newBus(t, srv.URL(), redis.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, topic := range []string{"a", "abcdef"} {
		r := make(recv, 1)
		if _, err := b.Subscribe(ctx, topic, r.handle); err != nil {
			t.Fatalf("Subscribe(%q): %v", topic, err)
		}
		if _, err := b.Publish(ctx, topic, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		r.wait(t, "hi")
	}
}

// TestSubscribeContext checks that a Subscribe whose context has ended
// fails without disturbing the subscriptions that share the connection.
func TestSubscribeContext(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	var reconnects atomic.Int32
	b := newBus(t, srv.URL(), redis.Options{OnReconnect: func() { reconnects.Add(1) }})
	ctx := context.Background()

	steady := make(recv, 8)
	if _, err := b.Subscribe(ctx, "steady", steady.handle); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Subscribe(cancelled, "never", steady.handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe with a cancelled context: %v", err)
	}
	if n, err := b.Publish(ctx, "never", []byte("x")); err != nil || n != 0 {
		t.Fatalf("Publish to the failed topic = %d, %v; want 0 receivers", n, err)
	}
	if _, err := b.Publish(ctx, "steady", []byte("still here")); err != nil {
		t.Fatal(err)
	}
	steady.wait(t, "still here")
	if n := reconnects.Load(); n != 0 {
		t.Fatalf("a failed Subscribe caused %d reconnections", n)
	}
}

// TestRestart stops and restarts redis-server under a live bus: the
// subscription made before must deliver again without a new Subscribe, Ping
// must report the outage, and OnReconnect must run.
func TestRestart(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	reconnected := make(chan struct{}, 1)
	b := newBus(t, srv.URL(), redis.Options{OnReconnect: func() {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const topic = "keyhole:host:restart.example"
	r := make(recv, 64)
	if _, err := b.Subscribe(ctx, topic, r.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, topic, []byte("before")); err != nil {
		t.Fatal(err)
	}
	r.wait(t, "before")
	if _, err := b.Claim(ctx, "restart.example", "me", time.Minute); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	pingCtx, pingCancel := context.WithTimeout(ctx, 2*time.Second)
	err := b.Ping(pingCtx)
	pingCancel()
	if err == nil {
		t.Fatal("Ping succeeded while redis-server was stopped")
	}
	if _, err := b.Publish(ctx, topic, []byte("lost")); err == nil {
		t.Fatal("Publish succeeded while redis-server was stopped")
	}
	// A Subscribe during the outage fails within its context.
	subCtx, subCancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = b.Subscribe(subCtx, "during-outage", r.handle)
	subCancel()
	if err == nil {
		t.Fatal("Subscribe succeeded while redis-server was stopped")
	}

	srv.Start()
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
	// Publish until the old subscription delivers: messages published
	// before go-redis has resubscribed are lost, as pub/sub is at-most-once.
	deadline := time.Now().Add(10 * time.Second)
	delivered := false
	for !delivered {
		if time.Now().After(deadline) {
			t.Fatal("subscription made before the restart did not deliver within 10s")
		}
		if _, err := b.Publish(ctx, topic, []byte("after")); err != nil {
			t.Fatalf("Publish after restart: %v", err)
		}
		timer := time.NewTimer(50 * time.Millisecond)
		select {
		case got := <-r:
			delivered = got == "after"
		case <-timer.C:
		}
		timer.Stop()
	}
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("OnReconnect was not called")
	}
	// The restarted server kept nothing; the registry is empty until the
	// owner re-announces, which is what OnReconnect is for.
	if _, err := b.Lookup(ctx, "restart.example"); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("Lookup after restart: %v, want ErrNotFound", err)
	}
	if _, err := b.Claim(ctx, "restart.example", "me", time.Minute); err != nil {
		t.Fatalf("Claim after restart: %v", err)
	}
	if n, err := b.Publish(ctx, topic, []byte("count")); err != nil || n != 1 {
		t.Fatalf("Publish after restart = %d, %v; want 1 receiver", n, err)
	}
	// The topic whose Subscribe failed during the outage can be subscribed
	// now: the failure left nothing pending behind.
	r2 := make(recv, 4)
	subCtx, subCancel = context.WithTimeout(ctx, 10*time.Second)
	defer subCancel()
	if _, err := b.Subscribe(subCtx, "during-outage", r2.handle); err != nil {
		t.Fatalf("Subscribe after restart: %v", err)
	}
	if n, err := b.Publish(ctx, "during-outage", []byte("now")); err != nil || n != 1 {
		t.Fatalf("Publish = %d, %v; want 1 receiver", n, err)
	}
	r2.wait(t, "now")
}

// TestSilentConnection freezes the pub/sub connection without closing it,
// as a dead NAT entry or a partition would. The bus must notice the silence
// through its health check, dial again, and deliver.
func TestSilentConnection(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	fwd := newForwarder(t, srv.Addr)
	reconnected := make(chan struct{}, 1)
	sub := newBus(t, "redis://"+fwd.addr+"/0", redis.Options{
		HealthCheckInterval: 100 * time.Millisecond,
		OnReconnect: func() {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		},
	})
	// The publisher talks to Redis directly, so freezing only affects sub.
	pub := newBus(t, srv.URL(), redis.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	r := make(recv, 64)
	if _, err := sub.Subscribe(ctx, "silent", r.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, "silent", []byte("before")); err != nil {
		t.Fatal(err)
	}
	r.wait(t, "before")

	fwd.freeze()
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("a silent pub/sub connection was not replaced")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the silent connection was replaced")
		}
		if _, err := pub.Publish(ctx, "silent", []byte("after")); err != nil {
			t.Fatal(err)
		}
		timer := time.NewTimer(50 * time.Millisecond)
		select {
		case got := <-r:
			timer.Stop()
			if got == "after" {
				return
			}
		case <-timer.C:
		}
	}
}

// forwarder is a TCP proxy to a Redis server whose existing connections can
// be frozen: they stay open but carry nothing more in either direction.
type forwarder struct {
	addr string
	l    net.Listener

	mu     sync.Mutex
	frozen chan struct{} // closed by freeze; replaced for new connections
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newForwarder(t *testing.T, target string) *forwarder {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{addr: l.Addr().String(), l: l, frozen: make(chan struct{})}
	f.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			frozen := f.frozen
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			f.wg.Go(func() { pipe(up, c, frozen) })
			f.wg.Go(func() { pipe(c, up, frozen) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// freeze stops traffic on every connection open now.
func (f *forwarder) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.frozen)
	f.frozen = make(chan struct{})
}

// pipe copies src to dst until either fails or frozen is closed; a frozen
// pipe holds its connections open without reading or writing.
func pipe(dst, src net.Conn, frozen chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-frozen:
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			src.Close()
			return
		}
	}
}
