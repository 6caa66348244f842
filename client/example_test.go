package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// startProxy runs a proxy in-process for the examples; in real use it
// runs elsewhere ("proxy --listen :8080"). It returns the proxy's address
// and a function that stops it.
func startProxy() (addr string, stop func()) {
	srv := httptest.NewUnstartedServer(nil)
	p, err := proxy.New(context.Background(), proxy.Config{
		Domain:    "localhost",
		PublicURL: "http://localhost:" + port(srv.Listener.Addr().String()),
	})
	if err != nil {
		log.Fatal(err)
	}
	srv.Config.Handler = p
	srv.Start()
	return srv.Listener.Addr().String(), func() {
		p.Shutdown(context.Background())
		srv.Close()
	}
}

func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// fetch gets publicURL through the proxy at addr. A browser resolves
// *.localhost to this machine by itself; here the request goes to the
// proxy's address with the tunnel's name in the Host header, like
// curl -H "Host: ...".
func fetch(addr, publicURL string) string {
	u, err := url.Parse(publicURL)
	if err != nil {
		log.Fatal(err)
	}
	req, err := http.NewRequest("GET", "http://"+addr+"/hello", nil)
	if err != nil {
		log.Fatal(err)
	}
	req.Host = u.Host
	req.Close = true // leave no idle connection behind when the example ends
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	return resp.Status + ": " + string(b)
}

// Forward public traffic to a web service on a local port.
func ExampleClient_forward() {
	proxyAddr, stopProxy := startProxy()
	defer stopProxy()

	// The local service, as it would run on a developer's machine.
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the local service at %s", r.URL.Path)
	}))
	defer local.Close()
	target, _ := url.Parse(local.URL)

	// The key decides the hostname: keep the file to keep the URL. Real
	// programs use client.DefaultKeyPath(); the example cleans up after
	// itself.
	dir, err := os.MkdirTemp("", "keyhole-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	key, err := client.LoadOrCreateKey(filepath.Join(dir, "client.jwk"))
	if err != nil {
		log.Fatal(err)
	}
	registered := make(chan string, 1)
	c := &client.Client{
		Proxy:      "ws://" + proxyAddr,
		Key:        key,
		Target:     target,
		OnRegister: func(publicURL string) { registered <- publicURL },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	publicURL := <-registered
	fmt.Println(fetch(proxyAddr, publicURL))
	fmt.Println("public URL ends with .localhost:<port>:", strings.HasSuffix(publicURL, ".localhost:"+port(proxyAddr)))

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// 200 OK: hello from the local service at /hello
	// public URL ends with .localhost:<port>: true
}

// Serve an http.Handler through the tunnel in-process, with no local port.
func ExampleClient_handler() {
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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		// The handler sees the public hostname, as a local service would.
		fmt.Fprintf(w, "hello from a handler; Host is public: %t", strings.HasSuffix(r.Host, ".localhost:"+port(proxyAddr)))
	})
	registered := make(chan string, 1)
	c := &client.Client{
		Proxy:      "ws://" + proxyAddr,
		Key:        key,
		Handler:    mux,
		OnRegister: func(publicURL string) { registered <- publicURL },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	publicURL := <-registered
	fmt.Println(fetch(proxyAddr, publicURL))

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// 200 OK: hello from a handler; Host is public: true
}
