package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func ok(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }

func get(t *testing.T, hc *http.Client, rawURL string) (int, string) {
	t.Helper()
	resp, err := hc.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestReconnectKeepsHostname(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	first := startProxyOn(t, ln, proxy.Config{})

	urls := make(chan string, 8)
	logs := &logStore{}
	c := &client.Client{
		Proxy:      "ws://" + addr,
		Key:        tunneltest.NewKey(t),
		Handler:    http.HandlerFunc(ok),
		Logger:     logs.logger(),
		OnRegister: func(u string) { urls <- u },
	}
	run := runClient(t, c)
	url1 := receive(t, urls, 10*time.Second, "first registration")

	first.stop()
	// While the proxy is down, something on its port accepts connections
	// and hangs up at once, the quickest failure there is: a client that
	// retried without backing off would show up here as a flood.
	var dials atomic.Int32
	down := listen(t, addr)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			conn, err := down.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			conn.Close()
		}
	}()
	const downFor = time.Second
	<-time.After(downFor) // a measuring window, not a wait for state
	down.Close()
	<-acceptDone
	t.Logf("%d dials while the proxy was down for %v", dials.Load(), downFor)
	if n := dials.Load(); n < 1 || n >= 10 {
		t.Errorf("client dialed %d times in %v while the proxy was down; want a few (backoff), at least one", n, downFor)
	}

	second := startProxyOn(t, listen(t, addr), proxy.Config{})
	url2 := receive(t, urls, 15*time.Second, "registration with the restarted proxy")
	if url2 != url1 {
		t.Fatalf("re-registered as %s, first as %s: the hostname must not change", url2, url1)
	}
	// The new registration really serves.
	hc := tunneltest.DialingClient(addr)
	defer hc.CloseIdleConnections()
	status, body := get(t, hc, url2+"/")
	if status != 200 || body != "ok" {
		t.Fatalf("through the restarted proxy: %d %q", status, body)
	}
	if len(logs.find("connection lost; reconnecting", nil)) == 0 {
		t.Error("no reconnect was logged")
	}
	second.stop()
	select {
	case err := <-run.done:
		t.Fatalf("Run returned %v while it should keep reconnecting", err)
	default:
	}
}

func TestLocalServiceDown(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	// A port with nothing listening: take one and give it back.
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()

	var registrations atomic.Int32
	logs := &logStore{}
	tun := env.Connect(&client.Client{
		Target:     &url.URL{Scheme: "http", Host: addr},
		Logger:     logs.logger(),
		OnRegister: func(string) { registrations.Add(1) },
	})
	status, body := env.Get(t, tun.URL+"/down")
	if status != http.StatusBadGateway {
		t.Fatalf("local service down: got %d %q, want 502", status, body)
	}
	if strings.Contains(body, addr) || strings.Contains(body, "refused") {
		t.Errorf("public error page leaks the internal error: %q", body)
	}
	// The client answers before it logs: wait for the line.
	line502 := map[string]string{"method": "GET", "path": "/down", "status": "502"}
	tunneltest.Eventually(t, 5*time.Second, "a request line with status 502", func() bool {
		return len(logs.find("request", line502)) > 0
	})

	// The service comes up on the same port: the same tunnel serves it,
	// without reconnecting.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(ok))
	srv.Listener.Close()
	srv.Listener = listen(t, addr)
	srv.Start()
	defer srv.Close()
	status, body = env.Get(t, tun.URL+"/up")
	if status != 200 || body != "ok" {
		t.Fatalf("after the local service came up: %d %q", status, body)
	}
	if n := registrations.Load(); n != 1 {
		t.Errorf("client registered %d times; it should have stayed connected", n)
	}
	if n := len(logs.find("request", line502)); n != 1 {
		t.Errorf("%d request lines for the one request that got 502", n)
	}
}

func TestLocalServiceTooSlow(t *testing.T) {
	for _, mode := range []string{"handler", "forward"} {
		t.Run(mode, func(t *testing.T) {
			env := tunneltest.StartProxy(t, proxy.Config{Timeout: 300 * time.Millisecond})
			canceled := make(chan struct{})
			var once sync.Once
			slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
					once.Do(func() { close(canceled) })
				case <-time.After(20 * time.Second):
				}
			})
			logs := &logStore{}
			c := &client.Client{Logger: logs.logger()}
			if mode == "handler" {
				c.Handler = slow
			} else {
				origin := httptest.NewServer(slow)
				defer origin.Close()
				c.Target, _ = url.Parse(origin.URL)
			}
			tun := env.Connect(c)
			start := time.Now()
			status, _ := env.Get(t, tun.URL+"/slow")
			if status != http.StatusGatewayTimeout {
				t.Fatalf("got %d, want 504", status)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("504 took %v with a 300ms timeout", d)
			}
			receive(t, canceled, 5*time.Second, "cancellation of the local request")
			tunneltest.Eventually(t, 5*time.Second, "a 499 or 504 request line", func() bool {
				for _, r := range logs.find("request", map[string]string{"path": "/slow"}) {
					if s := r.Attrs["status"]; s == "499" || s == "504" {
						return true
					}
				}
				return false
			})
		})
	}
}

func TestRegistrationRefused(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{RegistrationToken: "s3cret"})
	c := &client.Client{Proxy: env.ProxyURL(), Key: tunneltest.NewKey(t), Handler: http.HandlerFunc(ok)}
	err := runClient(t, c).wait(t, 10*time.Second)
	var refused *client.RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("Run returned %v, want a *RefusedError", err)
	}
	if !strings.Contains(refused.Reason, "token") {
		t.Errorf("reason %q does not say a token is needed", refused.Reason)
	}
	// With the token it registers.
	tun := env.Connect(&client.Client{Handler: http.HandlerFunc(ok), Token: "s3cret"})
	if status, body := env.Get(t, tun.URL+"/"); status != 200 || body != "ok" {
		t.Fatalf("with the token: %d %q", status, body)
	}
}

func TestReplacedByNewerConnection(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	key := tunneltest.NewKey(t)
	urls := make(chan string, 1)
	older := runClient(t, &client.Client{
		Proxy: env.ProxyURL(), Key: key, Handler: http.HandlerFunc(ok),
		OnRegister: func(u string) { urls <- u },
	})
	url1 := receive(t, urls, 10*time.Second, "registration")
	newer := env.Connect(&client.Client{Key: key, Handler: http.HandlerFunc(ok)})
	if newer.URL != url1 {
		t.Fatalf("same key, different URLs: %s and %s", url1, newer.URL)
	}
	if err := older.wait(t, 10*time.Second); !errors.Is(err, client.ErrReplaced) {
		t.Fatalf("older Run returned %v, want ErrReplaced", err)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	env := tunneltest.StartProxy(t, proxy.Config{})
	h := http.HandlerFunc(ok)
	local, _ := url.Parse("http://127.0.0.1:1")
	for _, tc := range []struct {
		name string
		c    client.Client
	}{
		{"no key", client.Client{Handler: h}},
		{"P-384 key", client.Client{Key: p384, Handler: h}},
		{"RSA key", client.Client{Key: rsaKey, Handler: h}},
		{"no target or handler", client.Client{Key: tunneltest.NewKey(t)}},
		{"target and handler", client.Client{Key: tunneltest.NewKey(t), Handler: h, Target: local}},
		{"ftp target", client.Client{Key: tunneltest.NewKey(t), Target: &url.URL{Scheme: "ftp", Host: "h"}}},
		{"bad proxy", client.Client{Key: tunneltest.NewKey(t), Handler: h, Proxy: "ftp://h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			if c.Proxy == "" {
				c.Proxy = env.ProxyURL()
			}
			// Retrying cannot fix a bad configuration: Run must say so at
			// once rather than reconnect until ctx ends.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Run(ctx)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("Run returned %v after %v; want an error at once", err, ctx.Err())
			}
		})
	}
}
