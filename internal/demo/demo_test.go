package demo_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/demo"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func TestPage(t *testing.T) {
	srv := httptest.NewServer(demo.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/?q=1", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Forwarded-Host", `<script>alert(1)</script>`)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"Served through keyhole",
		"GET /?q=1",
		"203.0.113.7",
		"&lt;script&gt;alert(1)&lt;/script&gt;", // visitor input is escaped
		`location.host + "/ws"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert(1)") {
		t.Error("page echoes a header unescaped")
	}

	resp, err = srv.Client().Get(srv.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("/nope: %d, want 404", resp.StatusCode)
	}
}

func echo(t *testing.T, ctx context.Context, ws *websocket.Conn) {
	t.Helper()
	for _, m := range []struct {
		typ  websocket.MessageType
		data string
	}{{websocket.MessageText, "hello"}, {websocket.MessageBinary, "\x00\xff"}, {websocket.MessageText, "again"}} {
		if err := ws.Write(ctx, m.typ, []byte(m.data)); err != nil {
			t.Fatal(err)
		}
		typ, b, err := ws.Read(ctx)
		if err != nil || typ != m.typ || string(b) != m.data {
			t.Fatalf("echo of %q: %v %q %v", m.data, typ, b, err)
		}
	}
}

func TestEcho(t *testing.T) {
	srv := httptest.NewServer(demo.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	echo(t, ctx, ws)

	// Over the limit, the echo closes the stream rather than buffer it.
	if err := ws.Write(ctx, websocket.MessageText, []byte(strings.Repeat("x", 5<<10))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("after a 5 KiB message: %v, want close 1009", err)
	}

	// A page on another origin may not use the echo.
	h := http.Header{"Origin": {"http://evil.example"}}
	if _, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", &websocket.DialOptions{HTTPHeader: h}); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("cross-origin dial: %v, want 403", err)
	}
}

// Through a tunnel, as the browser uses it: the page's origin is the
// public URL, and the echo must accept it.
func TestThroughTunnel(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	tun := env.Serve(demo.Handler())
	status, body := env.Get(t, tun.URL+"/")
	if status != 200 || !strings.Contains(body, "<td>"+tun.Host()+"</td>") {
		t.Fatalf("page through the tunnel: %d, Host %s not shown", status, tun.Host())
	}
	if !strings.Contains(body, "<tr><th>X-Forwarded-For</th><td>127.0.0.1</td></tr>") {
		t.Error("page does not show the proxy's X-Forwarded-For")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(tun.URL, "http")+"/ws", &websocket.DialOptions{
		HTTPClient: env.HTTP,
		HTTPHeader: http.Header{"Origin": {tun.URL}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	echo(t, ctx, ws)
	ws.Close(websocket.StatusNormalClosure, "")
}
