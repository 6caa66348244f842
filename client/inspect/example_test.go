package inspect_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// startProxy runs a proxy in-process for the examples; in real use it
// runs elsewhere. It returns the proxy's address and a function that
// stops it.
func startProxy() (addr string, stop func()) {
	srv := httptest.NewUnstartedServer(nil)
	addr = srv.Listener.Addr().String()
	p, err := proxy.New(context.Background(), proxy.Config{
		Domain:    "localhost",
		PublicURL: "http://localhost:" + addr[strings.LastIndexByte(addr, ':')+1:],
	})
	if err != nil {
		log.Fatal(err)
	}
	srv.Config.Handler = p
	srv.Start()
	return addr, func() {
		p.Shutdown(context.Background())
		srv.Close()
	}
}

// Embed the inspector in a program that runs a client: set Client.Inspect
// and serve the Store's handler on a loopback address.
func Example() {
	proxyAddr, stopProxy := startProxy()
	defer stopProxy()
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer local.Close()
	target, _ := url.Parse(local.URL)

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	store := inspect.New(inspect.Options{})
	registered := make(chan string, 1)
	c := &client.Client{
		Proxy:      "ws://" + proxyAddr,
		Key:        key,
		Target:     target,
		Inspect:    store,
		OnRegister: func(u string) { registered <- u },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	publicURL := <-registered

	// The inspector, on a port of its own (127.0.0.1:4040 in the command).
	ln, err := inspect.Listen("127.0.0.1:0", "")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- store.Serve(ctx, ln, inspect.HandlerOptions{}) }()

	// A visitor's request, through the proxy.
	req, _ := http.NewRequest("GET", "http://"+proxyAddr+"/greeting?lang=en", nil)
	req.Host = strings.TrimPrefix(publicURL, "http://")
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// Scripts find the public URL where they find ngrok's, and the
	// captured requests too.
	var tunnels struct {
		Tunnels []struct {
			PublicURL string `json:"public_url"`
		}
	}
	get(ln.Addr().String(), "/api/tunnels", &tunnels)
	fmt.Println("public URL found:", tunnels.Tunnels[0].PublicURL == publicURL)
	var list struct {
		Requests []struct {
			Request struct {
				Method string
				URI    string
			}
			Response struct {
				StatusCode int `json:"status_code"`
			}
		}
	}
	get(ln.Addr().String(), "/api/requests/http", &list)
	r := list.Requests[0]
	fmt.Println(r.Request.Method, r.Request.URI, r.Response.StatusCode)

	cancel()
	<-done
	<-served
	// Output:
	// public URL found: true
	// GET /greeting?lang=en 200
}

func get(addr, path string, v any) {
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		log.Fatal(err)
	}
}

// An address beyond loopback needs a token; the port moves up when taken.
func ExampleListen() {
	_, err := inspect.Listen("0.0.0.0:4040", "")
	fmt.Println(errors.Is(err, inspect.ErrNeedsToken))
	ln, err := inspect.Listen("127.0.0.1:0", "")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println(strings.HasPrefix(ln.Addr().String(), "127.0.0.1:"))
	// Output:
	// true
	// true
}

// The page shows bodies as Render returns them: here an invalid JSON
// document, with where it breaks.
func ExampleRender() {
	v := inspect.Render("application/json", "", []byte("{\n  \"a\": 1,\n}"), false)
	fmt.Println(v.Kind, v.Error)
	v = inspect.Render("application/json", "", []byte(`{"a":[1,2]}`), false)
	fmt.Println(v.Text)
	// Output:
	// json line 3, column 1: invalid character '}' looking for beginning of object key string
	// {
	//   "a": [
	//     1,
	//     2
	//   ]
	// }
}
