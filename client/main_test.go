package client_test

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// TestMain fails the package if any test or example leaves a goroutine
// behind: Run must stop everything it started before it returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logStore keeps every record logged through its handlers, so tests can
// assert on the client's per-request lines.
type logStore struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func (s *logStore) logger() *slog.Logger { return slog.New(logHandler{s: s}) }

// find returns the records with message msg whose attributes include want.
func (s *logStore) find(msg string, want map[string]string) []logRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logRecord
	for _, r := range s.recs {
		if r.Msg != msg {
			continue
		}
		ok := true
		for k, v := range want {
			if r.Attrs[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

type logHandler struct {
	s     *logStore
	attrs []slog.Attr
}

func (h logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Level: r.Level, Msg: r.Message, Attrs: make(map[string]string)}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.s.mu.Lock()
	h.s.recs = append(h.s.recs, rec)
	h.s.mu.Unlock()
	return nil
}

func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{s: h.s, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h logHandler) WithGroup(string) slog.Handler { return h }

// testProxy is a proxy served on a listener the test chose, so that a test
// can stop it and start another on the same address.
type testProxy struct {
	p    *proxy.Proxy
	srv  *httptest.Server
	once sync.Once
}

func startProxyOn(t *testing.T, ln net.Listener, cfg proxy.Config) *testProxy {
	t.Helper()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cfg.PublicURL = "http://localhost:" + port
	if cfg.Logger == nil {
		cfg.Logger = tunneltest.Logger(t)
	}
	p, err := proxy.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	tp := &testProxy{p: p, srv: srv}
	t.Cleanup(tp.stop)
	return tp
}

// stop drains the proxy (its clients are told to go elsewhere) and closes
// its listener.
func (tp *testProxy) stop() {
	tp.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tp.p.Shutdown(ctx)
		tp.srv.Close()
	})
}

// listen listens on addr, retrying briefly: a port just closed by this
// process can take a moment to become free again.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	tunneltest.Eventually(t, 5*time.Second, "listen on "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	return ln
}

// running is a Client.Run in progress, stopped at cleanup.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func runClient(t *testing.T, c *client.Client) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancel")
		}
	})
	return r
}

// wait returns Run's result, failing the test if it takes longer than d.
func (r *running) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for cleanup
		return err
	case <-time.After(d):
		t.Fatalf("Run still running after %v", d)
		return nil
	}
}

// receive returns the next value from ch, failing the test after d.
func receive[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("no %s within %v", what, d)
		var zero T
		return zero
	}
}
