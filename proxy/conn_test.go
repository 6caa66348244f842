package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) })
}

func TestNewestConnectionWins(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})

	t.Run("real clients", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		urls := make(chan string, 4)
		first := &client.Client{Proxy: env.ProxyURL(), Key: key, Handler: text("first"), Logger: tunneltest.Logger(t),
			OnRegister: func(u string) { urls <- u }}
		ctx, cancel := context.WithCancel(context.Background())
		firstDone := make(chan error, 1)
		go func() { firstDone <- first.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			<-firstDone
		})
		var url string
		select {
		case url = <-urls:
		case err := <-firstDone:
			t.Fatalf("first client: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("first client did not register")
		}
		if r := get(t, env, url+"/"); r.body != "first" {
			t.Fatalf("before the second connection: %d %q", r.status, r.body)
		}

		second := env.Connect(&client.Client{Key: key, Handler: text("second")})
		if second.URL != url {
			t.Fatalf("same key, another URL: %q and %q", url, second.URL)
		}
		select {
		case err := <-firstDone:
			if !errors.Is(err, client.ErrReplaced) {
				t.Fatalf("first client's Run = %v, want ErrReplaced", err)
			}
			firstDone <- err // for the cleanup
		case <-time.After(10 * time.Second):
			t.Fatal("first client still running after being replaced")
		}
		for range 5 {
			if r := get(t, env, url+"/"); r.status != 200 || r.body != "second" {
				t.Fatalf("after the second connection: %d %q", r.status, r.body)
			}
		}
	})

	t.Run("raw clients", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		first := dialRaw(t, env).register(key)
		second := dialRaw(t, env).register(key)
		if second.url != first.url {
			t.Fatalf("URLs %q and %q", first.url, second.url)
		}
		wantClose(t, first.closed(10*time.Second), proxy.StatusReplaced, "replaced by a newer connection")
		for range 3 {
			ch := goDo(env, second.request(http.MethodGet, "/", nil))
			req := second.nextRequest()
			second.respond(req.ID, 200, nil, []byte("second"))
			if r := await(t, ch, 10*time.Second); r.body != "second" {
				t.Fatalf("got %d %q", r.status, r.body)
			}
		}
		// Nothing was delivered to the old connection.
		for len(first.msgs) > 0 {
			if m := <-first.msgs; m.Type() != messages.TypePing {
				t.Fatalf("replaced connection got %v", m.Type())
			}
		}
	})

	// An exchange in flight on the old connection may still finish; then
	// the old connection is closed.
	t.Run("in flight on the old connection", func(t *testing.T) {
		key := tunneltest.NewKey(t)
		first := dialRaw(t, env).register(key)
		inFlight := goDo(env, first.request(http.MethodGet, "/old", nil))
		req := first.nextRequest()
		second := dialRaw(t, env).register(key)

		newer := goDo(env, second.request(http.MethodGet, "/new", nil))
		req2 := second.nextRequest()
		if req2.URI != "/new" {
			t.Fatalf("second connection got %q", req2.URI)
		}
		second.respond(req2.ID, 200, nil, []byte("second"))
		if r := await(t, newer, 10*time.Second); r.body != "second" {
			t.Fatalf("got %d %q", r.status, r.body)
		}

		first.respond(req.ID, 200, nil, []byte("first, finishing"))
		if r := await(t, inFlight, 10*time.Second); r.status != 200 || r.body != "first, finishing" {
			t.Fatalf("in-flight exchange: %d %q", r.status, r.body)
		}
		wantClose(t, first.closed(10*time.Second), proxy.StatusReplaced, "replaced")
	})
}

// A response for an ID the connection was never sent closes it, and never
// reaches a public caller.
func TestUnknownIDClosesConnection(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: 20 * time.Second})
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	other := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "other")
	}))

	for _, tc := range []struct {
		name  string
		frame func(id messages.ID) messages.Message
	}{
		{"HTTPResponse", func(id messages.ID) messages.Message {
			return &messages.HTTPResponse{ID: id, Status: 200}
		}},
		{"Error", func(id messages.ID) messages.Message { return &messages.Error{ID: id, Code: messages.CodeUpstream} }},
		{"WSResponse", func(id messages.ID) messages.Message { return &messages.WSResponse{ID: id, Status: 101} }},
		{"WSMessage", func(id messages.ID) messages.Message {
			return &messages.WSMessage{ID: id, Opcode: messages.OpText, Data: []byte("bogus")}
		}},
		{"WSTeardown", func(id messages.ID) messages.Message { return &messages.WSTeardown{ID: id, Code: 1000} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, env).register(tunneltest.NewKey(t))
			// A request to this tunnel is pending, and so is one to
			// another tunnel.
			mine := goDo(env, rc.request(http.MethodGet, "/mine", nil))
			req := rc.nextRequest()
			theirs := goDo(env, newRequest(t, http.MethodGet, other.URL+"/theirs", nil))
			<-entered

			bogus := messages.NewID()
			if bogus == req.ID {
				t.Fatal("random IDs collided")
			}
			rc.send(tc.frame(bogus))
			wantClose(t, rc.closed(10*time.Second), websocket.StatusPolicyViolation, "message for an ID this connection does not own")

			r := await(t, mine, 10*time.Second)
			wantPublicError(t, r, http.StatusBadGateway)
			if r.took > 5*time.Second {
				t.Fatalf("pending request answered after %v", r.took)
			}
			release <- struct{}{}
			if r := await(t, theirs, 10*time.Second); r.status != 200 || r.body != "other" {
				t.Fatalf("the other tunnel: %d %q", r.status, r.body)
			}
		})
	}

	// An ID the connection owns, answered with a message of the wrong
	// kind: the connection is closed and the caller gets 502.
	t.Run("WSResponse for an HTTP request", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		ch := goDo(env, rc.request(http.MethodGet, "/", nil))
		req := rc.nextRequest()
		rc.send(&messages.WSResponse{ID: req.ID, Status: 101})
		wantClose(t, rc.closed(10*time.Second), websocket.StatusPolicyViolation, "does not own")
		wantPublicError(t, await(t, ch, 10*time.Second), http.StatusBadGateway)
	})

	// Answering the same ID twice: the first answer is delivered, the
	// second is for an ID the connection no longer owns.
	t.Run("duplicate answer", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		ch := goDo(env, rc.request(http.MethodGet, "/", nil))
		req := rc.nextRequest()
		rc.respond(req.ID, 200, nil, []byte("once"))
		// The second head alone: the proxy closes as soon as it reads it,
		// so anything sent after might meet a closed connection.
		rc.send(&messages.HTTPResponse{ID: req.ID, Status: 200})
		if r := await(t, ch, 10*time.Second); r.status != 200 || r.body != "once" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
		wantClose(t, rc.closed(10*time.Second), websocket.StatusPolicyViolation, "does not own")
	})
}

// TestResetOvertakesData: a client's reset may overtake data it queued
// for the stream earlier (PROTOCOL.md 6.2). That data arrives after the
// Error: it is late, dropped, and the connection carries on; the visitor
// never sees it as part of a whole answer.
func TestResetOvertakesData(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: 20 * time.Second})
	rc := dialRaw(t, env).register(tunneltest.NewKey(t))
	ch := goDo(env, rc.request(http.MethodGet, "/big", nil))
	req := rc.nextRequest()
	rc.send(&messages.HTTPResponse{ID: req.ID, Status: 200, Body: true})
	rc.reserve(req.ID, 2*len("overtaken"))
	rc.send(&messages.Data{ID: req.ID, Data: []byte("overtaken")})
	rc.send(&messages.Error{ID: req.ID, Code: messages.CodeTooLarge})
	rc.send(&messages.Data{ID: req.ID, Data: []byte("overtaken")})
	rc.send(&messages.Data{ID: req.ID, End: true})
	select {
	case r := <-ch:
		if r.err == nil && r.status == 200 {
			t.Fatalf("the reset answer reached the visitor whole: %q", r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the visitor of the reset stream waits on")
	}
	next := goDo(env, rc.request(http.MethodGet, "/next", nil))
	req2 := rc.nextRequest()
	rc.respond(req2.ID, 200, nil, []byte("still here"))
	if r := await(t, next, 10*time.Second); r.status != 200 || r.body != "still here" {
		t.Fatalf("after the late frames: %d %q", r.status, r.body)
	}
}

// IDs bind to the connection they were sent to: B cannot answer a request
// sent to A.
func TestCrossConnectionID(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: 20 * time.Second})
	for _, tc := range []struct {
		name    string
		aAnswer bool // A answers after B's attempt; otherwise A drops
	}{
		{"A answers", true},
		{"A drops", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := dialRaw(t, env).register(tunneltest.NewKey(t))
			b := dialRaw(t, env).register(tunneltest.NewKey(t))
			ch := goDo(env, a.request(http.MethodGet, "/for-a", nil))
			req := a.nextRequest()

			b.send(&messages.HTTPResponse{ID: req.ID, Status: 200})
			wantClose(t, b.closed(10*time.Second), websocket.StatusPolicyViolation, "message for an ID this connection does not own")

			if tc.aAnswer {
				a.respond(req.ID, 200, nil, []byte("from A"))
				if r := await(t, ch, 10*time.Second); r.status != 200 || r.body != "from A" {
					t.Fatalf("got %d %q, want A's answer", r.status, r.body)
				}
				return
			}
			a.ws.Close(websocket.StatusNormalClosure, "")
			r := await(t, ch, 10*time.Second)
			wantPublicError(t, r, http.StatusBadGateway)
			if r.took > 5*time.Second {
				t.Fatalf("answered after %v", r.took)
			}
		})
	}
}

func TestLiveness(t *testing.T) {
	const ping = 200 * time.Millisecond
	env := tunneltest.StartProxy(t, proxy.Config{Ping: ping})

	t.Run("registration announces the interval", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		if rc.resp.PingMillis != uint32(ping/time.Millisecond) {
			t.Fatalf("PingMillis %d", rc.resp.PingMillis)
		}
	})

	t.Run("idle client receives pings", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		start := time.Now()
		for {
			select {
			case m := <-rc.msgs:
				if m.Type() != messages.TypePing {
					t.Fatalf("got %v", m.Type())
				}
				if took := time.Since(start); took > 4*ping {
					t.Fatalf("first ping after %v, want about %v", took, ping)
				}
				return
			case <-rc.done:
				t.Fatalf("closed before a ping: %v", rc.err)
			case <-time.After(10 * time.Second):
				t.Fatal("no ping")
			}
		}
	})

	t.Run("silent client dropped", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		registered := time.Now()
		// It reads (pings arrive) but never writes. No request is sent
		// to it, so only silence can end it.
		err := rc.closed(10 * time.Second)
		took := time.Since(registered)
		// Slack for a loaded machine running with -race.
		if took < 2*ping-50*time.Millisecond || took > 3*ping+600*time.Millisecond {
			t.Fatalf("dropped after %v, want between 2 and 3 ping intervals (%v)", took, ping)
		}
		// A silent peer would not answer a close handshake, so the proxy
		// may drop the connection without one; if it does send a close
		// frame, it says why.
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			wantClose(t, err, websocket.StatusPolicyViolation, "no message for twice the ping interval")
		}
		// The tunnel is offline at once.
		var last result
		tunneltest.Eventually(t, 2*time.Second, "silent client's tunnel answers 502", func() bool {
			last = get(t, env, rc.url+"/")
			return last.status == http.StatusBadGateway
		})
		wantPublicError(t, last, http.StatusBadGateway)
		if last.took > time.Second {
			t.Fatalf("502 took %v", last.took)
		}
	})

	t.Run("pinging client kept", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		stop := make(chan struct{})
		pinged := make(chan struct{})
		go func() {
			defer close(pinged)
			tick := time.NewTicker(ping / 2)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					err := rc.ws.Write(ctx, websocket.MessageBinary, messages.Encode(&messages.Ping{}))
					cancel()
					if err != nil {
						return
					}
				}
			}
		}()
		defer func() { close(stop); <-pinged }()
		// A window several times the drop deadline; a measurement, not a
		// wait for state.
		select {
		case <-rc.done:
			t.Fatalf("pinging client dropped: %v", rc.err)
		case <-time.After(5 * ping):
		}
		ch := goDo(env, rc.request(http.MethodGet, "/", nil))
		req := rc.nextRequest()
		rc.respond(req.ID, 200, nil, []byte("alive"))
		if r := await(t, ch, 10*time.Second); r.body != "alive" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
	})

	t.Run("real client kept", func(t *testing.T) {
		tun := env.Serve(text("alive"))
		<-time.After(5 * ping) // a measuring window, as above
		if r := get(t, env, tun.URL+"/"); r.status != 200 || r.body != "alive" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
	})
}

func TestShutdown(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: 20 * time.Second})
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	}))
	rc := dialRaw(t, env).register(tunneltest.NewKey(t))

	inFlight := goDo(env, newRequest(t, http.MethodGet, tun.URL+"/slow", nil))
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not reached")
	}
	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownDone <- env.Proxy.Shutdown(ctx)
	}()

	// Clients are told to reconnect elsewhere.
	m := rc.next()
	if e, ok := m.(*messages.Error); !ok || e.Code != messages.CodeGoingAway || !e.ID.IsZero() {
		t.Fatalf("got %T %+v, want a connection-level Error CodeGoingAway", m, m)
	}
	// New clients are refused while draining.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ws, resp, err := websocket.Dial(ctx, "ws://"+env.Addr+proxy.ControlPath, &websocket.DialOptions{HTTPClient: env.HTTP}); err == nil {
		ws.CloseNow()
		t.Fatal("a new client connected while draining")
	} else if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new client while draining: %v", err)
	}
	// The in-flight request holds Shutdown back.
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	if r := await(t, inFlight, 10*time.Second); r.status != 200 || r.body != "finished" {
		t.Fatalf("in-flight request: %d %q", r.status, r.body)
	}
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	wantClose(t, rc.closed(5*time.Second), websocket.StatusGoingAway, "shutting down")

	// Shutdown may be called again (the harness does, at cleanup).
	if err := env.Proxy.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// When Shutdown's deadline passes, what is still pending gets 502 at once
// rather than waiting for the request timeout.
func TestShutdownDeadline(t *testing.T) {
	const timeout = 20 * time.Second
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: timeout})
	entered := make(chan struct{}, 1)
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done()
	}))
	pending := goDo(env, newRequest(t, http.MethodGet, tun.URL+"/hang", nil))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := env.Proxy.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Shutdown took %v", took)
	}
	r := await(t, pending, 10*time.Second)
	wantPublicError(t, r, http.StatusBadGateway)
	if r.took > 5*time.Second {
		t.Fatalf("pending request answered after %v, want well under %v", r.took, timeout)
	}
	if !strings.Contains(r.body, "502") {
		t.Fatal(r.body)
	}
}
