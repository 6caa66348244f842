package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// A proxy that registers the client and then says nothing is given up on
// after twice its ping interval, and the client dials again at once, not
// after a close handshake the silent proxy would never answer.
func TestSilentProxyReconnects(t *testing.T) {
	const ping = 100 * time.Millisecond
	var dials atomic.Int32
	registered := make(chan time.Time, 8)
	hold := make(chan struct{})
	defer close(hold)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dials.Add(1)
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		if c.Write(ctx, websocket.MessageBinary, messages.Encode(&messages.Challenge{Nonce: "n", Domain: "localhost"})) != nil {
			return
		}
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
		resp := &messages.RegistrationResponse{Hostname: "h.localhost", URL: "http://h.localhost",
			PingMillis: uint32(ping / time.Millisecond), MaxBody: 1000, TimeoutMillis: 1000}
		if c.Write(ctx, websocket.MessageBinary, messages.Encode(resp)) != nil {
			return
		}
		registered <- time.Now()
		// Silence: no pings, no reads (so no close handshake either).
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c := &client.Client{
		Proxy:  "ws://" + strings.TrimPrefix(srv.URL, "http://"),
		Key:    tunneltest.NewKey(t),
		Target: &url.URL{Scheme: "http", Host: "127.0.0.1:1"},
		Logger: tunneltest.Logger(t),
	}
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var first time.Time
	select {
	case first = <-registered:
	case <-time.After(10 * time.Second):
		t.Fatal("client never registered")
	}
	select {
	case second := <-registered:
		// Two ping intervals of silence, up to half an interval of tick
		// granularity, and the first backoff (at most 250 ms).
		if gap := second.Sub(first); gap > 2*time.Second {
			t.Fatalf("re-registered %v after the proxy fell silent; want well under 2s", gap)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("client did not reconnect to a silent proxy (%d dials)", dials.Load())
	}
}
