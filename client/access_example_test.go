package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Publish a tunnel at a friendly name an access token grants, for
// visitors who log in. The operator issues the token (proxy token new);
// the proxy, here in-process, trusts the operator's public key.
func ExampleClient_access() {
	signing, err := proxy.NewSigningKey()
	if err != nil {
		log.Fatal(err)
	}
	keys, err := proxy.NewTokenKeys(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{signing.Public()}})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil)
	p, err := proxy.New(context.Background(), proxy.Config{
		Domain:    "localhost",
		PublicURL: "http://localhost:" + port(srv.Listener.Addr().String()),
		TokenKeys: keys,
	})
	if err != nil {
		log.Fatal(err)
	}
	srv.Config.Handler = p
	srv.Start()
	defer srv.Close()
	defer p.Shutdown(context.Background())
	token, err := proxy.IssueToken(signing, proxy.TokenSpec{
		Audience: "localhost",
		Names:    []string{"myapp"},
		Expires:  time.Now().Add(time.Hour),
	})
	if err != nil {
		log.Fatal(err)
	}

	// Any Ed25519 or P-256 key: LoadOrCreateKey keeps one in a file.
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	registered := make(chan string, 1)
	c := &client.Client{
		Proxy: "ws://" + srv.Listener.Addr().String(),
		Key:   key,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "hello, visitor")
		}),
		Token:      token,
		Names:      []string{"myapp"},
		BasicAuth:  []client.Credential{{User: "alice", Password: "correct horse"}},
		OnRegister: func(publicURL string) { registered <- publicURL },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-registered

	get := func(user, password string) string {
		req, _ := http.NewRequest("GET", "http://"+srv.Listener.Addr().String()+"/", nil)
		req.Host = "myapp.localhost:" + port(srv.Listener.Addr().String())
		req.Close = true
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return resp.Status
		}
		return resp.Status + ": " + string(b)
	}
	fmt.Println(get("", ""))
	fmt.Println(get("alice", "wrong"))
	fmt.Println(get("alice", "correct horse"))
	fmt.Println("myapp is a valid name:", messages.CheckName("myapp") == nil)

	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// 401 Unauthorized
	// 401 Unauthorized
	// 200 OK: hello, visitor
	// myapp is a valid name: true
}
