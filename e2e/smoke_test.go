package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func TestSmokeHTTPAndWebSocket(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi " + r.Host)) })
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"echo"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			c.Write(r.Context(), typ, b)
		}
	})
	tun := env.Serve(mux)
	status, body := env.Get(t, tun.URL+"/hello")
	if status != 200 || body != "hi "+tun.Host() {
		t.Fatalf("got %d %q", status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+tun.URL[4:]+"/ws", &websocket.DialOptions{HTTPClient: env.HTTP, Subprotocols: []string{"echo"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if ws.Subprotocol() != "echo" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	for _, m := range []string{"one", "two"} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
		typ, b, err := ws.Read(ctx)
		if err != nil || typ != websocket.MessageText || string(b) != m {
			t.Fatalf("echo: %v %q %v", typ, b, err)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "bye")
}
