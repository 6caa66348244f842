package proxy_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func labelOf(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	l, err := messages.Hostname(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAccessLists(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	allowed, other := tunneltest.NewKey(t), tunneltest.NewKey(t)

	t.Run("deny list refuses registration", func(t *testing.T) {
		acc, err := proxy.NewAccess(nil, []string{labelOf(t, other) + ".localhost"})
		if err != nil {
			t.Fatal(err)
		}
		env := tunneltest.StartProxy(t, proxy.Config{Access: acc})
		env.Connect(&client.Client{Key: allowed, Handler: ok})
		err = runUntilDone(t, env, other)
		var refused *client.RefusedError
		if !errors.As(err, &refused) || !strings.Contains(refused.Reason, "not allowed") {
			t.Fatalf("denied key: got %v, want a refusal saying it is not allowed", err)
		}
	})

	t.Run("allow list admits only its keys", func(t *testing.T) {
		acc, err := proxy.NewAccess([]string{strings.ToUpper(labelOf(t, allowed))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		env := tunneltest.StartProxy(t, proxy.Config{Access: acc})
		tun := env.Connect(&client.Client{Key: allowed, Handler: ok})
		if status, body := env.Get(t, tun.URL+"/"); status != 200 || body != "ok" {
			t.Fatalf("allowed key: %d %q", status, body)
		}
		var refused *client.RefusedError
		if err := runUntilDone(t, env, other); !errors.As(err, &refused) {
			t.Fatalf("key not on the allow list: got %v, want a refusal", err)
		}
	})

	t.Run("denying a connected key cuts it off", func(t *testing.T) {
		env := tunneltest.StartProxy(t, proxy.Config{})
		registered := make(chan string, 4)
		c := &client.Client{Proxy: env.ProxyURL(), Key: other, Handler: ok, Logger: tunneltest.Logger(t),
			OnRegister: func(u string) { registered <- u }}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		var url string
		select {
		case url = <-registered:
		case err := <-done:
			t.Fatalf("client stopped before registering: %v", err)
		}
		if status, _ := env.Get(t, url+"/"); status != 200 {
			t.Fatalf("before the deny: %d", status)
		}
		acc, err := proxy.NewAccess(nil, []string{labelOf(t, other)})
		if err != nil {
			t.Fatal(err)
		}
		env.Proxy.SetAccess(acc)
		// The connection is closed; the client reconnects, is refused, and
		// stops for good.
		select {
		case err := <-done:
			var refused *client.RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("Run returned %v, want a refusal", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("denied client still running after 10s")
		}
		if status, _ := env.Get(t, url+"/"); status != http.StatusBadGateway {
			t.Fatalf("denied tunnel answered %d, want 502", status)
		}
	})

	t.Run("bad entries", func(t *testing.T) {
		for _, e := range []string{"", "nope", strings.Repeat("a", 51), strings.Repeat("1", 52)} {
			if _, err := proxy.NewAccess([]string{e}, nil); err == nil {
				t.Errorf("NewAccess(%q) accepted", e)
			}
		}
		list, err := proxy.ReadAccessList(strings.NewReader("# keys\n\n" + labelOf(t, allowed) + "  # laptop\n"))
		if err != nil || len(list) != 1 {
			t.Fatalf("ReadAccessList: %v %v", list, err)
		}
		if _, err := proxy.ReadAccessList(strings.NewReader("\nbad entry\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Fatalf("bad line: %v, want an error naming line 2", err)
		}
	})
}

// runUntilDone runs a client with key and returns what Run returns, which
// for a refused key is a RefusedError.
func runUntilDone(t *testing.T, env *tunneltest.Env, key ed25519.PrivateKey) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &client.Client{Proxy: env.ProxyURL(), Key: key, Handler: http.NotFoundHandler(), Logger: tunneltest.Logger(t)}
	return c.Run(ctx)
}
