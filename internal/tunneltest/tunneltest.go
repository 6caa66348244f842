// Package tunneltest starts a proxy and clients in-process for tests, with
// an HTTP client that reaches any *.localhost name through the proxy.
package tunneltest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Env is a running proxy behind an httptest server.
type Env struct {
	T      testing.TB
	Proxy  *proxy.Proxy
	Server *httptest.Server
	// Addr is the proxy's listen address, 127.0.0.1:port.
	Addr string
	// HTTP dials Addr whatever the host in the URL, so tunnel URLs like
	// http://<label>.localhost:port work without DNS.
	HTTP *http.Client
}

// Logger returns a logger that writes through t.Log when KEYHOLE_TEST_LOG
// is set, and discards otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("KEYHOLE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// StartProxy starts a proxy with cfg. Domain defaults to "localhost" and
// PublicURL to the server's address under it. Everything stops at cleanup.
func StartProxy(t testing.TB, cfg proxy.Config) *Env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + cfg.Domain + ":" + port
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger(t)
	}
	p, err := proxy.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.MaxHeaderBytes = proxy.MaxHeaderBytes
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	srv.Start()
	e := &Env{T: t, Proxy: p, Server: srv, Addr: addr, HTTP: DialingClient(addr)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		srv.Close()
		e.HTTP.CloseIdleConnections()
	})
	return e
}

// DialingClient returns an HTTP client that connects to addr for every
// request, whatever the URL's host says.
func DialingClient(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       60 * time.Second,
	}
}

// ProxyURL is the ws:// URL clients connect to.
func (e *Env) ProxyURL() string { return "ws://" + e.Addr }

// Tunnel is a client connected to the proxy.
type Tunnel struct {
	// URL is the public URL the client registered, with no trailing slash.
	URL    string
	Client *client.Client
	cancel context.CancelFunc
	done   chan error
}

// NewKey returns a fresh Ed25519 key.
func NewKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Serve connects a client serving h in-process and waits until it has
// registered.
func (e *Env) Serve(h http.Handler) *Tunnel {
	return e.Connect(&client.Client{Handler: h})
}

// Forward connects a client forwarding to target and waits until it has
// registered.
func (e *Env) Forward(target string) *Tunnel {
	u, err := url.Parse(target)
	if err != nil {
		e.T.Fatal(err)
	}
	return e.Connect(&client.Client{Target: u})
}

// Connect runs c against the proxy (filling in Proxy, Key and Logger when
// unset) and waits until it has registered. It stops at cleanup.
func (e *Env) Connect(c *client.Client) *Tunnel {
	t := e.T
	t.Helper()
	if c.Proxy == "" {
		c.Proxy = e.ProxyURL()
	}
	if c.Key == nil {
		c.Key = NewKey(t)
	}
	if c.Logger == nil {
		c.Logger = Logger(t)
	}
	urls := make(chan string, 16)
	prev := c.OnRegister
	c.OnRegister = func(u string) {
		if prev != nil {
			prev(u)
		}
		select {
		case urls <- u:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	tun := &Tunnel{Client: c, cancel: cancel, done: make(chan error, 1)}
	go func() { tun.done <- c.Run(ctx) }()
	t.Cleanup(func() { tun.Stop() })
	select {
	case tun.URL = <-urls:
	case err := <-tun.done:
		close(tun.done) // for Stop at cleanup
		t.Fatalf("client stopped before registering: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("client did not register within 10s")
	}
	return tun
}

// Stop stops the client and waits for Run to return; it returns Run's
// error. It may be called more than once.
func (tun *Tunnel) Stop() error {
	tun.cancel()
	err, ok := <-tun.done
	if ok {
		close(tun.done)
	}
	return err
}

// Host returns the tunnel's public host (hostname:port).
func (tun *Tunnel) Host() string {
	u, _ := url.Parse(tun.URL)
	return u.Host
}

// Get fetches path through the tunnel and returns the status and body.
func (e *Env) Get(t testing.TB, rawURL string) (int, string) {
	t.Helper()
	resp, err := e.HTTP.Get(rawURL)
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

// Eventually polls cond every 10ms until it is true or the deadline
// passes, then fails the test with msg.
func Eventually(t testing.TB, within time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
