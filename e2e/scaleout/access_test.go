package scaleout_test

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// TestAccessOnRedis: on a real Redis, a friendly name granted by a token
// is served by every instance; revoking it through one instance cuts the
// connection held by another within a second, the revocation outlives a
// restart of the proxies' view (a new instance refuses too), and a
// second key with a newer grant for a name takes it over everywhere.
func TestAccessOnRedis(t *testing.T) {
	rs := testenv.Redis(t)
	signer, err := proxy.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := proxy.NewTokenKeys(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{signer.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := proxy.Config{TokenKeys: keys, Timeout: 5 * time.Second}
	a := redisProxy(t, rs, cfg)
	b := redisProxy(t, rs, cfg)
	token := func(key crypto.Signer, issued time.Time, names ...string) string {
		label, _ := messages.Hostname(key.Public())
		tok, err := proxy.IssueToken(signer, proxy.TokenSpec{Audience: "localhost", Key: label, Names: names, IssuedAt: issued, Expires: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	nameURL := func(env *tunneltest.Env, name string) string {
		_, port, _ := strings.Cut(env.Addr, ":")
		return "http://" + name + ".localhost:" + port + "/"
	}
	serve := func(body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) })
	}

	// A name, served through both instances; a newer grant for it takes it.
	old, newer := newKey(), newKey()
	t0 := time.Now().Add(-time.Hour)
	b.Connect(&client.Client{Key: old, Token: token(old, t0, "shop"), Names: []string{"shop"}, Handler: serve("old")})
	for _, via := range []*tunneltest.Env{a, b} {
		if code, body := via.Get(t, nameURL(via, "shop")); code != http.StatusOK || body != "old" {
			t.Fatalf("via %s: %d %q", via.Addr, code, body)
		}
	}
	a.Connect(&client.Client{Key: newer, Token: token(newer, t0.Add(time.Minute), "shop"), Names: []string{"shop"}, Handler: serve("new")})
	for _, via := range []*tunneltest.Env{a, b} {
		tunneltest.Eventually(t, 5*time.Second, "the newer grant serves via "+via.Addr, func() bool {
			code, body := via.Get(t, nameURL(via, "shop"))
			return code == http.StatusOK && body == "new"
		})
	}

	// Revoked through B, held on A: cut within a second.
	start := time.Now()
	if err := b.Proxy.Revoke(context.Background(), proxy.Revocation{Kind: proxy.RevokeName, Value: "shop"}); err != nil {
		t.Fatal(err)
	}
	tunneltest.Eventually(t, time.Second, "the revoked name cut within a second", func() bool {
		code, _ := b.Get(t, nameURL(b, "shop"))
		return code == http.StatusNotFound
	})
	t.Logf("revoked name unreachable %v after Revoke", time.Since(start).Round(time.Millisecond))

	// A new instance, which never heard the announcement, refuses too.
	c := redisProxy(t, rs, cfg)
	key := newKey()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = (&client.Client{Proxy: c.ProxyURL(), Key: key, Token: token(key, time.Now(), "shop"), Names: []string{"shop"}, Handler: serve("x"), Logger: tunneltest.Logger(t)}).Run(ctx)
	var refused *client.RefusedError
	if !errors.As(err, &refused) || !strings.Contains(refused.Reason, "name shop revoked") {
		t.Errorf("registering a revoked name on a new instance: %v", err)
	}
}
