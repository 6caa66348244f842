package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// shop is the local service behind the tunnel: a small JSON API that
// records every request it gets.
type shop struct {
	mu   sync.Mutex
	seen []shopRequest
}

type shopRequest struct {
	Method, Path, Auth, Body string
}

func (s *shop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, shopRequest{r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/api/orders":
		var order map[string]any
		if err := json.Unmarshal(b, &order); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":%q}`, err.Error())
			return
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": 1042, "method": r.Method, "order": order, "status": "accepted"})
	case "/api/products":
		fmt.Fprint(w, `[{"sku":"kh-1","name":"keyhole sticker","price":2.5},{"sku":"kh-2","name":"keyhole mug","price":12}]`)
	case "/health":
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "ok")
	case "/logo.png":
		img := image.NewRGBA(image.Rect(0, 0, 12, 8))
		for i := range img.Pix {
			img.Pix[i] = byte(i * 7)
		}
		w.Header().Set("Content-Type", "image/png")
		png.Encode(w, img)
	case "/events":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: price\ndata: {\"sku\":\"kh-1\",\"price\":2.5}\n\nevent: price\ndata: {\"sku\":\"kh-2\",\"price\":12}\n\n")
	case "/ws":
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			c.Write(r.Context(), typ, append([]byte("echo: "), msg...))
		}
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":"not found"}`)
	}
}

func (s *shop) requests() []shopRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]shopRequest(nil), s.seen...)
}

// startBrowser starts a headless Chromium with a fresh profile for the test.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	bin := testenv.Chromium(t)
	profile, err := os.MkdirTemp("", "keyhole-inspect-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-crash-reporter", true),
		chromedp.UserDataDir(profile),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		acancel()
		os.RemoveAll(profile)
	})
	// The first call starts the browser, bound to ctx (not to a timeout).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// step runs actions with a deadline, failing the test with what.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshot saves the page as docs/NAME when KEYHOLE_SCREENSHOTS is set,
// so that the pictures in the README are made by the same test that
// checks the page, and CI does not rewrite them on every run.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("KEYHOLE_SCREENSHOTS") == "" {
		return
	}
	shot := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join("..", "docs", name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

func TestInspectPage(t *testing.T) {
	ctx := startBrowser(t)
	env := tunneltest.StartProxy(t, proxy.Config{})
	sh := &shop{}
	local := httptest.NewServer(sh)
	t.Cleanup(local.Close)
	target, _ := url.Parse(local.URL)
	store := inspect.New(inspect.Options{})
	tun := env.Connect(&client.Client{Target: target, Inspect: store})

	ln, err := inspect.Listen("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- store.Serve(sctx, ln, inspect.HandlerOptions{}) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	page := "http://" + ln.Addr().String() + "/"

	visit := func(method, path, body string, header ...string) {
		t.Helper()
		req, _ := http.NewRequest(method, tun.URL+path, strings.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := env.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	step(t, ctx, "open the inspector",
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS("#list")))
	// The status panel shows the public URL, from the live stream.
	step(t, ctx, "the public URL in the status panel",
		chromedp.Poll[chromedp.Void](`document.getElementById("st-url").textContent === `+jsString(tun.URL)+
			` && document.getElementById("st-state").textContent === "online"`))
	// A mark that a reload would wipe: the list must fill in live.
	step(t, ctx, "mark the page", chromedp.Evaluate[chromedp.Void](`window.keyholeLoaded = "once"`))

	const order = `{"item":"keyhole sticker","qty":3,"gift":{"wrap":true,"note":"for Ada"}}`
	const secret = "Bearer secret-token-123"
	visit("GET", "/health", "")
	visit("GET", "/api/products?limit=2", "")
	visit("POST", "/api/orders", order, "Content-Type", "application/json", "Authorization", secret)
	visit("GET", "/favicon.ico", "")
	visit("POST", "/api/orders", `{"item": "mug",, }`, "Content-Type", "application/json", "Authorization", secret)

	step(t, ctx, "the requests appear in the list",
		chromedp.WaitVisible(chromedp.CSS(`#rows tr[data-path="/api/orders"][data-status="201"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#rows tr[data-path="/favicon.ico"][data-status="404"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#rows tr[data-path="/api/orders"][data-status="400"]`)))
	if got := value(t, ctx, "the mark", chromedp.Evaluate[string](`window.keyholeLoaded || "reloaded"`)); got != "once" {
		t.Fatalf("the page was reloaded (mark %q): the list must update live", got)
	}
	if n := value(t, ctx, "rows", chromedp.Evaluate[int](`document.querySelectorAll("#rows tr").length`)); n != 5 {
		t.Errorf("%d rows for 5 requests", n)
	}
	screenshot(t, ctx, "inspector-list.png")

	// The keyboard opens a row: focus it, press Enter.
	created := chromedp.CSS(`#rows tr[data-path="/api/orders"][data-status="201"]`)
	step(t, ctx, "open the order with the keyboard",
		chromedp.Focus(created),
		chromedp.KeyEvent(kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`#detail .body-view[data-part=request] pre.pretty[data-kind=json]`)))
	var want bytes.Buffer
	json.Indent(&want, []byte(order), "", "  ")
	got := value(t, ctx, "the request body", chromedp.TextContent(chromedp.CSS(`#detail .body-view[data-part=request] pre.pretty`)))
	if got != want.String() {
		t.Errorf("request body shown as\n%s\nwant it pretty-printed:\n%s", got, want.String())
	}
	// The secret is masked: not on the page until asked for.
	reveal := chromedp.CSS(`#detail button.mask[aria-label="Reveal Authorization"]`)
	step(t, ctx, "the masked Authorization header", chromedp.WaitVisible(reveal))
	if value(t, ctx, "page text", chromedp.Evaluate[bool](`document.body.innerText.includes("secret-token-123")`)) {
		t.Error("the Authorization value is on the page before it is revealed")
	}
	step(t, ctx, "the response body", chromedp.WaitVisible(chromedp.CSS(`#detail .body-view[data-part=response] pre.pretty`)))
	screenshot(t, ctx, "inspector-detail.png")
	step(t, ctx, "reveal the header",
		chromedp.Click(reveal),
		chromedp.WaitVisible(chromedp.CSS(`#detail .revealed`)))
	if got := value(t, ctx, "the revealed value", chromedp.TextContent(chromedp.CSS(`#detail .revealed`))); got != secret {
		t.Errorf("revealed %q, want %q", got, secret)
	}

	// Copy as curl: to the clipboard, or shown to copy by hand where the
	// browser allows no clipboard (headless may not).
	step(t, ctx, "copy as curl",
		chromedp.Click(chromedp.ID("a-curl")),
		chromedp.Poll[chromedp.Void](`document.getElementById("toast").textContent === "Copied the curl command" || `+
			`(document.querySelector("dialog textarea") || {}).value?.startsWith("curl 'http://")`))
	if value(t, ctx, "a curl dialog", chromedp.Evaluate[bool](`!!document.querySelector("dialog[open]")`)) {
		cmd := value(t, ctx, "the curl command", chromedp.Evaluate[string](`document.querySelector("dialog textarea").value`))
		if !strings.Contains(cmd, "-H 'Authorization: "+secret+"'") || !strings.Contains(cmd, "--data-raw '"+order+"'") {
			t.Errorf("curl command %q", cmd)
		}
		step(t, ctx, "close the dialog", chromedp.Click(chromedp.CSS("dialog button")), chromedp.WaitNotPresent(chromedp.CSS("dialog")))
		t.Log("copy as curl: no clipboard here, the command was shown")
	} else {
		// Reading the clipboard back needs the permission a person would
		// give when asked.
		if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: "clipboard-read"}, Setting: browser.PermissionSettingGranted,
			Origin: strings.TrimSuffix(page, "/"),
		}); err != nil {
			t.Fatalf("grant clipboard-read: %v", err)
		}
		cmd := value(t, ctx, "the clipboard", chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
		if !strings.Contains(cmd, "-H 'Authorization: "+secret+"'") || !strings.Contains(cmd, "--data-raw '"+order+"'") {
			t.Errorf("curl command on the clipboard %q", cmd)
		}
		t.Log("copy as curl: copied to the clipboard")
	}

	// Esc closes the detail and gives the focus back to the row.
	step(t, ctx, "close with Esc",
		chromedp.KeyEvent(kb.Escape),
		chromedp.WaitNotVisible(chromedp.CSS("#detail")))
	if got := value(t, ctx, "the focus", chromedp.Evaluate[string](`document.activeElement.dataset.path + " " + document.activeElement.dataset.status`)); got != "/api/orders 201" {
		t.Errorf("after Esc the focus is on %q, want the row", got)
	}

	// An invalid document says where it breaks.
	step(t, ctx, "open the bad order",
		chromedp.Click(chromedp.CSS(`#rows tr[data-path="/api/orders"][data-status="400"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#detail .body-view[data-part=request] .error`)))
	if got := value(t, ctx, "the JSON error", chromedp.TextContent(chromedp.CSS(`#detail .body-view[data-part=request] .error`))); !strings.HasPrefix(got, "Invalid JSON at line 1, column 16") {
		t.Errorf("error shown as %q", got)
	}

	// Replay with edits: another method and body, the masked header kept.
	before := len(sh.requests())
	const edited = `{"item":"keyhole mug","qty":1}`
	step(t, ctx, "edit and replay the order",
		chromedp.Click(created),
		chromedp.WaitVisible(chromedp.CSS(`#detail .body-view[data-part=request] pre.pretty`)),
		chromedp.Click(chromedp.ID("a-edit")),
		chromedp.WaitVisible(chromedp.CSS(`form.edit textarea[name=body]`)),
		chromedp.SetValue(chromedp.CSS(`form.edit input[name=method]`), "PUT"),
		chromedp.SetValue(chromedp.CSS(`form.edit textarea[name=body]`), edited),
		chromedp.Click(chromedp.CSS(`form.edit button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#replay-area .compare pre.replayed`)))
	reqs := sh.requests()[before:]
	if len(reqs) != 1 || reqs[0] != (shopRequest{"PUT", "/api/orders", secret, edited}) {
		t.Fatalf("the local service got %+v, want one PUT with the edited body and the original Authorization", reqs)
	}
	added := value(t, ctx, "added lines", chromedp.Evaluate[string](`[...document.querySelectorAll("#replay-area pre.replayed .line.add")].map(e => e.textContent).join("")`))
	removed := value(t, ctx, "removed lines", chromedp.Evaluate[string](`[...document.querySelectorAll("#replay-area pre.original .line.del")].map(e => e.textContent).join("")`))
	if !strings.Contains(added, `"keyhole mug"`) || !strings.Contains(added, `"PUT"`) || !strings.Contains(removed, `"keyhole sticker"`) {
		t.Errorf("the differences are not highlighted: added %q, removed %q", added, removed)
	}
	if strings.Contains(added, `"accepted"`) {
		t.Errorf("an unchanged line is marked added: %q", added)
	}
	// The replay is in the list too, marked.
	step(t, ctx, "the replay in the list",
		chromedp.WaitVisible(chromedp.CSS(`#rows tr[data-path="/api/orders"] .badge`)))

	// Filters narrow the list as one types.
	rows := func() int {
		return value(t, ctx, "rows", chromedp.Evaluate[int](`document.querySelectorAll("#rows tr").length`))
	}
	step(t, ctx, "filter by status",
		chromedp.KeyEvent(kb.Escape),
		chromedp.SendKeys(chromedp.CSS("#f-status"), "4xx"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#rows tr").length === 2`))
	step(t, ctx, "filter by header",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("f-status").value = ""`),
		chromedp.SendKeys(chromedp.CSS("#f-header"), "authorization: bearer"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#rows tr").length === 3`))
	step(t, ctx, "filter by path and method",
		chromedp.Evaluate[chromedp.Void](`document.getElementById("f-header").value = ""`),
		chromedp.SendKeys(chromedp.CSS("#f-path"), "orders"),
		chromedp.SetValue(chromedp.CSS("#f-method"), "PUT"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("f-method").dispatchEvent(new Event("input"))`),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#rows tr").length === 1`))
	step(t, ctx, "clear the filters",
		chromedp.Evaluate[chromedp.Void](`for (const id of ["f-path", "f-method"]) document.getElementById(id).value = ""; document.getElementById("f-path").dispatchEvent(new Event("input"))`),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#rows tr").length === 6`))
	if n := rows(); n != 6 {
		t.Errorf("%d rows without filters, want 6", n)
	}

	// A WebSocket, an event stream and an image, each as a person would
	// want to see it.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	ws := dialVisitor(wctx, t, env, wsURL(tun, "/ws"), nil)
	ws.Write(wctx, websocket.MessageText, []byte("hello over ws"))
	ws.Read(wctx)
	ws.Close(websocket.StatusNormalClosure, "done")
	visit("GET", "/events", "")
	visit("GET", "/logo.png", "")
	step(t, ctx, "the WebSocket's timeline",
		chromedp.Click(chromedp.CSS(`#rows tr[data-path="/ws"][data-status="101"]`)),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll("#detail .timeline li")].some(li => li.textContent.includes("echo: hello over ws"))`))
	if got := value(t, ctx, "the timeline", chromedp.Evaluate[string](`[...document.querySelectorAll("#detail .timeline li")].slice(0, 2).map(li => li.children[1].textContent + " " + li.children[3].textContent).join(" | ")`)); got != "→ to service hello over ws | ← from service echo: hello over ws" {
		t.Errorf("WebSocket timeline %q", got)
	}
	step(t, ctx, "the event stream's events",
		chromedp.Click(chromedp.CSS(`#rows tr[data-path="/events"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#detail .timeline li").length === 2`))
	if got := value(t, ctx, "the events", chromedp.Evaluate[string](`document.querySelectorAll("#detail .timeline li")[1].textContent`)); !strings.Contains(got, "price") || !strings.Contains(got, `{"sku":"kh-2","price":12}`) {
		t.Errorf("second event shown as %q", got)
	}
	step(t, ctx, "the image",
		chromedp.Click(chromedp.CSS(`#rows tr[data-path="/logo.png"]`)),
		chromedp.Poll[chromedp.Void](`(() => { const i = document.querySelector("#detail img.body"); return i && i.complete && i.naturalWidth === 12; })()`))

	// On a phone the page fits the screen and the detail covers the list.
	step(t, ctx, "a phone's screen", chromedp.EmulateViewport(390, 844))
	if got := value(t, ctx, "the layout", chromedp.Evaluate[string](
		`getComputedStyle(document.getElementById("detail")).position + " " + (document.documentElement.scrollWidth <= innerWidth)`)); got != "fixed true" {
		wide := value(t, ctx, "what is too wide", chromedp.Evaluate[string](
			`[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > innerWidth + 1).map(e => e.tagName + "#" + e.id + "." + e.className + " " + Math.round(e.getBoundingClientRect().right)).slice(0, 8).join(", ")`))
		t.Errorf("on a phone: detail position and fit %q, want fixed true; wider than the screen: %s", got, wide)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
