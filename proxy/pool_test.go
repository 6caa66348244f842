package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// TestPool: clients of one key that all say Pool share its hostname, and
// requests are spread over them, from every instance; without Pool the
// rule stays that the newest connection wins; mixing is refused.
func TestPool(t *testing.T) {
	grants := newGrantBook(t)
	m := bus.NewMemory()
	cfg := proxy.Config{Bus: m, Registry: m, TokenKeys: grants.keys, RegistrationToken: "shared"}
	a := tunneltest.StartProxy(t, cfg)
	b := tunneltest.StartProxy(t, cfg)

	// spread sends n requests through env to url and counts the answers
	// by body.
	spread := func(t *testing.T, env *tunneltest.Env, url string, n int) map[string]int {
		t.Helper()
		var mu sync.Mutex
		counts := map[string]int{}
		var wg sync.WaitGroup
		work := make(chan struct{})
		for range 8 {
			wg.Go(func() {
				for range work {
					code, body := env.Get(t, url)
					if code != http.StatusOK {
						body = fmt.Sprint(code)
					}
					mu.Lock()
					counts[body]++
					mu.Unlock()
				}
			})
		}
		for range n {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
		return counts
	}

	t.Run("a pool of one", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		tun := a.Connect(&client.Client{Key: key, Token: "shared", Pool: true, Handler: named("one")})
		for _, via := range []*tunneltest.Env{a, b} {
			if code, body := via.Get(t, tun.URL+"/"); code != http.StatusOK || body != "one" {
				t.Errorf("via %s: %d %q", via.Addr, code, body)
			}
		}
	})

	t.Run("two members share the load, from every instance", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		first := a.Connect(&client.Client{Key: key, Token: "shared", Pool: true, Handler: named("first")})
		b.Connect(&client.Client{Key: key, Token: "shared", Pool: true, Handler: named("second")})
		for _, via := range []*tunneltest.Env{a, b} {
			const n = 1000
			counts := spread(t, via, first.URL+"/", n)
			t.Logf("via %s: %v", via.Addr, counts)
			for _, member := range []string{"first", "second"} {
				if share := float64(counts[member]) / n; share < 0.40 || share > 0.60 {
					t.Errorf("via %s: %s got %.0f%% of %d requests, want 40-60%%: %v", via.Addr, member, 100*share, n, counts)
				}
			}
		}
	})

	t.Run("a member that leaves gets nothing more", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		stay := a.Connect(&client.Client{Key: key, Token: "shared", Pool: true, Handler: named("stay")})
		leave := a.Connect(&client.Client{Key: key, Token: "shared", Pool: true, Handler: named("leave")})
		leave.Stop()
		// Once the proxy has seen it go (the client's close reaches it a
		// moment after Stop returns), no request goes to it.
		label := mustLabel(t, key)
		tunneltest.Eventually(t, 5*time.Second, "the member left the pool", func() bool {
			members, err := m.Members(context.Background(), "pool:"+label)
			return err == nil && len(members) == 1
		})
		counts := spread(t, a, stay.URL+"/", 200)
		if counts["stay"] != 200 {
			t.Errorf("after a member left: %v, want every request answered by the other", counts)
		}
	})

	t.Run("pooled and unpooled do not mix", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		a.Connect(&client.Client{Key: key, Token: "shared", Pool: true, Handler: named("pooled")})
		refusedWith(t, connectErr(t, b, &client.Client{Key: key, Token: "shared", Handler: named("alone")}),
			"served by a pool (clients started with --pool); start this client with --pool too")

		other := tunneltest.NewKey(t)
		a.Connect(&client.Client{Key: other, Token: "shared", Handler: named("alone")})
		refusedWith(t, connectErr(t, b, &client.Client{Key: other, Token: "shared", Pool: true, Handler: named("pooled")}),
			"served by a client without --pool")
	})

	t.Run("a pool's friendly name reaches every member", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		grants.set(key, time.Now().Add(-time.Minute), "replicas")
		tok := grants.token(key)
		a.Connect(&client.Client{Key: key, Token: tok, Pool: true, Names: []string{"replicas"}, Handler: named("r1")})
		b.Connect(&client.Client{Key: key, Token: tok, Pool: true, Names: []string{"replicas"}, Handler: named("r2")})
		counts := spread(t, b, nameURL(b, "replicas")+"/", 200)
		if counts["r1"] == 0 || counts["r2"] == 0 || counts["r1"]+counts["r2"] != 200 {
			t.Errorf("through the name: %v, want both members and nothing else", counts)
		}
	})
}
