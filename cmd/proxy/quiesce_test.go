//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
)

// TestQuiesceAnswersQueuedConnections: connections the kernel completed
// before shutdown, with a request already sent on them, are served, not
// reset (a load balancer cannot retry a POST reset that way); a
// connection attempted after quiesce is refused.
func TestQuiesceAnswersQueuedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp := ln.(*net.TCPListener)
	sv := &server{name: "http", tcp: tcp, ln: ln}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "served")
	}), ConnState: sv.busy.track}
	sv.srv = srv
	// Three connections wait in the accept queue, each with a POST sent:
	// nothing accepts yet.
	var queued []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"); err != nil {
			t.Fatal(err)
		}
		queued = append(queued, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiesced := make(chan error, 1)
	go func() { quiesced <- quiesce(ctx, tcp) }()
	// quiesce waits for the queue, which only Serve empties.
	select {
	case err := <-quiesced:
		t.Fatalf("quiesce returned before the queued connections were accepted: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := <-quiesced; err != nil {
		t.Fatal(err)
	}
	// No longer listening, though not closed yet: refused.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("a connection after quiesce was accepted")
	}
	g := &serverGroup{servers: []*server{sv}, done: served, waiting: 1}
	shut := make(chan error, 1)
	go func() { shut <- g.shutdown(ctx, slog.New(slog.DiscardHandler)) }()
	for i, c := range queued {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("queued connection %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "served" {
			t.Fatalf("queued connection %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	// Closed: a new connection is refused (a load balancer tries the next
	// instance), never accepted and dropped.
	_, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("dial after shutdown: %v, want a refusal", err)
	}
}

// shutdownWithSilentConn serves h as the command does, opens a connection
// that sends nothing yet, and once the server has it starts the shutdown
// with timeout. It returns that connection, the listener's address, and
// what the shutdown returns.
func shutdownWithSilentConn(t *testing.T, h http.Handler, timeout time.Duration) (net.Conn, string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sv := &server{name: "http", tcp: ln.(*net.TCPListener), ln: ln}
	sv.srv = &http.Server{Handler: h, ConnState: sv.busy.track}
	served := make(chan error, 1)
	go func() { served <- sv.srv.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tunneltest.Eventually(t, 5*time.Second, "the connection accepted", func() bool { return sv.busy.count() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	g := &serverGroup{servers: []*server{sv}, done: served, waiting: 1}
	shut := make(chan error, 1)
	go func() { shut <- g.shutdown(ctx, slog.New(slog.DiscardHandler)) }()
	return c, ln.Addr().String(), shut
}

// TestShutdownAnswersLateRequest: a connection accepted before shutdown
// whose request comes a moment after it began is answered, not closed
// unanswered (http.Server.Shutdown alone drops such a request).
func TestShutdownAnswersLateRequest(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "served") })
	c, addr, shut := shutdownWithSilentConn(t, h, 10*time.Second)
	// The listener stops listening first: then the request comes.
	tunneltest.Eventually(t, 5*time.Second, "the listener refusing", func() bool {
		c2, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c2.Close()
		}
		return err != nil
	})
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("request sent after shutdown began: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "served" {
		t.Fatalf("late request: %d %q", resp.StatusCode, b)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestShutdownSettleEndsAtDeadline: a connection that never sends a
// request holds the shutdown only until its deadline, not for ever.
func TestShutdownSettleEndsAtDeadline(t *testing.T) {
	_, _, shut := shutdownWithSilentConn(t, http.NotFoundHandler(), 300*time.Millisecond)
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("shutdown with a silent connection: %v, want the deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not end at its deadline")
	}
}

// TestQuiesceGivesUpAtDeadline: with a connection queued and nothing
// accepting, quiesce stops waiting at its deadline and leaves the
// listener as it was (Shutdown then closes it as before).
func TestQuiesceGivesUpAtDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := quiesce(ctx, ln.(*net.TCPListener)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("quiesce with a queued connection and no server = %v, want the deadline", err)
	}
	// Still listening: the queued connection can be accepted.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	a, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept after quiesce gave up: %v", err)
	}
	a.Close()
}
