package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// browserPage opens a WebSocket back through the tunnel to the page's own
// host, sends a text and a binary message, and writes what came back into
// #result. Everything it reports is checked again on the server side.
const browserPage = `<!doctype html>
<meta charset="utf-8">
<title>keyhole WebSocket check</title>
<pre id="result">pending</pre>
<script>
const out = document.getElementById("result");
const ws = new WebSocket("ws://" + location.host + "/ws?from=browser", ["keyhole-test"]);
ws.binaryType = "arraybuffer";
const sent = new Uint8Array(256);
for (let i = 0; i < 256; i++) sent[i] = i;
let text = null, binary = null;
ws.onopen = () => {
  ws.send("hello from chromium \u2713");
  ws.send(sent);
};
ws.onmessage = (e) => {
  if (typeof e.data === "string") text = e.data;
  else binary = new Uint8Array(e.data);
  if (text === null || binary === null) return;
  const same = binary.length === 256 && binary.every((b, i) => b === i);
  out.textContent = "ok text=" + text + " binary=" + binary.length + (same ? ":0-255" : ":MISMATCH") +
    " protocol=" + ws.protocol;
  ws.close(1000, "done");
};
ws.onerror = () => { out.textContent = "error"; };
ws.onclose = (e) => {
  if (!out.textContent.startsWith("ok")) out.textContent = "closed " + e.code + " " + e.reason;
};
</script>
`

// echoRecorder is the local WebSocket service for the browser: it echoes
// and records what it received, and how the browser closed.
type echoRecorder struct {
	mu     sync.Mutex
	origin string
	text   []string
	binary [][]byte
	closed chan websocket.CloseError
}

func (e *echoRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The default options check Origin against Host: the page's origin
	// is the public tunnel host, which the local service sees as Host.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"keyhole-test"}})
	if err != nil {
		return
	}
	defer c.CloseNow()
	e.mu.Lock()
	e.origin = r.Header.Get("Origin")
	e.mu.Unlock()
	for {
		typ, b, err := c.Read(r.Context())
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				e.closed <- ce
			}
			return
		}
		e.mu.Lock()
		if typ == websocket.MessageText {
			e.text = append(e.text, string(b))
		} else {
			e.binary = append(e.binary, b)
		}
		e.mu.Unlock()
		if err := c.Write(r.Context(), typ, b); err != nil {
			return
		}
	}
}

// Issue 3, point 6: a real browser, through the tunnel, both ways.
func TestBrowserWebSocket(t *testing.T) {
	testenv.Chromium(t) // skip, or in CI fail, before starting anything
	env := tunneltest.StartProxy(t, proxy.Config{})
	rec := &echoRecorder{closed: make(chan websocket.CloseError, 1)}
	site := http.NewServeMux()
	site.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(browserPage))
	})
	site.Handle("/ws", rec)
	local := httptest.NewServer(site) // a real local service, as users run
	defer local.Close()
	tun := env.Forward(local.URL)

	// http://<hostname>.localhost:<port>/: Chromium resolves every
	// *.localhost name to loopback itself (no DNS, no /etc/hosts).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	result, dom := chromiumResult(ctx, t, tun.URL+"/")
	const want = "ok text=hello from chromium ✓ binary=256:0-255 protocol=keyhole-test"
	if result != want {
		t.Errorf("page result %q, want %q; the page:\n%s", result, want, dom)
	}

	// The browser's word alone is not enough: the local service must have
	// received exactly what the page sent, from the page's origin.
	select {
	case ce := <-rec.closed:
		if ce.Code != websocket.StatusNormalClosure || ce.Reason != "done" {
			t.Errorf("the browser's close reached the local service as %v, want 1000 done", ce)
		}
	case <-time.After(10 * time.Second):
		t.Error("the browser's close did not reach the local service")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.origin != tun.URL {
		t.Errorf("Origin seen by the local service: %q, want %q", rec.origin, tun.URL)
	}
	if len(rec.text) != 1 || rec.text[0] != "hello from chromium ✓" {
		t.Errorf("text received by the local service: %q", rec.text)
	}
	wantBin := make([]byte, 256)
	for i := range wantBin {
		wantBin[i] = byte(i)
	}
	if len(rec.binary) != 1 || !bytes.Equal(rec.binary[0], wantBin) {
		t.Errorf("binary received by the local service: %d messages %v, want one of bytes 0..255", len(rec.binary), rec.binary)
	}
}

// chromiumResult opens url in a headless Chromium and waits until the
// page's #result says something other than "pending", then returns it and
// the page's HTML.
//
// It drives Chromium over the DevTools protocol rather than with
// testenv.ChromiumDumpDOM: --dump-dom dumps when the virtual time budget
// runs out, and virtual time does not wait for WebSocket traffic (it races
// ahead while only a WebSocket is busy, and a fetch kept pending to hold it
// back also holds back the WebSocket's events).
func chromiumResult(ctx context.Context, t *testing.T, url string) (result, dom string) {
	t.Helper()
	bin := testenv.Chromium(t)
	profile, err := os.MkdirTemp("", "keyhole-e2e-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: a helper process still writing into the profile
	// while it dies would make TempDir's own cleanup fail the test.
	t.Cleanup(func() { os.RemoveAll(profile) })
	testenv.StartProcess(t, bin, []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-crash-reporter", "--user-data-dir=" + profile,
		"--remote-debugging-port=0", "about:blank",
	}, nil)

	// Chromium writes its DevTools port and path into the profile.
	var endpoint string
	tunneltest.Eventually(t, 30*time.Second, "Chromium's DevTools endpoint", func() bool {
		b, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		port, path, ok := strings.Cut(strings.TrimSpace(string(b)), "\n")
		if err != nil || !ok {
			return false
		}
		endpoint = "ws://127.0.0.1:" + port + path
		return true
	})
	ws, _, err := websocket.Dial(ctx, endpoint, nil)
	if err != nil {
		t.Fatalf("DevTools: %v", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(64 << 20)
	cdp := &devtools{ctx: ctx, t: t, ws: ws}

	var target struct{ TargetID string }
	cdp.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var session struct{ SessionID string }
	cdp.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &session)
	cdp.call(session.SessionID, "Page.navigate", map[string]any{"url": url}, nil)
	eval := func(expr string) string {
		var r struct {
			Result struct{ Value any }
		}
		cdp.call(session.SessionID, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
		s, _ := r.Result.Value.(string)
		return s
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		result = eval(`(document.getElementById("result") || {}).textContent || ""`)
		if result != "" && result != "pending" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the page reported nothing in time; it shows:\n%s", eval("document.documentElement.outerHTML"))
		case <-tick.C:
		}
	}
	dom = eval("document.documentElement.outerHTML")
	cdp.call("", "Browser.close", nil, nil)
	return result, dom
}

// devtools is a minimal DevTools protocol client: one call at a time,
// events ignored.
type devtools struct {
	ctx  context.Context
	t    *testing.T
	ws   *websocket.Conn
	next int
}

func (d *devtools) call(session, method string, params any, result any) {
	d.t.Helper()
	d.next++
	req := map[string]any{"id": d.next, "method": method}
	if session != "" {
		req["sessionId"] = session
	}
	if params != nil {
		req["params"] = params
	}
	b, err := json.Marshal(req)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.ws.Write(d.ctx, websocket.MessageText, b); err != nil {
		d.t.Fatalf("DevTools %s: %v", method, err)
	}
	for {
		_, b, err := d.ws.Read(d.ctx)
		if err != nil {
			if method == "Browser.close" {
				return // Chromium may close the connection as it exits
			}
			d.t.Fatalf("DevTools %s: %v", method, err)
		}
		var resp struct {
			ID     int
			Result json.RawMessage
			Error  *struct{ Message string }
		}
		if err := json.Unmarshal(b, &resp); err != nil {
			d.t.Fatalf("DevTools %s: %v", method, err)
		}
		if resp.ID != d.next {
			continue // an event, or the answer to nothing we wait for
		}
		if resp.Error != nil {
			d.t.Fatalf("DevTools %s: %s", method, resp.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(resp.Result, result); err != nil {
				d.t.Fatalf("DevTools %s: %v", method, err)
			}
		}
		return
	}
}
