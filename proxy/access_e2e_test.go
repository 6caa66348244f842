package proxy_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// tokenFor makes a token with signer for key, from spec with the audience
// and binding filled in.
func tokenFor(t *testing.T, signer *jose.JSONWebKey, key any, spec proxy.TokenSpec) string {
	t.Helper()
	if spec.Audience == "" {
		spec.Audience = "localhost"
	}
	if spec.Key == "" && key != nil {
		label, _ := messages.Hostname(key.(crypto.Signer).Public())
		spec.Key = label
	}
	if spec.Expires.IsZero() {
		spec.Expires = time.Now().Add(time.Hour)
	}
	tok, err := proxy.IssueToken(signer, spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func refusedWith(t *testing.T, err error, reason string) {
	t.Helper()
	var refused *client.RefusedError
	if !errors.As(err, &refused) || !strings.Contains(refused.Reason, reason) {
		t.Errorf("got %v, want refused with %q", err, reason)
	}
}

// TestAccessTokens: with TokenKeys every client needs a token the keys
// verify, for this domain and this key, within its time; the shared
// token still works beside them; a rotated set refuses the old key's
// tokens; a token that runs out ends its connection.
func TestAccessTokens(t *testing.T) {
	grants := newGrantBook(t)
	cfg := proxy.Config{TokenKeys: grants.keys, RegistrationToken: "shared-secret"}
	env := tunneltest.StartProxy(t, cfg)
	signer := grants.signer
	other, err := proxy.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	t.Run("refusals", func(t *testing.T) {
		key, stranger := tunneltest.NewKey(t), tunneltest.NewKey(t)
		for _, tc := range []struct {
			name, token, reason string
		}{
			{"none", "", "an access token is required"},
			{"not a token", "nonsense", "malformed token"},
			{"expired beyond the leeway", tokenFor(t, signer, key, proxy.TokenSpec{IssuedAt: now.Add(-2 * time.Hour), Expires: now.Add(-proxy.TokenLeeway - 5*time.Second)}), "token expired"},
			{"not yet valid", tokenFor(t, signer, key, proxy.TokenSpec{NotBefore: now.Add(proxy.TokenLeeway + time.Minute)}), "token not yet valid"},
			{"another domain", tokenFor(t, signer, key, proxy.TokenSpec{Audience: "tunnel.example"}), "token for another domain"},
			{"another key", tokenFor(t, signer, stranger, proxy.TokenSpec{}), "token not valid for this key"},
			{"unknown signing key", tokenFor(t, other, key, proxy.TokenSpec{}), "token signed by an unknown key"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				refusedWith(t, connectErr(t, env, &client.Client{Key: key, Token: tc.token, Handler: named("x")}), tc.reason)
			})
		}
	})

	t.Run("accepted", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		for _, tc := range []struct{ name, token string }{
			{"valid", tokenFor(t, signer, key, proxy.TokenSpec{})},
			{"expired within the leeway", tokenFor(t, signer, key, proxy.TokenSpec{IssuedAt: now.Add(-time.Hour), Expires: now.Add(-proxy.TokenLeeway + 10*time.Second)})},
			{"any key", tokenFor(t, signer, nil, proxy.TokenSpec{Key: ""})},
			{"the shared token", "shared-secret"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := connectErr(t, env, &client.Client{Key: key, Token: tc.token, Handler: named("x")}); err != nil {
					t.Fatal(err)
				}
			})
		}
	})

	t.Run("a token that runs out ends its connection", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		// Verify accepts it for a second more (the leeway); then the
		// connection ends, and the reconnect is refused.
		exp := time.Now().Add(-proxy.TokenLeeway + time.Second)
		tok := tokenFor(t, signer, key, proxy.TokenSpec{IssuedAt: exp.Add(-time.Hour), Expires: exp})
		registered, stopped := runUntilStopped(t, env, &client.Client{Key: key, Token: tok, Handler: named("x")})
		<-registered
		select {
		case err := <-stopped:
			refusedWith(t, err, "token expired")
			if late := time.Since(exp.Add(proxy.TokenLeeway)); late > 2*time.Second {
				t.Errorf("cut %v after the token ran out", late)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still connected 10s after the token ran out")
		}
	})

	t.Run("rotation", func(t *testing.T) {
		signerB, err := proxy.NewSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		key := tunneltest.NewKey(t)
		tokA := tokenFor(t, signer, key, proxy.TokenSpec{})
		tokB := tokenFor(t, signerB, key, proxy.TokenSpec{})
		set := func(keys ...*jose.JSONWebKey) {
			var s jose.JSONWebKeySet
			for _, k := range keys {
				s.Keys = append(s.Keys, k.Public())
			}
			if err := grants.keys.Set(&s); err != nil {
				t.Fatal(err)
			}
		}
		set(signer, signerB)
		t.Cleanup(func() { set(signer) })
		for _, tok := range []string{tokA, tokB} {
			if err := connectErr(t, env, &client.Client{Key: key, Token: tok, Handler: named("x")}); err != nil {
				t.Fatalf("with both keys trusted: %v", err)
			}
		}
		set(signerB)
		refusedWith(t, connectErr(t, env, &client.Client{Key: key, Token: tokA, Handler: named("x")}), "token signed by an unknown key")
		if err := connectErr(t, env, &client.Client{Key: key, Token: tokB, Handler: named("x")}); err != nil {
			t.Fatalf("the new key's token after the old key went: %v", err)
		}
	})
}

// TestTokenRevokedOnAnotherInstance: a token revoked through one instance
// cuts its connection on another within a second, and a reconnect is
// refused; the revocation lapses when the token would have expired.
func TestTokenRevokedOnAnotherInstance(t *testing.T) {
	grants := newGrantBook(t)
	m := bus.NewMemory()
	cfg := proxy.Config{Bus: m, Registry: m, TokenKeys: grants.keys}
	a := tunneltest.StartProxy(t, cfg)
	b := tunneltest.StartProxy(t, cfg)
	key := tunneltest.NewKey(t)
	exp := time.Now().Add(time.Hour)
	tok := tokenFor(t, grants.signer, key, proxy.TokenSpec{Expires: exp})
	grant, err := grants.keys.Verify(tok, "localhost", mustLabel(t, key), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	registered, stopped := runUntilStopped(t, b, &client.Client{Key: key, Token: tok, Handler: named("x")})
	<-registered
	start := time.Now()
	if err := a.Proxy.Revoke(context.Background(), proxy.Revocation{Kind: proxy.RevokeToken, Value: grant.ID}); err != nil {
		t.Fatal(err)
	}
	tunneltest.Eventually(t, time.Second, "the tunnel cut within a second", func() bool {
		code, _ := a.Get(t, keyURL(a, mustLabel(t, key))+"/")
		return code == http.StatusBadGateway
	})
	t.Logf("cut %v after Revoke", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-stopped:
		refusedWith(t, err, "token revoked by the operator")
	case <-time.After(10 * time.Second):
		t.Fatal("client still running")
	}
	// The record lapses with the token.
	ttlLeft := func() time.Duration {
		exp2, ok := proxy.TokenIDExpiry(grant.ID)
		if !ok {
			t.Fatalf("token ID %q does not carry its expiry", grant.ID)
		}
		return time.Until(exp2)
	}()
	if ttlLeft < 59*time.Minute || ttlLeft > 62*time.Minute {
		t.Errorf("revocation lapses in %v, want about the token's hour", ttlLeft)
	}
}

func mustLabel(t *testing.T, key crypto.Signer) string {
	t.Helper()
	label, err := messages.Hostname(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return label
}

// TestTokenLimits: a token's rate, body cap and stream cap apply to its
// tunnel, below the proxy's own.
func TestTokenLimits(t *testing.T) {
	grants := newGrantBook(t)
	env := tunneltest.StartProxy(t, proxy.Config{TokenKeys: grants.keys})
	signer := grants.signer
	var mu sync.Mutex
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	started := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Write(bytes.Repeat([]byte("x"), 5000))
		case "/hold":
			mu.Lock()
			started++
			mu.Unlock()
			<-release
		default:
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
		}
	})

	t.Run("rate", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		tun := env.Connect(&client.Client{Key: key, Token: tokenFor(t, signer, key, proxy.TokenSpec{Rate: 1, Burst: 2}), Handler: h})
		codes := map[int]int{}
		for range 5 {
			code, _ := env.Get(t, tun.URL+"/")
			codes[code]++
		}
		if codes[http.StatusOK] != 2 || codes[http.StatusTooManyRequests] != 3 {
			t.Errorf("5 requests at once with rate 1, burst 2: %v", codes)
		}
	})

	t.Run("body", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		tun := env.Connect(&client.Client{Key: key, Token: tokenFor(t, signer, key, proxy.TokenSpec{MaxBody: 4000}), Handler: h})
		for _, tc := range []struct {
			size int
			want int
		}{{4000, http.StatusOK}, {4001, http.StatusRequestEntityTooLarge}, {20000, http.StatusRequestEntityTooLarge}} {
			resp, err := env.HTTP.Post(tun.URL+"/", "application/octet-stream", bytes.NewReader(make([]byte, tc.size)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("POST of %d bytes under a 4000-byte token cap: %d, want %d", tc.size, resp.StatusCode, tc.want)
			}
		}
		// A response over the cap never arrives whole.
		resp, err := env.HTTP.Get(tun.URL + "/big")
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK && len(b) == 5000 {
				t.Errorf("a 5000-byte response passed a 4000-byte cap")
			}
		}
	})

	t.Run("streams", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		tun := env.Connect(&client.Client{Key: key, Token: tokenFor(t, signer, key, proxy.TokenSpec{Streams: 2}), Handler: h})
		done := make(chan int, 2)
		for range 2 {
			go func() {
				code, _ := env.Get(t, tun.URL+"/hold")
				done <- code
			}()
		}
		tunneltest.Eventually(t, 5*time.Second, "two requests held", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return started == 2
		})
		if code, _ := env.Get(t, tun.URL+"/"); code != http.StatusServiceUnavailable {
			t.Errorf("a third stream over a cap of 2: %d, want 503", code)
		}
		releaseOnce.Do(func() { close(release) })
		for range 2 {
			if code := <-done; code != http.StatusOK {
				t.Errorf("held request: %d", code)
			}
		}
	})
}
