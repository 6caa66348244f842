package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// jsonLog collects JSON log records.
type jsonLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *jsonLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

// records returns the records whose msg is msg.
func (l *jsonLog) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// TestRequestIDJoinsTheLogs: the proxy's line for a public request and the
// client's line for the same exchange carry the same req, for HTTP and
// for WebSocket; a request the proxy answers itself has no req.
func TestRequestIDJoinsTheLogs(t *testing.T) {
	var plog, clog jsonLog
	env := tunneltest.StartProxy(t, proxy.Config{Logger: slog.New(slog.NewJSONHandler(&plog, nil))})
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ws.Close(websocket.StatusNormalClosure, "")
	})
	tun := env.Connect(&client.Client{Key: tunneltest.NewKey(t), Handler: mux, Logger: slog.New(slog.NewJSONHandler(&clog, nil))})

	if code, _ := env.Get(t, tun.URL+"/hello"); code != http.StatusOK {
		t.Fatalf("GET: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(tun.URL, "http")+"/ws", &websocket.DialOptions{HTTPClient: env.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	ws.Read(ctx) // the service closes at once
	ws.CloseNow()
	// A body over the limit is refused before anything reaches the client.
	req, _ := http.NewRequest(http.MethodPost, tun.URL+"/hello", bytes.NewReader(make([]byte, 600_000)))
	if resp, err := env.HTTP.Do(req); err == nil {
		resp.Body.Close()
	}

	byPath := func(recs []map[string]any) map[string]map[string]any {
		m := map[string]map[string]any{}
		for _, r := range recs {
			m[r["method"].(string)+" "+r["path"].(string)] = r
		}
		return m
	}
	var p, c map[string]map[string]any
	tunneltest.Eventually(t, 5*time.Second, "request lines in both logs", func() bool {
		p = byPath(plog.records("request"))
		c = byPath(clog.records("request"))
		for _, r := range clog.records("websocket") {
			c["GET "+r["path"].(string)] = r
		}
		return p["GET /hello"] != nil && p["GET /ws"] != nil && p["POST /hello"] != nil && c["GET /hello"] != nil && c["GET /ws"] != nil
	})
	for _, k := range []string{"GET /hello", "GET /ws"} {
		pr, cr := p[k]["req"], c[k]["req"]
		if s, _ := pr.(string); len(s) != 32 || pr != cr {
			t.Errorf("%s: proxy req %v, client req %v: want the same 32 hex digits", k, pr, cr)
		}
	}
	if p["GET /ws"]["status"] != float64(http.StatusSwitchingProtocols) {
		t.Errorf("proxy's WebSocket line: status %v", p["GET /ws"]["status"])
	}
	if r := p["POST /hello"]; r["req"] != "" || r["status"] != float64(http.StatusRequestEntityTooLarge) {
		t.Errorf("proxy's line for a request it answered itself: %v", r)
	}
}

// TestCompleteResponseLoggedAsSuch: a visitor that has read the whole body
// its Content-Length announced and hangs up before the stream's end frame
// comes (a load balancer without keep-alive does) got a complete
// response: the log says 200, not 499.
func TestCompleteResponseLoggedAsSuch(t *testing.T) {
	var plog jsonLog
	env := tunneltest.StartProxy(t, proxy.Config{Logger: slog.New(slog.NewJSONHandler(&plog, nil))})
	rc := dialRaw(t, env).register(newEd25519(t))
	defer rc.close()

	conn, err := net.Dial("tcp", env.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /whole HTTP/1.1\r\nHost: %s\r\n\r\n", rc.host)
	req := rc.nextRequest()
	rc.send(&messages.HTTPResponse{ID: req.ID, Status: 200, Header: messages.Header{"Content-Length": {"5"}}, Body: true})
	rc.reserve(req.ID, 5)
	rc.send(&messages.Data{ID: req.ID, Data: []byte("hello")}) // no End yet
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(io.LimitReader(resp.Body, 5)); err != nil || string(b) != "hello" {
		t.Fatalf("body %q, %v", b, err)
	}
	conn.Close() // everything announced has arrived

	var rec map[string]any
	tunneltest.Eventually(t, 5*time.Second, "the request line", func() bool {
		for _, r := range plog.records("request") {
			if r["path"] == "/whole" {
				rec = r
				return true
			}
		}
		return false
	})
	if rec["status"] != float64(200) || rec["aborted"] != false {
		t.Errorf("request line: status %v, aborted %v; want 200, false", rec["status"], rec["aborted"])
	}
}
