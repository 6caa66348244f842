package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// admin serves a proxy's admin handler for a test.
type admin struct {
	t   *testing.T
	srv *httptest.Server
}

func startAdmin(t *testing.T, p *proxy.Proxy, g prometheus.Gatherer) *admin {
	srv := httptest.NewServer(p.AdminHandler(g))
	t.Cleanup(srv.Close)
	return &admin{t: t, srv: srv}
}

func (a *admin) get(path string) (int, string) {
	a.t.Helper()
	resp, err := a.srv.Client().Get(a.srv.URL + path)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of the sample named exactly name (labels
// included, as exposed), or -1.
func (a *admin) metric(name string) float64 {
	a.t.Helper()
	code, body := a.get("/metrics")
	if code != http.StatusOK {
		a.t.Fatalf("/metrics: %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				a.t.Fatalf("%s: %v", sc.Text(), err)
			}
			return f
		}
	}
	return -1
}

func TestAdminMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	env := tunneltest.StartProxy(t, proxy.Config{Metrics: reg})
	a := startAdmin(t, env.Proxy, reg)

	for _, name := range []string{"keyhole_connected_clients", "keyhole_websocket_streams",
		"keyhole_bus_publish_errors_total", "keyhole_bus_publish_no_receivers_total",
		"keyhole_request_duration_seconds_count"} {
		if v := a.metric(name); v != 0 {
			t.Errorf("%s = %v at start, want 0", name, v)
		}
	}
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.Read(r.Context()) // until the visitor closes
			return
		}
		if r.URL.Path == "/teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	if v := a.metric("keyhole_connected_clients"); v != 1 {
		t.Errorf("connected clients %v, want 1", v)
	}
	for range 3 {
		env.Get(t, tun.URL+"/")
	}
	env.Get(t, tun.URL+"/teapot")
	if v := a.metric(`keyhole_requests_total{code="200"}`); v != 3 {
		t.Errorf(`requests{code="200"} = %v, want 3`, v)
	}
	if v := a.metric(`keyhole_requests_total{code="418"}`); v != 1 {
		t.Errorf(`requests{code="418"} = %v, want 1`, v)
	}
	if v := a.metric("keyhole_request_duration_seconds_count"); v != 4 {
		t.Errorf("latency observations %v, want 4", v)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(tun.URL, "http")+"/ws", &websocket.DialOptions{HTTPClient: env.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	if v := a.metric("keyhole_websocket_streams"); v != 1 {
		t.Errorf("streams %v while one is open, want 1", v)
	}
	if v := a.metric(`keyhole_requests_total{code="101"}`); v != 1 {
		t.Errorf(`requests{code="101"} = %v, want 1`, v)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	tunneltest.Eventually(t, 5*time.Second, "stream gauge back to 0", func() bool {
		return a.metric("keyhole_websocket_streams") == 0
	})

	tun.Stop()
	tunneltest.Eventually(t, 5*time.Second, "connected clients back to 0", func() bool {
		return a.metric("keyhole_connected_clients") == 0
	})
	// Offline now: the proxy answers 502 itself.
	env.Get(t, tun.URL+"/")
	if v := a.metric(`keyhole_requests_total{code="502"}`); v != 1 {
		t.Errorf(`requests{code="502"} = %v, want 1`, v)
	}
}

// TestMetricsRegistrationConflict: a registry that already holds the
// collectors (a second proxy on it) is refused with an error, not a panic.
func TestMetricsRegistrationConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	tunneltest.StartProxy(t, proxy.Config{Metrics: reg})
	if _, err := proxy.New(context.Background(), proxy.Config{Metrics: reg}); err == nil {
		t.Fatal("New with an already used registry succeeded")
	}
}

// pingBus is a memory bus whose server can be made unreachable.
type pingBus struct {
	*bus.Memory
	err atomic.Pointer[error]
}

func (b *pingBus) Ping(context.Context) error {
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

func TestAdminReadiness(t *testing.T) {
	m := bus.NewMemory()
	b := &pingBus{Memory: m}
	p, err := proxy.New(context.Background(), proxy.Config{Bus: b, Registry: m})
	if err != nil {
		t.Fatal(err)
	}
	a := startAdmin(t, p, nil)

	if code, body := a.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d %q", code, body)
	}
	if code, body := a.get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d %q with the bus reachable, want 200", code, body)
	}
	if code, _ := a.get("/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics %d without a gatherer, want 404", code)
	}

	refused := errors.New("connection refused")
	b.err.Store(&refused)
	if code, body := a.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz %d %q with the bus unreachable, want 503 naming the cause", code, body)
	}
	if code, _ := a.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d with the bus unreachable, want 200", code)
	}
	b.err.Store(nil)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(p.Ready(ctx), proxy.ErrDraining) {
		t.Errorf("Ready after Shutdown: %v, want ErrDraining", p.Ready(ctx))
	}
	if code, body := a.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz %d %q while draining, want 503 draining", code, body)
	}
}
