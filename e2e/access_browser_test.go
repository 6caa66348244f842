package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"golang.org/x/crypto/bcrypt"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// protectedPage opens a WebSocket back to its own host once it loads, and
// writes the echo into #ws: the upgrade must carry the credentials the
// browser logged in with.
const protectedPage = `<!doctype html>
<meta charset="utf-8">
<title>behind the prompt</title>
<p id="msg">behind the prompt</p>
<pre id="ws">pending</pre>
<script>
const out = document.getElementById("ws");
const ws = new WebSocket("ws://" + location.host + "/ws");
ws.onopen = () => ws.send("hello");
ws.onmessage = (e) => { out.textContent = "echo " + e.data; ws.close(1000, "done"); };
ws.onerror = () => { out.textContent = "error"; };
</script>
`

// guardedService serves protectedPage at /page and echoes at /ws, and
// counts what reaches it of each.
type guardedService struct {
	pages, sockets atomic.Int64
	mu             sync.Mutex
	auth           []string // the Authorization of each page and upgrade
}

func (s *guardedService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.auth = append(s.auth, r.URL.Path+" "+r.Header.Get("Authorization"))
	s.mu.Unlock()
	switch r.URL.Path {
	case "/page":
		s.pages.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, protectedPage)
	case "/ws":
		s.sockets.Add(1)
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		c.Write(r.Context(), typ, msg)
		c.Close(websocket.StatusNormalClosure, "")
	default:
		http.NotFound(w, r)
	}
}

// challenge is what Chromium reported of one authentication challenge.
type challenge struct {
	path, scheme, realm, origin string
}

// A browser gets the standard Basic challenge from the proxy: Chromium's
// Fetch domain sees the authRequired event with the scheme and the realm
// the proxy sent; wrong credentials get the challenge again and never
// reach the service; the right ones show the page, and the page's own
// WebSocket upgrade carries them too.
func TestBasicAuthBrowserPrompt(t *testing.T) {
	ctx := startBrowser(t)
	env := tunneltest.StartProxy(t, proxy.Config{})
	svc := &guardedService{}
	// The lowest cost: the race detector makes a comparison at the
	// client's cost take 1.5 s.
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret:with,punctuation"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tun := env.Connect(&client.Client{Handler: svc, BasicAuth: []client.Credential{{User: "alice", Hash: string(hash)}}})
	u, _ := url.Parse(tun.URL)
	wantRealm := u.Hostname()

	// Every request pauses in the Fetch domain: continue each, and answer
	// each challenge with the next of answers, recording it.
	tctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	paused := chromedp.Events(tctx, fetch.RequestPaused)
	auths := chromedp.Events(tctx, fetch.AuthRequired)
	answers := make(chan fetch.AuthChallengeResponse, 8)
	challenges := make(chan challenge, 8)
	step(t, ctx, "enable the Fetch domain with auth requests", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: new(true)})
		return err
	}))
	wg.Go(func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			chromedp.Call(tctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	})
	wg.Go(func() {
		for ev, err := range auths {
			if err != nil {
				return
			}
			path := ""
			if ru, err := url.Parse(ev.Request.URL); err == nil {
				path = ru.Path
			}
			c := challenge{path: path}
			if ac := ev.AuthChallenge; ac != nil {
				c.scheme, c.realm, c.origin = ac.Scheme, ac.Realm, ac.Origin
			}
			answer := fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
			if path == "/page" {
				select {
				case answer = <-answers:
				default:
				}
			}
			challenges <- c
			chromedp.Call(tctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: &answer})
		}
	})
	nextChallenge := func(what string) challenge {
		t.Helper()
		for {
			select {
			case c := <-challenges:
				if c.path != "/page" {
					continue // a favicon, say: cancelled
				}
				if c.scheme != "basic" || c.realm != wantRealm || c.origin != "http://"+u.Host {
					t.Errorf("%s: challenge %+v, want scheme basic, realm %q, origin http://%s", what, c, wantRealm, u.Host)
				}
				return c
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: no authentication challenge", what)
			}
		}
	}
	bodyText := func(what string) string {
		return value(t, ctx, what, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	}

	provide := func(user, password string) fetch.AuthChallengeResponse {
		return fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: user, Password: password}
	}

	// Wrong credentials: the proxy challenges again; then the user
	// cancels, and the browser shows the proxy's plain 401 page.
	answers <- provide("alice", "s3cret:with,punctuatioN")
	answers <- fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
	step(t, ctx, "open the page with a wrong password", chromedp.Navigate(tun.URL+"/page"))
	nextChallenge("first visit")
	nextChallenge("after the wrong password")
	if got := strings.TrimSpace(bodyText("the refusal")); !strings.HasPrefix(got, "401 Unauthorized") {
		t.Errorf("after cancelling, the page says %q, want the proxy's 401 page", got)
	}
	if n := svc.pages.Load(); n != 0 {
		t.Fatalf("the service served the page %d times before a right password", n)
	}

	// The right credentials show the page, and its WebSocket, opened by
	// script, is let through with them.
	answers <- provide("alice", "s3cret:with,punctuation")
	step(t, ctx, "open the page with the right password", chromedp.Navigate(tun.URL+"/page"))
	nextChallenge("second visit")
	step(t, ctx, "the page and its WebSocket",
		chromedp.WaitVisible(chromedp.CSS("#msg")),
		chromedp.Poll[chromedp.Void](`document.getElementById("ws").textContent !== "pending"`))
	if got := value(t, ctx, "the WebSocket's result", chromedp.Evaluate[string](`document.getElementById("ws").textContent`)); got != "echo hello" {
		t.Errorf("the page's WebSocket: %q, want the echo", got)
	}
	if p, s := svc.pages.Load(), svc.sockets.Load(); p != 1 || s != 1 {
		t.Errorf("the service served %d pages and %d WebSockets, want 1 and 1", p, s)
	}

	// The browser remembers the login: the next visit has no prompt.
	step(t, ctx, "open the page again", chromedp.Navigate(tun.URL+"/page?again"), chromedp.WaitVisible(chromedp.CSS("#msg")))
	select {
	case c := <-challenges:
		if c.path == "/page" {
			t.Errorf("a logged-in visit was challenged again: %+v", c)
		}
	default:
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	for _, a := range svc.auth {
		if !strings.HasSuffix(a, " Basic YWxpY2U6czNjcmV0OndpdGgscHVuY3R1YXRpb24=") {
			t.Errorf("the service saw %q, want alice's credentials on every request", a)
		}
	}
}
