package scaleout_test

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// redisProxy starts an in-process proxy on its own Redis bus, wired as
// cmd/proxy wires it: the bus's reconnect hook re-announces the proxy's
// hostnames.
func redisProxy(t *testing.T, rs *testenv.RedisServer, cfg proxy.Config) *tunneltest.Env {
	t.Helper()
	var current atomic.Pointer[proxy.Proxy]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redis.New(ctx, rs.URL(), redis.Options{
		Logger: tunneltest.Logger(t),
		OnReconnect: func() {
			if p := current.Load(); p != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				p.Reannounce(ctx)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cfg.Bus, cfg.Registry = b, b
	env := tunneltest.StartProxy(t, cfg)
	current.Store(env.Proxy)
	return env
}

// TestRateLimitAcrossInstances: the rate limit belongs to the client
// connection, so requests arriving through other instances count against
// the same budget.
func TestRateLimitAcrossInstances(t *testing.T) {
	rs := testenv.Redis(t)
	// A burst of 4 and a refill far slower than the test.
	cfg := proxy.Config{Rate: 0.01, Burst: 4}
	envs := []*tunneltest.Env{redisProxy(t, rs, cfg), redisProxy(t, rs, cfg), redisProxy(t, rs, cfg)}
	tun := envs[0].Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))

	// Round-robin over the instances, as a load balancer would.
	ok, limited := map[int]int{}, map[int]int{}
	for i := range 12 {
		n := i % len(envs)
		resp, err := envs[n].HTTP.Get(tun.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			ok[n]++
		case http.StatusTooManyRequests:
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("429 via instance %d without Retry-After", n)
			}
			limited[n]++
		default:
			t.Fatalf("request %d via instance %d: %d", i, n, resp.StatusCode)
		}
	}
	total := ok[0] + ok[1] + ok[2]
	if total != 4 {
		t.Errorf("%d requests passed (by instance %v), want exactly the burst of 4 across all instances", total, ok)
	}
	if ok[1]+ok[2] == 0 || limited[1]+limited[2] == 0 {
		t.Errorf("passed by instance %v, limited by instance %v: want both outcomes through instances that do not hold the client", ok, limited)
	}
}

// TestReannounceAfterRedisRestart: with a ping interval far longer than
// the test (so the holder's periodic refresh cannot be what restores its
// registry entry), a restarted, empty Redis gets the hostname back from
// the reconnect hook, and another instance serves the tunnel again within
// 10 s.
func TestReannounceAfterRedisRestart(t *testing.T) {
	rs := testenv.Redis(t)
	cfg := proxy.Config{Ping: 10 * time.Minute, Timeout: 5 * time.Second}
	a, b := redisProxy(t, rs, cfg), redisProxy(t, rs, cfg)
	tun := a.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	if code, _ := b.Get(t, tun.URL+"/"); code != http.StatusOK {
		t.Fatalf("via the other instance before the restart: %d", code)
	}
	rs.Stop()
	rs.Start()
	back := time.Now()
	tunneltest.Eventually(t, 10*time.Second, "the other instance serves the tunnel", func() bool {
		resp, err := b.HTTP.Get(tun.URL + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	t.Logf("serving again %v after Redis came back", time.Since(back).Round(time.Millisecond))
}
