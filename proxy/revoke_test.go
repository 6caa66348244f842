package proxy_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// runUntilStopped runs c on env in the background and returns Run's
// result once it stops.
func runUntilStopped(t *testing.T, env *tunneltest.Env, c *client.Client) (registered <-chan string, stopped <-chan error) {
	t.Helper()
	c.Proxy = env.ProxyURL()
	if c.Logger == nil {
		c.Logger = tunneltest.Logger(t)
	}
	urls := make(chan string, 16)
	c.OnRegister = func(u string) {
		select {
		case urls <- u:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(cancel)
	return urls, done
}

func TestRevoke(t *testing.T) {
	grants := newGrantBook(t)
	m := bus.NewMemory()
	cfg := proxy.Config{Bus: m, Registry: m, TokenKeys: grants.keys}
	a := tunneltest.StartProxy(t, cfg)
	b := tunneltest.StartProxy(t, cfg)
	t0 := time.Now().Add(-time.Hour)

	// revokeAndWait revokes on A a connection held on B, and checks that B
	// cut it within a second and that its client, reconnecting, is refused.
	revokeAndWait := func(t *testing.T, c *client.Client, r proxy.Revocation, reason string) {
		t.Helper()
		registered, stopped := runUntilStopped(t, b, c)
		select {
		case <-registered:
		case err := <-stopped:
			t.Fatalf("did not register: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("did not register")
		}
		start := time.Now()
		if err := a.Proxy.Revoke(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-stopped:
			var refused *client.RefusedError
			if !errors.As(err, &refused) || !strings.Contains(refused.Reason, reason) {
				t.Fatalf("client stopped with %v, want refused: %q", err, reason)
			}
			t.Logf("%s: client cut and refused after %v", r.Kind, time.Since(start).Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Fatal("client still running 10s after the revocation")
		}
	}

	t.Run("key, on another instance", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		label := grants.set(key, t0)
		var cut time.Time
		c := &client.Client{Key: key, Token: grants.token(key), Handler: named("x")}
		registered, stopped := runUntilStopped(t, b, c)
		<-registered
		start := time.Now()
		if err := a.Proxy.Revoke(context.Background(), proxy.Revocation{Kind: proxy.RevokeKey, Value: label + ".localhost"}); err != nil {
			t.Fatal(err)
		}
		tunneltest.Eventually(t, time.Second, "the tunnel cut within a second", func() bool {
			code, _ := a.Get(t, keyURL(a, label)+"/")
			if code == http.StatusBadGateway {
				cut = time.Now()
				return true
			}
			return false
		})
		t.Logf("cut %v after Revoke", cut.Sub(start).Round(time.Millisecond))
		select {
		case err := <-stopped:
			var refused *client.RefusedError
			if !errors.As(err, &refused) || refused.Reason != "key revoked by the operator" {
				t.Fatalf("client: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("client still running")
		}
		// Another key is untouched.
		other := tunneltest.NewKey(t)
		grants.set(other, t0)
		b.Connect(&client.Client{Key: other, Token: grants.token(other), Handler: named("other")})
	})

	t.Run("name", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		grants.set(key, t0, "gone", "kept")
		revokeAndWait(t, &client.Client{Key: key, Token: grants.token(key), Names: []string{"gone", "kept"}, Handler: named("x")},
			proxy.Revocation{Kind: proxy.RevokeName, Value: "gone"}, "name gone revoked by the operator")
		// The key may register without the revoked name.
		tun := a.Connect(&client.Client{Key: key, Token: grants.token(key), Names: []string{"kept"}, Handler: named("kept")})
		if code, body := a.Get(t, tun.URL+"/"); code != http.StatusOK || body != "kept" {
			t.Errorf("the key without the revoked name: %d %q", code, body)
		}
	})

	t.Run("lapses", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		label := grants.set(key, t0)
		until := time.Now().Add(1500 * time.Millisecond)
		revokeAndWait(t, &client.Client{Key: key, Token: grants.token(key), Handler: named("x")},
			proxy.Revocation{Kind: proxy.RevokeKey, Value: label, Until: until}, "key revoked")
		tunneltest.Eventually(t, 5*time.Second, "the revocation lapsed", func() bool {
			_, err := m.Lookup(context.Background(), "revoked:key:"+label)
			return errors.Is(err, bus.ErrNotFound)
		})
		b.Connect(&client.Client{Key: key, Token: grants.token(key), Handler: named("back")})
	})

	t.Run("invalid", func(t *testing.T) {
		for _, r := range []proxy.Revocation{
			{Kind: "user", Value: "x"},
			{Kind: proxy.RevokeKey, Value: "notalabel"},
			{Kind: proxy.RevokeName, Value: "Bad_Name"},
			{Kind: proxy.RevokeToken, Value: ""},
			{Kind: proxy.RevokeToken, Value: "id", Until: time.Now().Add(-time.Second)},
		} {
			if err := a.Proxy.Revoke(context.Background(), r); err == nil {
				t.Errorf("Revoke(%+v) = nil, want an error", r)
			}
		}
	})
}
