package proxy_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	jose "github.com/go-jose/go-jose/v4"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// grantBook issues access tokens from one signing key, one per client
// key, and remembers them.
type grantBook struct {
	t      *testing.T
	signer *jose.JSONWebKey
	keys   *proxy.TokenKeys
	mu     sync.Mutex
	tokens map[string]string // by label
}

func newGrantBook(t *testing.T) *grantBook {
	signer, err := proxy.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := signer.Public()
	keys, err := proxy.NewTokenKeys(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		t.Fatal(err)
	}
	return &grantBook{t: t, signer: signer, keys: keys, tokens: map[string]string{}}
}

// set issues key a token granting names, issued at issued, bound to key.
func (g *grantBook) set(key ed25519.PrivateKey, issued time.Time, names ...string) string {
	label, _ := messages.Hostname(key.Public())
	tok, err := proxy.IssueToken(g.signer, proxy.TokenSpec{
		Audience: "localhost", Key: label, Names: names, IssuedAt: issued, Expires: time.Now().Add(time.Hour),
	})
	if err != nil {
		g.t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tokens[label] = tok
	return label
}

// token returns key's token ("" if none was issued).
func (g *grantBook) token(key ed25519.PrivateKey) string {
	label, _ := messages.Hostname(key.Public())
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tokens[label]
}

func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
}

// nameURL is the public URL of name on env's proxy.
func nameURL(env *tunneltest.Env, name string) string {
	_, port, _ := strings.Cut(env.Addr, ":")
	return "http://" + name + ".localhost:" + port
}

func keyURL(env *tunneltest.Env, label string) string { return nameURL(env, label) }

// connectErr runs a client until it registers or stops, and returns Run's
// error if it stopped first.
func connectErr(t *testing.T, env *tunneltest.Env, c *client.Client) error {
	t.Helper()
	c.Proxy = env.ProxyURL()
	c.Logger = tunneltest.Logger(t)
	registered := make(chan struct{}, 1)
	c.OnRegister = func(string) {
		select {
		case registered <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	done := make(chan struct{})
	go func() { err = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-registered:
		return nil
	case <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("client neither registered nor stopped")
		return nil
	}
}

func TestNames(t *testing.T) {
	grants := newGrantBook(t)
	m := bus.NewMemory()
	cfg := proxy.Config{Bus: m, Registry: m, ReservedNames: []string{"billing"}, TokenKeys: grants.keys}
	a := tunneltest.StartProxy(t, cfg)
	b := tunneltest.StartProxy(t, cfg)
	t0 := time.Now().Add(-time.Hour)

	t.Run("granted name is served as well as the key's hostname", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		label := grants.set(key, t0, "shop", "docs")
		tun := a.Connect(&client.Client{Key: key, Token: grants.token(key), Names: []string{"docs"}, Handler: named("docs")})
		if want := nameURL(a, "docs"); tun.URL != want {
			t.Errorf("registered URL %q, want the name's, %q", tun.URL, want)
		}
		for _, via := range []*tunneltest.Env{a, b} {
			for _, u := range []string{nameURL(via, "docs"), keyURL(via, label)} {
				if code, body := via.Get(t, u+"/"); code != http.StatusOK || body != "docs" {
					t.Errorf("GET %s via %s: %d %q", u, via.Addr, code, body)
				}
			}
		}
		// Granted but not asked for: not served.
		if code, _ := a.Get(t, nameURL(a, "shop")+"/"); code != http.StatusNotFound {
			t.Errorf("a name granted but not asked for: %d, want 404", code)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		grants.set(key, t0, "mine", "billing", "www")
		stranger := tunneltest.NewKey(t)
		grants.set(stranger, t0)
		for _, tc := range []struct {
			key    ed25519.PrivateKey
			names  []string
			reason string
		}{
			{key, []string{"theirs"}, `name "theirs" is not granted by the token`},
			{key, []string{"mine", "theirs"}, `name "theirs" is not granted by the token`},
			{stranger, []string{"mine"}, `name "mine" is not granted by the token`},
			{key, []string{"billing"}, `name "billing" is reserved`},
			{key, []string{"www"}, `name "www" is reserved`},
			{key, []string{"tunnel"}, ""}, // not the apex label here: localhost's is "localhost"
			{key, []string{"localhost"}, `name "localhost" is reserved`},
			{key, []string{"my_app"}, `only a-z, 0-9 and - are allowed`},
			{key, []string{strings.Repeat("a", 52)}, "has the shape of a key's hostname"},
			{key, make([]string, messages.MaxNames+1), "more than 16 names"},
		} {
			if tc.reason == "" {
				continue
			}
			err := connectErr(t, a, &client.Client{Key: tc.key, Token: grants.token(tc.key), Names: tc.names, Handler: named("x")})
			var refused *client.RefusedError
			if !errors.As(err, &refused) || !strings.Contains(refused.Reason, tc.reason) {
				t.Errorf("names %q: %v, want refused with %q", tc.names, err, tc.reason)
			}
		}
	})

	t.Run("newest grant wins across instances and the older is told", func(t *testing.T) {
		var oldLog jsonLog
		oldKey, newKey := tunneltest.NewKey(t), tunneltest.NewKey(t)
		oldLabel := grants.set(oldKey, t0, "webapp")
		grants.set(newKey, t0.Add(time.Minute), "webapp")
		a.Connect(&client.Client{Key: oldKey, Token: grants.token(oldKey), Names: []string{"webapp"}, Handler: named("old"),
			Logger: slog.New(slog.NewJSONHandler(&oldLog, nil))})
		if code, body := b.Get(t, nameURL(b, "webapp")+"/"); code != http.StatusOK || body != "old" {
			t.Fatalf("before the newer grant: %d %q", code, body)
		}
		b.Connect(&client.Client{Key: newKey, Token: grants.token(newKey), Names: []string{"webapp"}, Handler: named("new")})
		for _, via := range []*tunneltest.Env{a, b} {
			tunneltest.Eventually(t, 5*time.Second, "the name goes to the newer grant via "+via.Addr, func() bool {
				code, body := via.Get(t, nameURL(via, "webapp")+"/")
				return code == http.StatusOK && body == "new"
			})
		}
		tunneltest.Eventually(t, 5*time.Second, "the older client logs why", func() bool {
			for _, r := range oldLog.records("name lost") {
				if strings.Contains(r["reason"].(string), "name webapp is now served by another key") {
					return true
				}
			}
			return false
		})
		// The older connection keeps its key's hostname.
		if code, body := a.Get(t, keyURL(a, oldLabel)+"/"); code != http.StatusOK || body != "old" {
			t.Errorf("older key's own hostname: %d %q", code, body)
		}
		// An older grant connecting now does not take it back.
		late := tunneltest.NewKey(t)
		grants.set(late, t0.Add(-time.Minute), "webapp")
		a.Connect(&client.Client{Key: late, Token: grants.token(late), Names: []string{"webapp"}, Handler: named("late")})
		for range 3 {
			if code, body := a.Get(t, nameURL(a, "webapp")+"/"); code != http.StatusOK || body != "new" {
				t.Fatalf("after an older grant connected: %d %q, want the newest grant's", code, body)
			}
		}
	})

	t.Run("a lost name comes back once the newer grant's connection is gone", func(t *testing.T) {
		oldKey, newKey := tunneltest.NewKey(t), tunneltest.NewKey(t)
		grants.set(oldKey, t0, "blog")
		grants.set(newKey, t0.Add(time.Minute), "blog")
		a.Connect(&client.Client{Key: oldKey, Token: grants.token(oldKey), Names: []string{"blog"}, Handler: named("old")})
		newer := b.Connect(&client.Client{Key: newKey, Token: grants.token(newKey), Names: []string{"blog"}, Handler: named("new")})
		tunneltest.Eventually(t, 5*time.Second, "the newer grant serves", func() bool {
			code, body := a.Get(t, nameURL(a, "blog")+"/")
			return code == http.StatusOK && body == "new"
		})
		newer.Stop()
		// The older connection claims the name again when it next
		// announces itself (every ping interval; here, at once).
		tunneltest.Eventually(t, 5*time.Second, "the older grant serves again", func() bool {
			if err := a.Proxy.Reannounce(context.Background()); err != nil {
				t.Fatal(err)
			}
			code, body := b.Get(t, nameURL(b, "blog")+"/")
			return code == http.StatusOK && body == "old"
		})
	})

	t.Run("a name nobody holds is 404, and is released when its client leaves", func(t *testing.T) {
		if code, _ := a.Get(t, nameURL(a, "nobody")+"/"); code != http.StatusNotFound {
			t.Errorf("unheld name: %d, want 404", code)
		}
		key := tunneltest.NewKey(t)
		grants.set(key, t0, "brief")
		tun := a.Connect(&client.Client{Key: key, Token: grants.token(key), Names: []string{"brief"}, Handler: named("brief")})
		tun.Stop()
		tunneltest.Eventually(t, 5*time.Second, "the name released", func() bool {
			_, err := m.Lookup(context.Background(), "brief")
			return errors.Is(err, bus.ErrNotFound)
		})
		tunneltest.Eventually(t, 5*time.Second, "404 again", func() bool {
			code, _ := b.Get(t, nameURL(b, "brief")+"/")
			return code == http.StatusNotFound
		})
	})
}
