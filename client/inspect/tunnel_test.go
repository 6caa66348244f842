package inspect_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// service is a local service that records the bodies it was sent.
type service struct {
	mu     sync.Mutex
	bodies []string
}

func (sv *service) got() []string {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return append([]string(nil), sv.bodies...)
}

func (sv *service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sv.mu.Lock()
		sv.bodies = append(sv.bodies, r.Method+" "+string(b))
		sv.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "session=abc")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"method":%q,"len":%d}`, r.Method, len(b))
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "id: %d\nevent: tick\ndata: tick %d\n\n", i, i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	})
	return mux
}

// waitDone polls the inspector until the request at uri (a path under
// /api/requests/http) has ended, and returns it.
func waitDone(t *testing.T, base, match string) map[string]any {
	t.Helper()
	var found map[string]any
	tunneltest.Eventually(t, 10*time.Second, "a finished request for "+match, func() bool {
		list := getJSON(t, base+"/api/requests/http")
		for _, r := range path(list, "requests").([]any) {
			m := r.(map[string]any)
			if strings.Contains(path(m, "request", "uri").(string), match) && path(m, "keyhole", "done") == true {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func TestCaptureThroughTunnel(t *testing.T) {
	for _, mode := range []string{"handler", "forward"} {
		t.Run(mode, func(t *testing.T) {
			env := tunneltest.StartProxy(t, proxy.Config{})
			store := inspect.New(inspect.Options{})
			var logs syncBuffer
			sv := &service{}
			c := &client.Client{Inspect: store, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			if mode == "handler" {
				c.Handler = sv.handler()
			} else {
				local := httptest.NewServer(sv.handler())
				t.Cleanup(local.Close)
				c.Target, _ = url.Parse(local.URL)
			}
			tun := env.Connect(c)
			insp := inspector(t, store, inspect.HandlerOptions{})

			// The tunnel: found where ngrok's scripts look.
			tunnels := getJSON(t, insp.URL+"/api/tunnels")
			if got := path(tunnels, "tunnels", 0, "public_url"); got != tun.URL {
				t.Errorf("tunnels[0].public_url = %v, want %s", got, tun.URL)
			}

			// An HTTP exchange.
			req, _ := http.NewRequest("POST", tun.URL+"/echo?x=1", strings.NewReader(`{"a": [1, 2]}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer s3cret")
			resp, err := env.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r := waitDone(t, insp.URL, "/echo")
			id := r["id"].(string)
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
				t.Errorf("id %q: want the stream ID in hex", id)
			}
			checks := map[string]any{
				"request.method":                  "POST",
				"request.uri":                     "/echo?x=1",
				"response.status_code":            float64(201),
				"response.status":                 "201 Created",
				"keyhole.request_body.complete":   true,
				"keyhole.response_body.complete":  true,
				"keyhole.response_body.truncated": false,
				"tunnel_name":                     "command_line",
			}
			for k, want := range checks {
				var keys []any
				for _, p := range strings.Split(k, ".") {
					keys = append(keys, p)
				}
				if got := path(r, keys...); got != want {
					t.Errorf("%s = %v, want %v", k, got, want)
				}
			}
			if got := path(r, "request", "headers", "Authorization", 0); got != "Bearer s3cret" {
				t.Errorf("request Authorization %v", got)
			}
			raw, _ := base64.StdEncoding.DecodeString(path(r, "request", "raw").(string))
			if !strings.HasPrefix(string(raw), "POST /echo?x=1 HTTP/1.1\r\n") || !strings.HasSuffix(string(raw), "\r\n\r\n"+`{"a": [1, 2]}`) {
				t.Errorf("request raw %q", raw)
			}
			raw, _ = base64.StdEncoding.DecodeString(path(r, "response", "raw").(string))
			if !strings.HasSuffix(string(raw), `{"method":"POST","len":13}`) {
				t.Errorf("response raw %q", raw)
			}
			if d := path(r, "duration").(float64); d <= 0 {
				t.Errorf("duration %v", d)
			}
			// One ID joins the inspector and the client's log.
			tunneltest.Eventually(t, 5*time.Second, "a request log line with req="+id, func() bool {
				return strings.Contains(logs.String(), "msg=request req="+id+" method=POST path=/echo")
			})

			// A replay reaches the local service again, as it was.
			code, h, b := call(t, "POST", insp.URL+"/api/requests/http", "application/json", `{"id":"`+id+`"}`)
			if code != http.StatusNoContent {
				t.Fatalf("replay: %d %s", code, b)
			}
			if got := sv.got(); len(got) != 2 || got[1] != got[0] {
				t.Errorf("the local service got %q, want the same request twice", got)
			}
			rep := getJSON(t, insp.URL+h.Get("Location"))
			if path(rep, "keyhole", "replay_of") != id || path(rep, "response", "status_code") != float64(201) {
				t.Errorf("replay record: replay_of %v status %v", path(rep, "keyhole", "replay_of"), path(rep, "response", "status_code"))
			}

			// Server-sent events, as events.
			if code, _ := env.Get(t, tun.URL+"/events"); code != 200 {
				t.Fatalf("GET /events: %d", code)
			}
			ev := waitDone(t, insp.URL, "/events")
			events, _ := path(ev, "keyhole", "events").([]any)
			if len(events) != 3 || path(events[2], "data") != "tick 2" || path(events[2], "event") != "tick" || path(events[2], "id") != "2" {
				t.Errorf("events %v", events)
			}

			// A WebSocket, message by message in both directions.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(tun.URL, "http")+"/ws", &websocket.DialOptions{HTTPClient: env.HTTP})
			if err != nil {
				t.Fatal(err)
			}
			ws.Write(ctx, websocket.MessageText, []byte("hi"))
			ws.Read(ctx)
			ws.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3})
			ws.Read(ctx)
			ws.Close(websocket.StatusNormalClosure, "bye")
			w := waitDone(t, insp.URL, "/ws")
			var got []string
			for _, m := range path(w, "keyhole", "messages").([]any) {
				mm := m.(map[string]any)
				got = append(got, fmt.Sprintf("%v %v %v %v%v", mm["direction"], mm["type"], mm["size"], mm["text"], mm["data"]))
			}
			want := []string{"in text 2 hi<nil>", "out text 7 echo:hi<nil>", "in binary 3 <nil>AQID", "out binary 8 <nil>ZWNobzoBAgM="}
			if len(got) < 4 || strings.Join(got[:4], "|") != strings.Join(want, "|") {
				t.Errorf("messages %q, want %q then the close", got, want)
			}
			if path(w, "keyhole", "kind") != "websocket" || path(w, "response", "status_code") != float64(101) {
				t.Errorf("websocket record: kind %v status %v", path(w, "keyhole", "kind"), path(w, "response", "status_code"))
			}
		})
	}
}
