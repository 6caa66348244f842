package proxy_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Run a proxy on a local port with the in-memory bus (one instance; give
// every instance the same Redis bus, bus/redis, to run several), connect a
// client that serves a handler, and fetch a page through the tunnel.
func ExampleNew() {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	mem := bus.NewMemory()
	defer mem.Close()
	p, err := proxy.New(ctx, proxy.Config{
		Domain:    "localhost",
		PublicURL: "http://localhost:" + port, // tunnels: http://<label>.localhost:<port>
		Bus:       mem,
		Registry:  mem,
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: proxy.MaxHeaderBytes}
	go srv.Serve(ln)

	// A client, as "client" would run next to a local service.
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	registered := make(chan string, 1)
	c := &client.Client{
		Proxy: "ws://" + ln.Addr().String(),
		Key:   key,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s", r.URL.Path)
		}),
		OnRegister: func(publicURL string) { registered <- publicURL },
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	publicURL := <-registered

	// A browser resolves *.localhost by itself; here the request goes to
	// the listener with the tunnel's name in the Host header.
	u, _ := url.Parse(publicURL)
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/page", nil)
	req.Host = u.Host
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, string(body))

	cancel()
	<-done
	p.Shutdown(ctx)
	srv.Close()
	// Output:
	// 200 OK hello from /page
}

// Make a signing key, trust its public half, issue a token that grants a
// name and lower limits to one client key, and verify it as the proxy
// does when that client registers.
func ExampleIssueToken() {
	signing, err := proxy.NewSigningKey() // keep it secret: it makes tokens
	if err != nil {
		log.Fatal(err)
	}
	// The proxy holds only public keys, as a JWK set (Config.TokenKeys).
	keys, err := proxy.NewTokenKeys(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{signing.Public()}})
	if err != nil {
		log.Fatal(err)
	}

	clientPub, _, _ := ed25519.GenerateKey(rand.Reader)
	label, _ := messages.Hostname(clientPub) // the client's hostname label
	token, err := proxy.IssueToken(signing, proxy.TokenSpec{
		Audience: "tunnel.example.com",
		Key:      label, // only this client key may use it
		Names:    []string{"myapp"},
		Expires:  time.Now().Add(30 * 24 * time.Hour),
		Rate:     10,
		MaxBody:  1 << 20,
	})
	if err != nil {
		log.Fatal(err)
	}

	g, err := keys.Verify(token, "tunnel.example.com", label, time.Now())
	if err != nil {
		log.Fatal(err)
	}
	lapses, _ := proxy.TokenIDExpiry(g.ID) // a revocation of g.ID can end then
	fmt.Println("names:", g.Names, "rate:", g.Rate, "max body:", g.MaxBody)
	fmt.Println("revocation lapses after expiry:", lapses.After(g.Expires))

	// The same token, elsewhere or for another key:
	_, err = keys.Verify(token, "other.example.com", label, time.Now())
	fmt.Println(err)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := messages.Hostname(otherPub)
	_, err = keys.Verify(token, "tunnel.example.com", other, time.Now())
	fmt.Println(err)
	// Output:
	// names: [myapp] rate: 10 max body: 1048576
	// revocation lapses after expiry: true
	// token for another domain
	// token not valid for this key
}

// Keep a deny list and the token key set in force from files while the
// proxy runs: each is applied when it changes (Watch polls) and on demand
// (call Reload on SIGHUP, say). A file that cannot be used keeps the old
// rules and is logged.
func ExampleAccessReloader() {
	dir, err := os.MkdirTemp("", "keyhole-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	denyFile := filepath.Join(dir, "deny.txt")
	keysFile := filepath.Join(dir, "keys.json")
	a, _ := proxy.NewSigningKey()
	b, _ := proxy.NewSigningKey()
	writeKeys := func(ks ...*jose.JSONWebKey) {
		set := jose.JSONWebKeySet{}
		for _, k := range ks {
			set.Keys = append(set.Keys, k.Public())
		}
		data, _ := json.Marshal(set)
		os.WriteFile(keysFile, data, 0o644)
	}
	bad := strings.Repeat("b", 52) // a client's hostname label
	os.WriteFile(denyFile, []byte("# nobody yet\n"), 0o644)
	writeKeys(a)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Load both before the proxy starts, so that it never runs without them.
	access, err := proxy.LoadAccess("", denyFile)
	if err != nil {
		log.Fatal(err)
	}
	keys := new(proxy.TokenKeys)
	keysReloader, err := keys.Reloader(keysFile, nil)
	if err != nil {
		log.Fatal(err)
	}
	p, err := proxy.New(ctx, proxy.Config{Access: access, TokenKeys: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	var current *proxy.Access // for this example's output
	accessReloader, err := proxy.AccessReloader("", denyFile, func(a *proxy.Access) {
		p.SetAccess(a) // also cuts off connected keys no longer permitted
		current = a
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { accessReloader.Watch(ctx, proxy.DefaultReloadInterval) })
	wg.Go(func() { keysReloader.Watch(ctx, proxy.DefaultReloadInterval) })

	tokA, _ := proxy.IssueToken(a, proxy.TokenSpec{Audience: "localhost"})
	fmt.Println("token of key A:", verdict(keys.Verify(tokA, "localhost", "", time.Time{})))

	// Rotate: B replaces A. Deny a key. Reload at once rather than wait
	// for the next poll.
	writeKeys(b)
	os.WriteFile(denyFile, []byte(bad+"\n"), 0o644)
	if err := keysReloader.Reload(); err != nil {
		log.Fatal(err)
	}
	if err := accessReloader.Reload(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("token of key A:", verdict(keys.Verify(tokA, "localhost", "", time.Time{})))
	fmt.Println("denied key permitted:", current.Permits(bad))

	// A broken file: the key set in force stays.
	os.WriteFile(keysFile, []byte("{"), 0o644)
	fmt.Println("broken file reloaded:", keysReloader.Reload() == nil)
	tokB, _ := proxy.IssueToken(b, proxy.TokenSpec{Audience: "localhost"})
	fmt.Println("token of key B:", verdict(keys.Verify(tokB, "localhost", "", time.Time{})))
	// Output:
	// token of key A: accepted
	// token of key A: token signed by an unknown key
	// denied key permitted: false
	// broken file reloaded: false
	// token of key B: accepted
}

func verdict(_ *proxy.Grant, err error) string {
	if err != nil {
		return err.Error()
	}
	return "accepted"
}
