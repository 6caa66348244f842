package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Serve an http.Handler through a tunnel with http.Serve, as on a
// listener of your own: the tunnel is the listener.
func ExampleListen() {
	proxyAddr, stopProxy := startProxy()
	defer stopProxy()

	dir, err := os.MkdirTemp("", "keyhole-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	key, err := client.LoadOrCreateKey(filepath.Join(dir, "client.jwk"))
	if err != nil {
		log.Fatal(err)
	}
	l, err := client.Listen(context.Background(), client.Client{Proxy: "ws://" + proxyAddr, Key: key})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello through a listener")
	})
	served := make(chan error, 1)
	go func() { served <- http.Serve(l, mux) }()

	publicURL := l.Addr().String()
	fmt.Println(fetch(proxyAddr, publicURL))

	l.Close() // ends the tunnel, and http.Serve with it
	fmt.Println("http.Serve returned:", errors.Is(<-served, net.ErrClosed))
	// Output:
	// 200 OK: hello through a listener
	// http.Serve returned: true
}

// A TCP tunnel's listener yields each visitor's stream as a net.Conn:
// both half-closes, deadlines, and the end of the listener.
func TestListenTCP(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := client.Listen(ctx, client.Client{
		Proxy:  env.ProxyURL(),
		Key:    tunneltest.NewKey(t),
		Logger: tunneltest.Logger(t),
		TCP:    &client.TCPService{VisitorToken: "tok"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	host := l.Addr().String()
	if !regexp.MustCompile(`^[a-z2-7]{52}\.localhost$`).MatchString(host) || l.Addr().Network() != "keyhole" {
		t.Fatalf("Addr() = %s %q, want the tunnel's hostname", l.Addr().Network(), host)
	}
	v := &client.Visitor{Proxy: env.ProxyURL(), Logger: tunneltest.Logger(t)}
	defer v.Close()

	// dial opens a visitor's stream, and accept takes it.
	dial := func() (net.Conn, net.Conn) {
		t.Helper()
		dialed := make(chan net.Conn, 1)
		go func() {
			c, err := v.Dial(ctx, host, "tok")
			if err != nil {
				t.Error(err)
			}
			dialed <- c
		}()
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		vc := <-dialed
		if vc == nil {
			t.FailNow()
		}
		sc.SetDeadline(time.Now().Add(10 * time.Second))
		vc.SetDeadline(time.Now().Add(10 * time.Second))
		return vc, sc
	}
	type halfCloser interface{ CloseWrite() error }

	t.Run("half-close both ways", func(t *testing.T) {
		vc, sc := dial()
		defer vc.Close()
		defer sc.Close()
		vc.Write([]byte("question"))
		vc.(halfCloser).CloseWrite()
		b, err := io.ReadAll(sc)
		if err != nil || string(b) != "question" {
			t.Fatalf("service read %q, %v", b, err)
		}
		sc.Write([]byte("answer after your EOF"))
		sc.(halfCloser).CloseWrite()
		if b, err := io.ReadAll(vc); err != nil || string(b) != "answer after your EOF" {
			t.Fatalf("visitor read %q, %v", b, err)
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		vc, sc := dial()
		defer vc.Close()
		defer sc.Close()
		sc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := sc.Read(make([]byte, 8))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v", err)
		}
		// A deadline that passed spoils nothing: a later one lets reads go on.
		sc.SetReadDeadline(time.Now().Add(10 * time.Second))
		vc.Write([]byte("late"))
		b := make([]byte, 4)
		if _, err := io.ReadFull(sc, b); err != nil || string(b) != "late" {
			t.Fatalf("read after the deadline moved: %q, %v", b, err)
		}
	})
	t.Run("close ends the stream for the visitor", func(t *testing.T) {
		vc, sc := dial()
		defer vc.Close()
		sc.Write([]byte("bye"))
		sc.Close()
		if b, err := io.ReadAll(vc); err != nil || string(b) != "bye" {
			t.Fatalf("visitor read %q, %v; want everything written before Close, then EOF", b, err)
		}
	})

	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
	var refused *client.RefusedStreamError
	if _, err := v.Dial(ctx, host, "tok"); !errors.As(err, &refused) {
		t.Fatalf("Dial after Close: %v, want the stream refused", err)
	}
}

// Listen takes what Run takes, except what would serve the connections
// instead of Accept.
func TestListenRefusesTargets(t *testing.T) {
	target, _ := url.Parse("http://127.0.0.1:1")
	for _, tc := range []struct {
		name string
		c    client.Client
	}{
		{"Target", client.Client{Target: target}},
		{"Handler", client.Client{Handler: http.NotFoundHandler()}},
		{"TCP.Target", client.Client{TCP: &client.TCPService{Target: "127.0.0.1:1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Key = tunneltest.NewKey(t)
			if l, err := client.Listen(context.Background(), tc.c); err == nil {
				l.Close()
				t.Fatal("Listen accepted it")
			}
		})
	}
}
