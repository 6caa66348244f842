package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/webhook"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// hookSecrets are the secrets of the rules webhookTunnel sets up.
var hookSecrets = map[webhook.Provider]string{
	webhook.GitHub: "github-e2e-secret",
	webhook.Stripe: "whsec_e2e_secret",
	webhook.Slack:  "slack-e2e-secret",
}

// hookMAC is the hex HMAC-SHA256 of msg, as the providers compute it.
func hookMAC(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// hookHeaders are the headers provider p signs body with at ts.
func hookHeaders(p webhook.Provider, secret, body string, ts time.Time) http.Header {
	t := strconv.FormatInt(ts.Unix(), 10)
	switch p {
	case webhook.GitHub:
		return http.Header{"X-Hub-Signature-256": {"sha256=" + hookMAC(secret, body)}}
	case webhook.Stripe:
		return http.Header{"Stripe-Signature": {"t=" + t + ",v1=" + hookMAC(secret, t+"."+body)}}
	default:
		return http.Header{"X-Slack-Signature": {"v0=" + hookMAC(secret, "v0:"+t+":"+body)}, "X-Slack-Request-Timestamp": {t}}
	}
}

// hookService is a local service that records what reaches it.
type hookService struct {
	mu  sync.Mutex
	got []*http.Request // with Body replaced by its bytes, in bodies
	bs  [][]byte
}

func (s *hookService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ws" || r.URL.Path == "/hooks/github/ws" {
		s.record(r, nil)
		echo(w, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	s.record(r, b)
	io.WriteString(w, "took it")
}

func (s *hookService) record(r *http.Request, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, r.Clone(r.Context()))
	s.bs = append(s.bs, b)
}

func (s *hookService) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func (s *hookService) last() (*http.Request, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[len(s.got)-1], s.bs[len(s.bs)-1]
}

// lockedBuffer collects a client's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// webhookTunnel publishes svc in mode m with a rule per provider at
// /hooks/<provider>.
func webhookTunnel(t *testing.T, env *tunneltest.Env, m mode, svc http.Handler, logs io.Writer) *tunneltest.Tunnel {
	t.Helper()
	var rules []webhook.Rule
	for _, p := range webhook.Providers {
		rules = append(rules, webhook.Rule{Provider: p, Secret: []byte(hookSecrets[p]), Path: "/hooks/" + string(p)})
	}
	c := &client.Client{Webhooks: rules, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if m == handlerMode {
		c.Handler = svc
	} else {
		srv := httptest.NewServer(svc)
		t.Cleanup(srv.Close)
		u, err := url.Parse(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		c.Target = u
	}
	return env.Connect(c)
}

// post sends body to the tunnel with h and returns the answer.
func post(t *testing.T, env *tunneltest.Env, u string, h http.Header, body []byte, chunked bool) (int, string) {
	t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // of unknown length: sent chunked
	}
	req, err := http.NewRequest("POST", u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := env.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Through a real proxy and client, in both modes: signed deliveries reach
// the local service byte for byte with their headers; wrong, missing,
// stale and replayed ones get 401 and never do, each logged with the
// request's ID; other paths pass.
func TestWebhookThroughTunnel(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			svc := &hookService{}
			logs := &lockedBuffer{}
			tun := webhookTunnel(t, env, m, svc, logs)
			payload := make([]byte, 100_000) // several data frames, and every byte value
			rand.Read(payload)
			for _, p := range webhook.Providers {
				t.Run(string(p), func(t *testing.T) {
					u := tun.URL + "/hooks/" + string(p) + "?event=1"
					body := string(payload) + string(p) // distinct per provider
					h := hookHeaders(p, hookSecrets[p], body, time.Now())
					h.Set("X-Custom", "kept")
					for _, chunked := range []bool{false, true} {
						if chunked {
							// A fresh delivery: the first is remembered.
							body += "!"
							h = hookHeaders(p, hookSecrets[p], body, time.Now())
							h.Set("X-Custom", "kept")
						}
						n := svc.count()
						if status, answer := post(t, env, u, h, []byte(body), chunked); status != 200 || answer != "took it" {
							t.Fatalf("chunked %v: signed delivery: %d %q", chunked, status, answer)
						}
						if svc.count() != n+1 {
							t.Fatalf("the local service saw %d requests, want %d", svc.count(), n+1)
						}
						req, got := svc.last()
						if !bytes.Equal(got, []byte(body)) {
							t.Errorf("chunked %v: the local service got %d bytes, not the %d sent", chunked, len(got), len(body))
						}
						for k, v := range h {
							if req.Header.Get(k) != v[0] {
								t.Errorf("the local service saw %s %q, want %q", k, req.Header.Get(k), v[0])
							}
						}
						if req.URL.RawQuery != "event=1" {
							t.Errorf("query %q", req.URL.RawQuery)
						}
					}
					n := svc.count()
					type refusal struct {
						name   string
						h      http.Header
						body   string
						reason string
					}
					refusals := []refusal{
						{"replayed", h, body, "replayed signature"},
						{"wrong secret", hookHeaders(p, "not-the-secret", body+"x", time.Now()), body + "x", "signature mismatch"},
						{"tampered", hookHeaders(p, hookSecrets[p], body+"y", time.Now()), body + "z", "signature mismatch"},
						{"missing", http.Header{}, body, "missing signature"},
					}
					if p != webhook.GitHub { // GitHub signs no time
						refusals = append(refusals, refusal{"stale", hookHeaders(p, hookSecrets[p], body+"?", time.Now().Add(-6*time.Minute)), body + "?", "timestamp outside tolerance"})
					}
					for _, tc := range refusals {
						status, answer := post(t, env, u, tc.h, []byte(tc.body), false)
						if status != 401 || answer != "webhook: "+tc.reason+"\n" {
							t.Errorf("%s: %d %q, want 401 %q", tc.name, status, answer, tc.reason)
						}
					}
					if svc.count() != n {
						t.Errorf("refused deliveries reached the local service: %d more", svc.count()-n)
					}
				})
			}
			// Each refusal is one Warn line whose req= is that of the
			// request line that says 401.
			warn := regexp.MustCompile(`level=WARN msg="webhook refused" req=(\w+) provider=(\w+) reason="([^"]+)" path=(\S+)`)
			lines := warn.FindAllStringSubmatch(logs.String(), -1)
			if len(lines) != 14 {
				t.Fatalf("%d refusal lines, want 14:\n%s", len(lines), logs.String())
			}
			for _, l := range lines {
				if !regexp.MustCompile(`msg=request req=` + l[1] + ` method=POST path=` + regexp.QuoteMeta(l[4]) + ` status=401`).MatchString(logs.String()) {
					t.Errorf("no 401 request line for req=%s", l[1])
				}
				if l[4] != "/hooks/"+l[2] {
					t.Errorf("refusal of %s logged as %s", l[4], l[2])
				}
			}
			for _, s := range hookSecrets {
				if strings.Contains(logs.String(), s) {
					t.Errorf("a secret is in the client's log")
				}
			}
			// Outside the rules' paths nothing is asked for.
			if status, answer := post(t, env, tun.URL+"/page", nil, []byte("free"), false); status != 200 || answer != "took it" {
				t.Errorf("/page: %d %q", status, answer)
			}
		})
	}
}

// A WebSocket handshake under a rule's path needs a signature too: the
// local handler could take it for a plain GET. Elsewhere WebSockets work.
func TestWebhookWebSocketHandshake(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			svc := &hookService{}
			tun := webhookTunnel(t, env, m, svc, io.Discard)
			ctx := testCtx(t, 20*time.Second)
			_, resp, err := tryDialVisitor(ctx, env, wsURL(tun, "/hooks/github/ws"), nil)
			if err == nil || resp == nil || resp.StatusCode != 401 {
				t.Fatalf("unsigned handshake under /hooks/github: %v, %v", resp, err)
			}
			if resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if svc.count() != 0 {
				t.Errorf("the local service saw the handshake")
			}
			// Signed (over the empty body), it goes through.
			c := dialVisitor(ctx, t, env, wsURL(tun, "/hooks/github/ws"), &websocket.DialOptions{HTTPHeader: hookHeaders(webhook.GitHub, hookSecrets[webhook.GitHub], "", time.Now())})
			if err := echoOnce(ctx, c, "signed", 10*time.Second); err != nil {
				t.Error(err)
			}
			c.Close(websocket.StatusNormalClosure, "")
			c = dialVisitor(ctx, t, env, wsURL(tun, "/ws"), nil)
			if err := echoOnce(ctx, c, "free", 10*time.Second); err != nil {
				t.Error(err)
			}
			c.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// A delivery over webhook.DefaultMaxBody gets 413 from the client, of a
// known length before a byte is read, of unknown length once the cap is
// passed; the tunnel goes on serving.
func TestWebhookBodyOverCap(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{MaxBody: -1}) // the proxy's cap is not the one under test
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			svc := &hookService{}
			tun := webhookTunnel(t, env, m, svc, io.Discard)
			big := bytes.Repeat([]byte("a"), webhook.DefaultMaxBody+1)
			h := hookHeaders(webhook.GitHub, hookSecrets[webhook.GitHub], string(big), time.Now())
			for _, chunked := range []bool{false, true} {
				if status, answer := post(t, env, tun.URL+"/hooks/github", h, big, chunked); status != 413 || answer != "webhook: body too large\n" {
					t.Errorf("chunked %v: %d %q", chunked, status, answer)
				}
			}
			if svc.count() != 0 {
				t.Errorf("the local service saw %d requests", svc.count())
			}
			body := []byte("small")
			if status, _ := post(t, env, tun.URL+"/hooks/github", hookHeaders(webhook.GitHub, hookSecrets[webhook.GitHub], string(body), time.Now()), body, false); status != 200 {
				t.Errorf("after the refusals: %d", status)
			}
		})
	}
}

// The rules name public paths: with a Target that has a path prefix, the
// check is made on the path the provider posted to, not the local one.
func TestWebhookTargetWithPathPrefix(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	svc := &hookService{}
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close)
	target, err := url.Parse(srv.URL + "/app")
	if err != nil {
		t.Fatal(err)
	}
	tun := env.Connect(&client.Client{Target: target, Webhooks: []webhook.Rule{{Provider: webhook.GitHub, Secret: []byte("s"), Path: "/hooks"}}})
	if status, answer := post(t, env, tun.URL+"/hooks/x", nil, []byte("b"), false); status != 401 || answer != "webhook: missing signature\n" {
		t.Errorf("unsigned /hooks/x: %d %q", status, answer)
	}
	if status, _ := post(t, env, tun.URL+"/hooks/x", hookHeaders(webhook.GitHub, "s", "b", time.Now()), []byte("b"), false); status != 200 {
		t.Fatalf("signed /hooks/x: %d", status)
	}
	if req, _ := svc.last(); req.URL.Path != "/app/hooks/x" {
		t.Errorf("the local service saw %s", req.URL.Path)
	}
	// The local path under the prefix is not what the rule names.
	if status, _ := post(t, env, tun.URL+"/app/hooks/x", nil, []byte("b"), false); status != 200 {
		t.Errorf("unsigned /app/hooks/x: %d", status)
	}
}
