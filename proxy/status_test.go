package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func TestUnknownHost404(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	req := newRequest(t, http.MethodGet, "http://"+env.Addr+"/", nil)
	req.Host = "nope.localhost"
	wantPublicError(t, mustDo(t, env, req), http.StatusNotFound)
}

func TestTunnelOffline502(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: 20 * time.Second})
	t.Run("never connected", func(t *testing.T) {
		r := get(t, env, "http://"+strings.Repeat("a", 52)+".localhost/")
		wantPublicError(t, r, http.StatusBadGateway)
		if r.took > 5*time.Second {
			t.Fatalf("took %v: an offline tunnel must answer at once", r.took)
		}
	})
	t.Run("disconnected", func(t *testing.T) {
		tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
		if r := get(t, env, tun.URL+"/"); r.status != 200 || r.body != "up" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
		tun.Stop()
		var last result
		tunneltest.Eventually(t, 5*time.Second, "tunnel answers 502 after its client stopped", func() bool {
			last = get(t, env, tun.URL+"/")
			return last.status == http.StatusBadGateway
		})
		wantPublicError(t, last, http.StatusBadGateway)
		if last.took > 5*time.Second {
			t.Fatalf("took %v", last.took)
		}
	})
}

// Requests still pending when their client drops get 502 at once, not at
// the timeout.
func TestPendingWhenClientDrops502(t *testing.T) {
	const timeout = 20 * time.Second
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: timeout})
	entered := make(chan struct{}, 4)
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done()
	}))
	var pending []<-chan result
	for range 3 {
		pending = append(pending, goDo(env, newRequest(t, http.MethodGet, tun.URL+"/block", nil)))
	}
	for range 3 {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("handler not reached")
		}
	}
	start := time.Now()
	tun.Stop()
	for _, ch := range pending {
		r := await(t, ch, 10*time.Second)
		wantPublicError(t, r, http.StatusBadGateway)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("pending requests answered %v after the client dropped; want well under the %v timeout", took, timeout)
	}

	// A connection that vanishes without a close frame is no different.
	t.Run("connection cut", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		var pending []<-chan result
		for range 3 {
			pending = append(pending, goDo(env, rc.request(http.MethodGet, "/block", nil)))
			rc.nextRequest()
		}
		start := time.Now()
		rc.ws.CloseNow()
		for _, ch := range pending {
			wantPublicError(t, await(t, ch, 10*time.Second), http.StatusBadGateway)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("pending requests answered %v after the connection was cut", took)
		}
	})
}

func TestTimeout504(t *testing.T) {
	const timeout = 300 * time.Millisecond
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: timeout})

	t.Run("real client", func(t *testing.T) {
		released := make(chan struct{}, 1)
		tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-r.Context().Done() // the exchange is canceled after the 504
				released <- struct{}{}
				io.WriteString(w, "late")
				return
			}
			io.WriteString(w, "fast "+r.URL.Path)
		}))
		r := get(t, env, tun.URL+"/slow")
		wantPublicError(t, r, http.StatusGatewayTimeout)
		if r.took < timeout || r.took > timeout+5*time.Second {
			t.Fatalf("504 after %v, want just over %v", r.took, timeout)
		}
		select {
		case <-released: // the client was told to stop
		case <-time.After(5 * time.Second):
			t.Fatal("the local request was not canceled after the timeout")
		}
		// The tunnel still works, and nothing late reaches the next caller.
		for i := range 3 {
			path := "/next" + strconv.Itoa(i)
			if r := get(t, env, tun.URL+path); r.status != 200 || r.body != "fast "+path {
				t.Fatalf("after the timeout: got %d %q", r.status, r.body)
			}
		}
	})

	t.Run("late answer dropped", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		first := goDo(env, rc.request("GET", "/first", nil))
		req1 := rc.nextRequest()
		r := await(t, first, 10*time.Second)
		wantPublicError(t, r, http.StatusGatewayTimeout)
		// The client is told the exchange is over.
		m := rc.next()
		if e, ok := m.(*messages.Error); !ok || e.ID != req1.ID || e.Code != messages.CodeCanceled {
			t.Fatalf("got %T %+v, want Error CodeCanceled for the request", m, m)
		}
		// Its answer comes late anyway: dropped, without closing the
		// connection and without reaching anyone.
		rc.respond(req1.ID, 200, nil, []byte("late answer"))
		second := goDo(env, rc.request("GET", "/second", nil))
		req2 := rc.nextRequest()
		if req2.ID == req1.ID || req2.URI != "/second" {
			t.Fatalf("second request %+v", req2)
		}
		rc.respond(req2.ID, 201, nil, []byte("second answer"))
		if r := await(t, second, 10*time.Second); r.status != 201 || r.body != "second answer" {
			t.Fatalf("second: got %d %q", r.status, r.body)
		}
	})
}

func TestRequestBodyLimit413(t *testing.T) {
	const maxBody = 1000
	env := tunneltest.StartProxy(t, proxy.Config{MaxBody: maxBody})
	// Counted per case: a handler of one case may still be starting when
	// the next case begins.
	var mu sync.Mutex
	hits, complete := map[string]int{}, map[string]int{}
	var running atomic.Int32
	count := func(m map[string]int, c string) int {
		mu.Lock()
		defer mu.Unlock()
		return m[c]
	}
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		running.Add(1)
		defer running.Add(-1)
		c := r.URL.Query().Get("case")
		mu.Lock()
		hits[c]++
		mu.Unlock()
		b, err := io.ReadAll(r.Body)
		if err == nil {
			mu.Lock()
			complete[c]++
			mu.Unlock()
		}
		io.WriteString(w, strconv.Itoa(len(b)))
	}))
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"Content-Length over", maxBody + 1, false, http.StatusRequestEntityTooLarge},
		{"chunked over", maxBody + 1, true, http.StatusRequestEntityTooLarge},
		{"Content-Length far over", 100 * maxBody, false, http.StatusRequestEntityTooLarge},
		{"chunked far over", 100 * maxBody, true, http.StatusRequestEntityTooLarge},
		{"Content-Length at the limit", maxBody, false, http.StatusOK},
		{"chunked at the limit", maxBody, true, http.StatusOK},
		{"empty", 0, false, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.name
			body := bytes.Repeat([]byte("x"), tc.size)
			req := newRequest(t, http.MethodPost, tun.URL+"/upload?case="+url.QueryEscape(c), bytes.NewReader(body))
			if tc.chunked {
				req.Body = io.NopCloser(bytes.NewReader(body))
				req.ContentLength = -1
				req.TransferEncoding = []string{"chunked"}
			}
			r := mustDo(t, env, req)
			if tc.status != http.StatusOK {
				wantPublicError(t, r, tc.status)
				if tc.chunked {
					// The body streams, so the local service may have begun
					// reading it: it must never see it end as if whole.
					tunneltest.Eventually(t, 5*time.Second, "the local service is still reading", func() bool {
						return running.Load() == 0
					})
					if n := count(complete, c); n != 0 {
						t.Fatalf("the local service read a body over the limit to its end %d times", n)
					}
					return
				}
				if n := count(hits, c); n != 0 {
					t.Fatalf("the client was contacted %d times for a body of known length over the limit", n)
				}
				return
			}
			if r.status != 200 || r.body != strconv.Itoa(tc.size) {
				t.Fatalf("got %d %q, want 200 %d", r.status, r.body, tc.size)
			}
			if n := count(hits, c); n != 1 {
				t.Fatalf("handler ran %d times", n)
			}
		})
	}
}

func TestResponseBodyLimit502(t *testing.T) {
	const maxBody = 1000
	env := tunneltest.StartProxy(t, proxy.Config{MaxBody: maxBody})

	// The real client refuses to send an oversized response itself: with
	// a known length before any byte moves (502), and a body of unknown
	// length that grows past the cap is cut, so the visitor sees an
	// incomplete transfer rather than a short body that looks whole.
	t.Run("client", func(t *testing.T) {
		tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			if r.URL.Query().Get("stream") == "" {
				w.Header().Set("Content-Length", strconv.Itoa(n))
			} else {
				w.(http.Flusher).Flush() // the head goes first: the length is unknown
			}
			w.Write(bytes.Repeat([]byte("y"), n))
		}))
		for _, tc := range []struct {
			query  string
			n      int
			status int // 0: an aborted transfer
		}{
			{"", maxBody, 200}, {"", maxBody + 1, 502}, {"", 0, 200}, {"", 10 * maxBody, 502},
			{"&stream=1", maxBody, 200}, {"&stream=1", maxBody + 1, 0}, {"&stream=1", 10 * maxBody, 0},
		} {
			t.Run(strconv.Itoa(tc.n)+tc.query, func(t *testing.T) {
				req := newRequest(t, http.MethodGet, tun.URL+"/?n="+strconv.Itoa(tc.n)+tc.query, nil)
				r := do(env, req)
				switch tc.status {
				case 0:
					// The reset may reach the proxy before the head has
					// gone out: then the visitor gets a clean 502 page,
					// which is as honest.
					if r.err == nil && r.status != 502 {
						t.Fatalf("got %d with %d bytes and no error, want an incomplete transfer or 502", r.status, len(r.body))
					}
					if len(r.body) > maxBody {
						t.Fatalf("%d bytes passed the cap", len(r.body))
					}
				case 200:
					if r.err != nil || r.status != 200 || len(r.body) != tc.n {
						t.Fatalf("got %d with %d bytes, %v", r.status, len(r.body), r.err)
					}
				default:
					if r.err != nil {
						t.Fatal(r.err)
					}
					wantPublicError(t, r, tc.status)
				}
			})
		}
	})

	// The proxy checks too, whatever the client sends.
	t.Run("proxy", func(t *testing.T) {
		rc := dialRaw(t, env).register(tunneltest.NewKey(t))
		for _, tc := range []struct {
			n      int
			length bool // the head declares the length
			status int  // 0: an aborted transfer
		}{{maxBody + 1, true, 502}, {maxBody, true, 200}, {maxBody, false, 200}, {maxBody + 1, false, 0}, {1, false, 200}} {
			t.Run(fmt.Sprintf("%d/length=%v", tc.n, tc.length), func(t *testing.T) {
				// POST: an HTTP client retries a GET whose connection
				// closes before the head, which would hide the abort.
				ch := goDo(env, rc.request("POST", "/", nil))
				req := rc.nextRequest()
				var h messages.Header
				if tc.length {
					h = messages.Header{"Content-Length": {strconv.Itoa(tc.n)}}
				}
				rc.respond(req.ID, 200, h, bytes.Repeat([]byte("z"), tc.n))
				var r result
				select {
				case r = <-ch:
				case <-time.After(10 * time.Second):
					t.Fatal("no answer within 10s")
				}
				switch tc.status {
				case 0:
					if r.err == nil {
						t.Fatalf("got %d with %d bytes and no error, want an incomplete transfer", r.status, len(r.body))
					}
				case 200:
					if r.err != nil || r.status != 200 || len(r.body) != tc.n {
						t.Fatalf("got %d with %d bytes, %v", r.status, len(r.body), r.err)
					}
				default:
					if r.err != nil {
						t.Fatal(r.err)
					}
					wantPublicError(t, r, tc.status)
				}
			})
		}
	})
}

func TestRateLimit429(t *testing.T) {
	const burst = 3
	env := tunneltest.StartProxy(t, proxy.Config{Rate: 0.001, Burst: burst})
	var hits atomic.Int32
	tun := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	for i := range burst {
		if r := get(t, env, tun.URL+"/"); r.status != 200 || r.body != "ok" {
			t.Fatalf("request %d within the burst: %d %q", i+1, r.status, r.body)
		}
	}
	for i := range 2 {
		r := get(t, env, tun.URL+"/")
		wantPublicError(t, r, http.StatusTooManyRequests)
		ra, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || ra < 1 {
			t.Fatalf("request %d over the burst: Retry-After %q", burst+i+1, r.header.Get("Retry-After"))
		}
	}
	if n := hits.Load(); n != burst {
		t.Fatalf("handler ran %d times, want %d", n, burst)
	}
	// The limit is per client connection: another tunnel is unaffected.
	other := env.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "other") }))
	if r := get(t, env, other.URL+"/"); r.status != 200 || r.body != "other" {
		t.Fatalf("another tunnel: %d %q", r.status, r.body)
	}
}

// The proxy maps each Error a client may answer with to its status, and
// never shows the client's reason to the public.
func TestClientErrorsMapped(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	rc := dialRaw(t, env).register(tunneltest.NewKey(t))
	const internal = "dial tcp 127.0.0.1:3000: connect: connection refused; error: EOF"
	for _, tc := range []struct {
		name       string
		code       messages.ErrorCode
		retryAfter uint32
		status     int
	}{
		{"upstream unreachable", messages.CodeUpstream, 0, 502},
		{"bad response", messages.CodeBadResponse, 0, 502},
		{"too large", messages.CodeTooLarge, 0, 502},
		{"unavailable", messages.CodeUnavailable, 0, 502},
		{"local timeout", messages.CodeTimeout, 0, 504},
		{"overloaded", messages.CodeOverloaded, 0, 503},
		{"rate limited", messages.CodeRateLimited, 7, 429},
		{"rate limited, no hint", messages.CodeRateLimited, 0, 429},
		{"unknown code", messages.ErrorCode(4242), 0, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := goDo(env, rc.request("GET", "/", nil))
			req := rc.nextRequest()
			rc.send(&messages.Error{ID: req.ID, Code: tc.code, RetryAfter: tc.retryAfter, Reason: internal})
			r := await(t, ch, 10*time.Second)
			wantPublicError(t, r, tc.status)
			if tc.status == 429 {
				want := strconv.Itoa(int(max(1, tc.retryAfter)))
				if got := r.header.Get("Retry-After"); got != want {
					t.Fatalf("Retry-After %q, want %q", got, want)
				}
			} else if r.header.Get("Retry-After") != "" {
				t.Fatalf("Retry-After on %d", tc.status)
			}
		})
	}
}
