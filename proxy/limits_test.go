package proxy_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// A connection that never sends its registration is ended once the
// handshake's bound passes; one that registers in time is served.
func TestRegistrationTimeout(t *testing.T) {
	const bound = 300 * time.Millisecond
	var cfg proxy.Config
	proxy.SetRegistrationTimeout(&cfg, bound)
	env := tunneltest.StartProxy(t, cfg)

	rc := dialRaw(t, env)
	start := time.Now()
	if err := rc.readErr(); err == nil {
		t.Fatal("silent connection was not ended")
	}
	if took := time.Since(start); took < bound/2 || took > bound+5*time.Second {
		t.Fatalf("silent connection ended after %v, want about %v", took, bound)
	}

	// Registering promptly is well within the bound.
	dialRaw(t, env).register(tunneltest.NewKey(t))
}

// The exchanges in flight on one client connection are bounded: the limit
// passes, one more is answered 503 at once without reaching the client.
func TestMaxPendingEdge(t *testing.T) {
	const limit = 3
	cfg := proxy.Config{Timeout: 20 * time.Second}
	proxy.SetMaxPending(&cfg, limit)
	env := tunneltest.StartProxy(t, cfg)
	rc := dialRaw(t, env).register(tunneltest.NewKey(t))

	pending := make([]<-chan result, limit)
	ids := make([]messages.ID, limit)
	for i := range limit {
		pending[i] = goDo(env, newRequest(t, http.MethodGet, rc.url+"/slow", nil))
		ids[i] = rc.nextRequest().ID // the client holds it, unanswered
	}
	start := time.Now()
	over := get(t, env, rc.url+"/one-more")
	if over.status != http.StatusServiceUnavailable {
		t.Fatalf("exchange %d: status %d, want 503", limit+1, over.status)
	}
	if over.took > 5*time.Second || time.Since(start) > 5*time.Second {
		t.Fatalf("503 took %v; it must not wait for the timeout", over.took)
	}
	// The refused request never reached the client. Answer the held ones:
	// each caller gets its own answer.
	for i, id := range ids {
		rc.respond(id, 200, nil, []byte{byte('a' + i)})
	}
	for i, ch := range pending {
		r := <-ch
		if r.err != nil || r.status != 200 || r.body != string(rune('a'+i)) {
			t.Fatalf("held request %d: %d %q %v", i, r.status, r.body, r.err)
		}
	}
	select {
	case m := <-rc.msgs:
		if m.Type() == messages.TypeHTTPRequest {
			t.Fatalf("the refused request reached the client: %+v", m)
		}
	default:
	}
}
