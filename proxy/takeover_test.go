package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// staleRegistry answers every Lookup with the first holder it saw: an
// instance whose view lags behind a takeover.
type staleRegistry struct {
	bus.Registry
	mu     sync.Mutex
	holder string
}

func (r *staleRegistry) Lookup(ctx context.Context, name string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holder != "" {
		return r.holder, nil
	}
	h, err := r.Registry.Lookup(ctx, name)
	r.holder = h
	return h, err
}

// startStaleTrio starts instances A and B on one memory bus, and C on the
// same bus whose registry answers with the first holder it saw.
func startStaleTrio(t *testing.T) (a, b, c *tunneltest.Env, stale *staleRegistry) {
	m := bus.NewMemory()
	cfg := proxy.Config{Bus: m, Registry: m, Timeout: 5 * time.Second}
	a = tunneltest.StartProxy(t, cfg)
	b = tunneltest.StartProxy(t, cfg)
	stale = &staleRegistry{Registry: m}
	cfg.Registry = stale
	c = tunneltest.StartProxy(t, cfg)
	return a, b, c, stale
}

// TestRequestForReplacedConnectionFollowsTheTakeover: a request published
// for a connection just after a newer one took over (the requester looked
// the hostname up a moment too early) is handed on to the newer connection
// instead of failing with 502, while the older one is still finishing its
// in-flight work, as in a client moving off a draining instance.
func TestRequestForReplacedConnectionFollowsTheTakeover(t *testing.T) {
	a, b, c, _ := startStaleTrio(t)

	key := tunneltest.NewKey(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	var slowStarted atomic.Bool
	handler := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/echo" {
				b, _ := io.ReadAll(r.Body)
				io.WriteString(w, name+" "+string(b))
				return
			}
			if r.URL.Path == "/slow" {
				slowStarted.Store(true)
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
			io.WriteString(w, name)
		})
	}
	first := a.Connect(&client.Client{Key: key, Handler: handler("first")})
	url := first.URL

	// C learns the first connection, and keeps naming it.
	if code, body := c.Get(t, url+"/"); code != http.StatusOK || body != "first" {
		t.Fatalf("via C before the takeover: %d %q", code, body)
	}
	// Something in flight keeps the first connection open after the
	// takeover.
	slow := make(chan int, 1)
	go func() {
		resp, err := a.HTTP.Get(url + "/slow")
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	tunneltest.Eventually(t, 5*time.Second, "slow request in flight", slowStarted.Load)

	b.Connect(&client.Client{Key: key, Handler: handler("second")})
	// Through B the newer connection answers at once.
	tunneltest.Eventually(t, 5*time.Second, "B routes to the second connection", func() bool {
		code, body := b.Get(t, url+"/")
		return code == http.StatusOK && body == "second"
	})
	// C still names the first connection: its requests must be handed
	// on, with their bodies.
	for i := range 5 {
		code, body := c.Get(t, url+"/")
		if code != http.StatusOK || body != "second" {
			t.Fatalf("via C with a stale lookup: %d %q, want 200 from the second connection", code, body)
		}
		payload := fmt.Sprintf("body %d", i)
		resp, err := c.HTTP.Post(url+"/echo", "text/plain", strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(got) != "second "+payload {
			t.Fatalf("POST via C with a stale lookup: %d %q, want 200 from the second connection", resp.StatusCode, got)
		}
	}
	releaseOnce.Do(func() { close(release) })
	if code := <-slow; code != http.StatusOK {
		t.Errorf("request in flight on the replaced connection: %d, want 200", code)
	}
}

// TestLostClaimIsClaimedAgain: when the registry goes back to naming an
// older connection for a hostname (a Redis failover promoted a replica
// that had not yet seen the newer claim), the newer connection claims the
// hostname again instead of taking itself for replaced, and keeps serving
// through every instance.
func TestLostClaimIsClaimedAgain(t *testing.T) {
	m := bus.NewMemory()
	cfg := proxy.Config{Bus: m, Registry: m, Timeout: 5 * time.Second}
	a := tunneltest.StartProxy(t, cfg)
	b := tunneltest.StartProxy(t, cfg)
	key := tunneltest.NewKey(t)
	serve := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	}
	first := a.Connect(&client.Client{Key: key, Handler: serve("first")})
	label := first.Host()[:52]
	older, err := m.Lookup(context.Background(), label)
	if err != nil {
		t.Fatal(err)
	}
	b.Connect(&client.Client{Key: key, Handler: serve("second")})
	tunneltest.Eventually(t, 5*time.Second, "A routes to the second connection", func() bool {
		code, body := a.Get(t, first.URL+"/")
		return code == http.StatusOK && body == "second"
	})
	newer, _ := m.Lookup(context.Background(), label)

	// The failover: the registry names the first connection again.
	if _, err := m.Claim(context.Background(), label, older, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.Proxy.Reannounce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, _ := m.Lookup(context.Background(), label); h != newer {
		t.Fatalf("registry names %q after the re-announce, want the newer connection %q", h, newer)
	}
	for _, via := range []*tunneltest.Env{a, b} {
		if code, body := via.Get(t, first.URL+"/"); code != http.StatusOK || body != "second" {
			t.Errorf("via %s: %d %q, want 200 from the second connection", via.Addr, code, body)
		}
	}
}

// TestPostForStoppedInstanceIsRetried: a request with a body, published
// for a connection whose instance has stopped since the requester cached
// its route, reached nobody and had nothing of its body read: it goes
// again, to where the hostname is held now, instead of failing with 502.
func TestPostForStoppedInstanceIsRetried(t *testing.T) {
	a, b, c, stale := startStaleTrio(t)

	key := tunneltest.NewKey(t)
	handler := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, name+" "+string(b))
		})
	}
	first := a.Connect(&client.Client{Key: key, Handler: handler("first")})
	url := first.URL
	if code, body := c.Get(t, url+"/"); code != http.StatusOK || body != "first " {
		t.Fatalf("via C before the takeover: %d %q", code, body)
	}
	b.Connect(&client.Client{Key: key, Handler: handler("second")})
	tunneltest.Eventually(t, 5*time.Second, "B routes to the second connection", func() bool {
		code, body := b.Get(t, url+"/")
		return code == http.StatusOK && body == "second "
	})
	// A stops: nobody listens for its connections any more. The stale
	// registry sends C to A first, then (it is stale once) to B.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Proxy.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	stale.mu.Lock()
	stale.holder = ""
	stale.mu.Unlock()
	resp, err := c.HTTP.Post(url+"/echo", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != "second payload" {
		t.Fatalf("POST via C after A stopped: %d %q, want 200 from the second connection", resp.StatusCode, got)
	}
}
