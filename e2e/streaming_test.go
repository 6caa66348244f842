package e2e

// End-to-end tests of protocol version 2 streaming: bodies of any size
// and pace cross a real proxy and a real client, flow control keeps
// streams apart, and the limits and time limits hold at their edges.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// stSource returns n bytes of a deterministic pseudo-random stream named
// by seed: both ends can produce or check any body without holding it.
func stSource(seed uint64, n int64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// stSum is the SHA-256 (hex) of stSource(seed, n).
func stSum(seed uint64, n int64) string {
	sum, _, _ := stHash(stSource(seed, n))
	return sum
}

// stHash reads r to its end and returns its SHA-256 (hex) and length.
func stHash(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// stHashHandler answers with the length and SHA-256 of the request body,
// as "<length> <sum>", so the visitor can check what arrived.
func stHashHandler(w http.ResponseWriter, r *http.Request) {
	sum, n, err := stHash(r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d %s", n, sum)
}

// stSourceHandler answers with stSource(seed, n), with a Content-Length
// when known is set and chunked (length unknown) otherwise.
func stSourceHandler(seed uint64, n int64, known bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if known {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		}
		// Copy through a plain writer so that net/http cannot learn the
		// length from the source: an unknown length stays chunked.
		io.Copy(struct{ io.Writer }{w}, stSource(seed, n))
	}
}

// stUnknownLength hides a reader's length from net/http, so a request
// body goes out chunked.
type stUnknownLength struct{ io.Reader }

// stAwait waits for ch, and reports false if ctx ends or a generous bound
// passes first: a local handler never outlives a failed test by much.
func stAwait(ctx context.Context, ch <-chan struct{}) bool {
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// stRaw is a visitor on a plain TCP connection, for requests an HTTP
// client library would not send as written, or not at the pace a test
// needs.
type stRaw struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// stDialRaw connects to the proxy; everything on the connection must be
// done within d.
func stDialRaw(t *testing.T, env *tunneltest.Env, d time.Duration) *stRaw {
	t.Helper()
	conn, err := net.DialTimeout("tcp", env.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(d))
	return &stRaw{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (c *stRaw) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("raw visitor: write: %v", err)
	}
}

// response reads the next response (a 1xx included) to a request with
// method.
func (c *stRaw) response(method string) *http.Response {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("raw visitor: read response: %v", err)
	}
	return resp
}

// stBody reads resp's body to its end, failing the test if it is cut.
func stBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %d response: %v", resp.StatusCode, err)
	}
	return string(b)
}

// stDo sends req through env and returns the status and the whole body.
func stDo(t *testing.T, env *tunneltest.Env, req *http.Request) (int, string) {
	t.Helper()
	resp, err := env.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return resp.StatusCode, stBody(t, resp)
}

// stRequest builds a request; body nil means none.
func stRequest(t *testing.T, ctx context.Context, method, url string, body io.Reader, length int64) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.ContentLength = length // -1: unknown, sent chunked
	}
	return req
}

// Point 1: the proxy passes each piece of a response on as it comes, and
// the head before any piece, whatever the content type: the local handler
// writes the next piece only once the visitor has read the previous one,
// so a proxy that held anything back would deadlock the exchange.
func TestStreamingFlushesEachWrite(t *testing.T) {
	const pieces = 5
	kinds := []struct {
		name, contentType string
		piece             func(i int) []byte
	}{
		{"event-stream", "text/event-stream", func(i int) []byte {
			return fmt.Appendf(nil, "id: %d\nevent: tick\ndata: event number %d\n\n", i, i)
		}},
		{"octet-stream", "application/octet-stream", func(i int) []byte {
			return bytes.Repeat([]byte{byte('a' + i)}, 100+i)
		}},
	}
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		for _, k := range kinds {
			t.Run(string(m)+"/"+k.name, func(t *testing.T) {
				headSeen := make(chan struct{})
				var seen [pieces]chan struct{}
				for i := range seen {
					seen[i] = make(chan struct{})
				}
				tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
					"/stream": func(w http.ResponseWriter, r *http.Request) {
						w.Header().Set("Content-Type", k.contentType)
						w.WriteHeader(http.StatusOK)
						rc := http.NewResponseController(w)
						if rc.Flush() != nil || !stAwait(r.Context(), headSeen) {
							return
						}
						for i := range pieces {
							if _, err := w.Write(k.piece(i)); err != nil {
								return
							}
							if rc.Flush() != nil || !stAwait(r.Context(), seen[i]) {
								return
							}
						}
					},
				}))
				ctx := testCtx(t, 10*time.Second)
				resp, err := env.HTTP.Do(stRequest(t, ctx, http.MethodGet, tun.URL+"/stream", nil, 0))
				if err != nil {
					t.Fatalf("no response head while the handler waits for the visitor to see it: the proxy holds the head back (%v)", err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != k.contentType {
					t.Fatalf("head: %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				close(headSeen)
				for i := range pieces {
					want := k.piece(i)
					got := make([]byte, len(want))
					if _, err := io.ReadFull(resp.Body, got); err != nil {
						t.Fatalf("piece %d of %d did not arrive while the handler waits for it to be read: the proxy buffers the body (%v)", i+1, pieces, err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("piece %d: got %q, want %q", i+1, got, want)
					}
					close(seen[i])
				}
				rest, err := io.ReadAll(resp.Body)
				if err != nil || len(rest) > 0 {
					t.Fatalf("after the last piece: %q, %v; want a clean end", rest, err)
				}
			})
		}
	}
}

// Point 2: bodies far larger than a frame, a window or version 1's limit
// cross whole, in both directions, with and without a known length.
func TestStreamingLargeBodies(t *testing.T) {
	const big = 20 << 20
	cases := []struct {
		name    string
		maxBody int64 // proxy.Config.MaxBody
		upload  bool
		size    int64
		known   bool // the length is announced in Content-Length
	}{
		{"download 20MB chunked", -1, false, big, false},
		{"upload 20MB with Content-Length", -1, true, big, true},
		{"upload 20MB chunked", -1, true, big, false},
		// Version 1 carried a body in one frame and refused both; a cap
		// above them lets them through now.
		{"upload 2MB", 12 << 20, true, 2 << 20, true},
		{"download 10MB", 12 << 20, false, 10 << 20, true},
	}
	envs := map[int64]*tunneltest.Env{}
	for _, c := range cases {
		if envs[c.maxBody] == nil {
			envs[c.maxBody] = tunneltest.StartProxy(t, proxy.Config{MaxBody: limiter.Size(c.maxBody)})
		}
	}
	for _, m := range modes {
		tuns := map[int64]*tunneltest.Tunnel{}
		for maxBody, env := range envs {
			routes := map[string]http.HandlerFunc{"/upload": stHashHandler}
			for i, c := range cases {
				if !c.upload {
					routes[fmt.Sprintf("/download/%d", i)] = stSourceHandler(uint64(i), c.size, c.known)
				}
			}
			tuns[maxBody] = startTunnel(t, env, m, mux(routes))
		}
		for i, c := range cases {
			t.Run(string(m)+"/"+c.name, func(t *testing.T) {
				env, tun := envs[c.maxBody], tuns[c.maxBody]
				ctx := testCtx(t, 60*time.Second)
				want := stSum(uint64(i), c.size)
				if c.upload {
					var body io.Reader = stSource(uint64(i), c.size)
					length := c.size
					if !c.known {
						body, length = stUnknownLength{body}, -1
					}
					status, got := stDo(t, env, stRequest(t, ctx, http.MethodPost, tun.URL+"/upload", body, length))
					if status != http.StatusOK || got != fmt.Sprintf("%d %s", c.size, want) {
						t.Fatalf("upload: %d %q, want 200 %q", status, got, fmt.Sprintf("%d %s", c.size, want))
					}
					return
				}
				resp, err := env.HTTP.Do(stRequest(t, ctx, http.MethodGet, fmt.Sprintf("%s/download/%d", tun.URL, i), nil, 0))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				wantLength := int64(-1)
				if c.known {
					wantLength = c.size
				}
				if resp.StatusCode != http.StatusOK || resp.ContentLength != wantLength {
					t.Fatalf("download: %d with length %d, want 200 with %d", resp.StatusCode, resp.ContentLength, wantLength)
				}
				sum, n, err := stHash(resp.Body)
				if err != nil || n != c.size || sum != want {
					t.Fatalf("download: %d bytes, sum %s, %v; want %d bytes, sum %s", n, sum, err, c.size, want)
				}
			})
		}
	}
}

// stEndless is a local handler that writes a practically endless body (a
// bounded loop of 32 KiB writes) and records how far it got, whether it is
// blocked in a write, and how it ended.
type stEndless struct {
	seed    uint64
	calls   atomic.Int32
	written atomic.Int64
	inWrite atomic.Bool
	err     atomic.Pointer[error] // the write error that ended it
	done    chan struct{}
}

const (
	stChunk      = 32 << 10
	stEndlessMax = 1 << 30 // far more than any test reads
)

func newStEndless(seed uint64) *stEndless { return &stEndless{seed: seed, done: make(chan struct{})} }

func (e *stEndless) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e.calls.Add(1) != 1 {
		http.Error(w, "called twice", http.StatusInternalServerError)
		return
	}
	defer close(e.done)
	src := stSource(e.seed, stEndlessMax)
	buf := make([]byte, stChunk)
	for range stEndlessMax / stChunk {
		if r.Context().Err() != nil {
			err := r.Context().Err()
			e.err.Store(&err)
			return
		}
		io.ReadFull(src, buf)
		e.inWrite.Store(true)
		_, err := w.Write(buf)
		e.inWrite.Store(false)
		if err != nil {
			e.err.Store(&err)
			return
		}
		e.written.Add(stChunk)
	}
}

// failure is the error that ended the handler, if any.
func (e *stEndless) failure() error {
	if p := e.err.Load(); p != nil {
		return *p
	}
	return nil
}

// stalled waits until the handler has been blocked in one write, with
// nothing more written, for a while; it fails the test if the handler
// ended instead, or never settles within d.
func (e *stEndless) stalled(t *testing.T, d time.Duration) int64 {
	t.Helper()
	const quiet = 300 * time.Millisecond
	deadline := time.Now().Add(d)
	last, since := e.written.Load(), time.Now()
	for {
		select {
		case <-e.done:
			t.Fatalf("the stalled stream's handler ended (error %v) after %d bytes: it should still be blocked writing", e.failure(), e.written.Load())
		default:
		}
		n := e.written.Load()
		switch {
		case n != last || !e.inWrite.Load():
			last, since = n, time.Now()
		case time.Since(since) >= quiet:
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handler of a stream nobody reads kept writing: %d bytes after %v", n, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stReadExpect reads n bytes from r and checks them against exp.
func stReadExpect(r, exp io.Reader, n int64) error {
	got := make([]byte, stChunk)
	want := make([]byte, stChunk)
	for done := int64(0); done < n; {
		k := int(min(int64(len(got)), n-done))
		if _, err := io.ReadFull(r, got[:k]); err != nil {
			return fmt.Errorf("after %d bytes: %w", done, err)
		}
		io.ReadFull(exp, want[:k])
		if !bytes.Equal(got[:k], want[:k]) {
			return fmt.Errorf("bytes %d to %d differ from what was sent", done, done+int64(k))
		}
		done += int64(k)
	}
	return nil
}

// Point 3: a visitor that stops reading stalls its own stream and no
// other: a 16 MB download on the same tunnel completes meanwhile, the
// stalled stream stays open with its handler blocked in a write (not
// failed), and it moves again as soon as it is read.
func TestStreamingStalledReaderStallsOnlyItsStream(t *testing.T) {
	const sizeB = 16 << 20
	env := tunneltest.StartProxy(t, proxy.Config{MaxBody: -1})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			a := newStEndless(1)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
				"/a": a.ServeHTTP,
				"/b": stSourceHandler(2, sizeB, false),
			}))
			ctx := testCtx(t, 60*time.Second)
			respA, err := env.HTTP.Do(stRequest(t, ctx, http.MethodGet, tun.URL+"/a", nil, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer respA.Body.Close()
			expA := stSource(1, stEndlessMax)
			if err := stReadExpect(respA.Body, expA, 64<<10); err != nil {
				t.Fatalf("download A: %v", err)
			}
			readA := int64(64 << 10)

			// A is not read from here on, until B is complete.
			respB, err := env.HTTP.Do(stRequest(t, ctx, http.MethodGet, tun.URL+"/b", nil, 0))
			if err != nil {
				t.Fatalf("download B while A is stalled: %v", err)
			}
			sum, n, err := stHash(respB.Body)
			respB.Body.Close()
			if err != nil || n != sizeB || sum != stSum(2, sizeB) {
				t.Fatalf("download B while A is stalled: %d bytes, %v; want %d bytes byte-exact", n, err, sizeB)
			}
			stalledAt := a.stalled(t, 10*time.Second)

			// Reading A again moves it on: bytes past those written before
			// the stall can only come from writes made after it.
			more := stalledAt - readA + 1<<20
			if err := stReadExpect(respA.Body, expA, more); err != nil {
				t.Fatalf("download A after the stall (handler had written %d bytes): %v", stalledAt, err)
			}
			if w := a.written.Load(); w <= stalledAt {
				t.Fatalf("A's handler wrote nothing after A was read again (%d bytes)", w)
			}
			respA.Body.Close()
			select {
			case <-a.done:
			case <-time.After(10 * time.Second):
				t.Fatal("A's handler still runs 10s after the visitor closed A")
			}
			if a.failure() == nil {
				t.Fatal("A's handler ended without a write error: its body was not cut when the visitor left")
			}
		})
	}
}

// Point 4: growing windows, up to a small or the default cap, keep a
// stream byte-exact.
func TestStreamingWindowGrowth(t *testing.T) {
	const size = 8 << 20
	windows := []struct {
		name string
		max  limiter.Size
	}{
		{"max window 1MiB", 1 << 20},
		{"default max window", 0},
	}
	for _, w := range windows {
		env := tunneltest.StartProxy(t, proxy.Config{MaxBody: -1, MaxWindow: w.max})
		for _, m := range modes {
			t.Run(w.name+"/"+string(m), func(t *testing.T) {
				tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/big": stSourceHandler(3, size, false)}))
				ctx := testCtx(t, 60*time.Second)
				resp, err := env.HTTP.Do(stRequest(t, ctx, http.MethodGet, tun.URL+"/big", nil, 0))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				sum, n, err := stHash(resp.Body)
				if err != nil || n != size || sum != stSum(3, size) {
					t.Fatalf("%d bytes, sum %s, %v; want %d bytes byte-exact", n, sum, err, size)
				}
			})
		}
	}
}

// Point 5: Expect: 100-continue across the tunnel. A local service that
// answers without reading spares the upload: the visitor gets the answer
// and never a 100 Continue. One that reads gets the body after the
// visitor got its 100 Continue.
func TestStreamingExpectContinue(t *testing.T) {
	const size = 300 << 10 // more than the initial window
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m)+"/refused without reading", func(t *testing.T) {
			var calls atomic.Int32
			var expect atomic.Value
			bodyBytes := make(chan int64, 1)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
				"/protected": func(w http.ResponseWriter, r *http.Request) {
					calls.Add(1)
					expect.Store(r.Header.Get("Expect"))
					const msg = "who are you\n"
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
					w.WriteHeader(http.StatusUnauthorized)
					io.WriteString(w, msg)
					rc := http.NewResponseController(w)
					rc.Flush()
					// The answer is out (and writing it ruled out a 100
					// Continue): whatever of the body reaches this side now
					// would have been uploaded for nothing.
					rc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					n, _ := io.Copy(io.Discard, r.Body)
					bodyBytes <- n
				},
			}))
			c := stDialRaw(t, env, 10*time.Second)
			c.write(fmt.Sprintf("POST /protected HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", tun.Host(), size))
			resp := c.response(http.MethodPost)
			if resp.StatusCode == http.StatusContinue {
				t.Fatal("got 100 Continue although the local service answered without reading the body")
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401", resp.StatusCode)
			}
			if body := stBody(t, resp); body != "who are you\n" {
				t.Fatalf("body %q", body)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("local handler called %d times, want once", n)
			}
			if e := expect.Load(); e != "100-continue" {
				t.Fatalf("the local service saw Expect %q, want 100-continue", e)
			}
			select {
			case n := <-bodyBytes:
				if n != 0 {
					t.Fatalf("the local service received %d body bytes after answering 401, want none", n)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the local handler did not finish")
			}
		})
		t.Run(string(m)+"/body read", func(t *testing.T) {
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{"/upload": stHashHandler}))
			c := stDialRaw(t, env, 10*time.Second)
			start := time.Now()
			c.write(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", tun.Host(), size))
			resp := c.response(http.MethodPost)
			if resp.StatusCode != http.StatusContinue {
				t.Fatalf("got %d before sending the body, want 100 Continue", resp.StatusCode)
			}
			// The client's transport would send the body anyway after
			// its ExpectContinueTimeout (1s); well before that, the 100
			// can only come from the local service asking for the body.
			if d := time.Since(start); d >= 900*time.Millisecond {
				t.Fatalf("100 Continue after %v: not prompted by the local service", d)
			}
			if _, err := io.Copy(c.conn, stSource(5, size)); err != nil {
				t.Fatalf("send body: %v", err)
			}
			resp = c.response(http.MethodPost)
			want := fmt.Sprintf("%d %s", size, stSum(5, size))
			if body := stBody(t, resp); resp.StatusCode != http.StatusOK || body != want {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
			}
		})
	}
}

// Point 6: trailers cross in both directions over HTTP/1.1, declared and
// undeclared, and "TE: trailers" reaches the local service as exactly that.
func TestStreamingTrailers(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			type seen struct {
				body, trailer string
				te            []string
			}
			got := make(chan seen, 1)
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
				"/trailers": func(w http.ResponseWriter, r *http.Request) {
					b, err := io.ReadAll(r.Body)
					if err != nil {
						http.Error(w, err.Error(), http.StatusBadRequest)
						return
					}
					got <- seen{string(b), r.Trailer.Get("X-Req-Trailer"), r.Header.Values("Te")}
					w.Header().Set("Trailer", "X-Resp-Trailer")
					w.WriteHeader(http.StatusOK)
					io.WriteString(w, "response body")
					http.NewResponseController(w).Flush()
					w.Header().Set("X-Resp-Trailer", "declared value")
					w.Header().Set(http.TrailerPrefix+"X-Undeclared", "undeclared value")
				},
			}))
			c := stDialRaw(t, env, 10*time.Second)
			c.write(fmt.Sprintf("POST /trailers HTTP/1.1\r\nHost: %s\r\nTE: trailers\r\nTrailer: X-Req-Trailer\r\n"+
				"Transfer-Encoding: chunked\r\n\r\n"+
				"7\r\nrequest\r\n5\r\n body\r\n0\r\nX-Req-Trailer: request trailer value\r\n\r\n", tun.Host()))
			resp := c.response(http.MethodPost)
			if body := stBody(t, resp); resp.StatusCode != http.StatusOK || body != "response body" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			var s seen
			select {
			case s = <-got:
			default:
				t.Fatal("the local handler did not read the request")
			}
			if s.body != "request body" || s.trailer != "request trailer value" {
				t.Errorf("local service saw body %q, trailer X-Req-Trailer %q", s.body, s.trailer)
			}
			if len(s.te) != 1 || s.te[0] != "trailers" {
				t.Errorf("local service saw TE %q, want exactly [trailers]", s.te)
			}
			if v := resp.Trailer.Get("X-Resp-Trailer"); v != "declared value" {
				t.Errorf("declared response trailer: %q (trailers %v)", v, resp.Trailer)
			}
			if v := resp.Trailer.Get("X-Undeclared"); v != "undeclared value" {
				t.Errorf("undeclared response trailer: %q (trailers %v)", v, resp.Trailer)
			}
		})
	}
}

// Point 7: a chunked response of unknown length arrives whole, and the
// answers that have no body (HEAD, 204, 304) pass without one: a body
// where none belongs would corrupt the next response on the connection.
func TestStreamingBodylessAndChunked(t *testing.T) {
	const headLength = 12345
	env := tunneltest.StartProxy(t, proxy.Config{})
	chunks := []string{"first chunk, ", "second, ", strings.Repeat("third ", 2000), "last."}
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
				"/chunked": func(w http.ResponseWriter, r *http.Request) {
					for _, c := range chunks {
						io.WriteString(w, c)
						http.NewResponseController(w).Flush()
					}
				},
				"/resource": func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", strconv.Itoa(headLength))
					if r.Method != http.MethodHead {
						io.Copy(w, stSource(7, headLength))
					}
				},
				"/nocontent": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
				"/cached": func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("ETag", `"v1"`)
					w.WriteHeader(http.StatusNotModified)
				},
			}))
			c := stDialRaw(t, env, 10*time.Second)
			host := tun.Host()

			c.write("GET /chunked HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
			resp := c.response(http.MethodGet)
			if len(resp.TransferEncoding) == 0 || resp.ContentLength != -1 {
				t.Errorf("/chunked: Transfer-Encoding %v, length %d; want chunked, unknown length", resp.TransferEncoding, resp.ContentLength)
			}
			if body := stBody(t, resp); body != strings.Join(chunks, "") {
				t.Errorf("/chunked: got %d bytes, want %d byte-exact", len(body), len(strings.Join(chunks, "")))
			}

			c.write("HEAD /resource HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
			resp = c.response(http.MethodHead)
			if resp.StatusCode != http.StatusOK || resp.ContentLength != headLength {
				t.Errorf("HEAD: %d, Content-Length %d; want 200, %d", resp.StatusCode, resp.ContentLength, headLength)
			}
			stBody(t, resp)

			for _, b := range []struct {
				path   string
				status int
			}{{"/nocontent", http.StatusNoContent}, {"/cached", http.StatusNotModified}} {
				c.write("GET " + b.path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
				resp = c.response(http.MethodGet)
				if body := stBody(t, resp); resp.StatusCode != b.status || body != "" {
					t.Errorf("%s: %d %q, want %d with no body", b.path, resp.StatusCode, body, b.status)
				}
			}
			if resp.Header.Get("ETag") != `"v1"` {
				t.Errorf("304: ETag %q", resp.Header.Get("ETag"))
			}

			// Any stray body bytes above would be read as this response.
			c.write("GET /resource HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
			resp = c.response(http.MethodGet)
			body := stBody(t, resp)
			if sum := sha256.Sum256([]byte(body)); resp.StatusCode != http.StatusOK || hex.EncodeToString(sum[:]) != stSum(7, headLength) {
				t.Errorf("GET /resource after the bodyless answers: %d with %d bytes, want 200 byte-exact", resp.StatusCode, len(body))
			}
		})
	}
}

// Point 8: the body limit at its edge, through the real client. A body of
// the limit passes; one byte more is refused before the client is
// contacted when the length is known, and never delivered as a clean short
// body when it is not.
func TestStreamingBodyLimitEdges(t *testing.T) {
	const limit = 1000
	env := tunneltest.StartProxy(t, proxy.Config{MaxBody: limit})
	for _, m := range modes {
		var uploads, completeOver atomic.Int32
		var headSeen atomic.Pointer[chan struct{}] // closed once the visitor has the head
		tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
			"/upload": func(w http.ResponseWriter, r *http.Request) {
				uploads.Add(1)
				b, err := io.ReadAll(r.Body)
				if err == nil && len(b) > limit {
					completeOver.Add(1)
				}
				if err != nil {
					return
				}
				fmt.Fprintf(w, "%d", len(b))
			},
			"/download": func(w http.ResponseWriter, r *http.Request) {
				n, _ := strconv.Atoi(r.URL.Query().Get("n"))
				if r.URL.Query().Has("known") {
					w.Header().Set("Content-Length", strconv.Itoa(n))
					w.Write(bytes.Repeat([]byte("d"), n))
					return
				}
				// Half first, flushed, so the head and some body are out
				// before the limit is reached; with "wait", the rest only
				// once the visitor has the head.
				w.Write(bytes.Repeat([]byte("d"), n/2))
				http.NewResponseController(w).Flush()
				if r.URL.Query().Has("wait") && !stAwait(r.Context(), *headSeen.Load()) {
					return
				}
				w.Write(bytes.Repeat([]byte("d"), n-n/2))
			},
		}))
		uploadCases := []struct {
			name   string
			size   int
			known  bool
			status int
		}{
			{"upload of the limit", limit, true, http.StatusOK},
			{"chunked upload of the limit", limit, false, http.StatusOK},
			{"upload over the limit", limit + 1, true, http.StatusRequestEntityTooLarge},
			{"chunked upload over the limit", limit + 1, false, http.StatusRequestEntityTooLarge},
		}
		for _, c := range uploadCases {
			t.Run(string(m)+"/"+c.name, func(t *testing.T) {
				ctx := testCtx(t, 10*time.Second)
				before := uploads.Load()
				var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("u"), c.size))
				length := int64(c.size)
				if !c.known {
					body, length = stUnknownLength{body}, -1
				}
				status, got := stDo(t, env, stRequest(t, ctx, http.MethodPost, tun.URL+"/upload", body, length))
				if status != c.status {
					t.Fatalf("got %d %q, want %d", status, got, c.status)
				}
				if status == http.StatusOK && got != strconv.Itoa(c.size) {
					t.Fatalf("local service got %s bytes, want %d", got, c.size)
				}
				if c.known && c.status == http.StatusRequestEntityTooLarge && uploads.Load() != before {
					t.Fatal("the client was contacted for a body whose length is over the limit")
				}
				if n := completeOver.Load(); n > 0 {
					t.Fatalf("the local service read %d complete bodies over the limit", n)
				}
			})
		}
		downloadCases := []struct {
			name   string
			size   int
			known  bool
			wait   bool // the handler goes over the limit only once the visitor has the head
			status int  // 0: an incomplete transfer (or, without wait, a 502 page)
		}{
			{"download of the limit", limit, true, false, http.StatusOK},
			{"chunked download of the limit", limit, false, false, http.StatusOK},
			{"download over the limit", limit + 1, true, false, http.StatusBadGateway},
			{"chunked download over the limit after the head", limit + 1, false, true, 0},
			// The client's reset may overtake its head at the proxy, which
			// then answers 502 itself: allowed, as long as no clean 200
			// comes out.
			{"chunked download over the limit racing the head", limit + 1, false, false, 0},
		}
		for _, c := range downloadCases {
			t.Run(string(m)+"/"+c.name, func(t *testing.T) {
				ctx := testCtx(t, 10*time.Second)
				seen := make(chan struct{})
				headSeen.Store(&seen)
				url := fmt.Sprintf("%s/download?n=%d", tun.URL, c.size)
				if c.known {
					url += "&known"
				}
				if c.wait {
					url += "&wait"
				}
				// POST: net/http retries a failed GET, which would hide
				// the incomplete transfer behind a second attempt.
				resp, err := env.HTTP.Do(stRequest(t, ctx, http.MethodPost, url, nil, 0))
				close(seen)
				if c.status == 0 {
					if err != nil {
						if c.wait {
							t.Fatalf("no head although the handler sent it before going over the limit: %v", err)
						}
						return // aborted before the head reached the visitor
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case err != nil:
						// The incomplete transfer this is about.
					case c.wait || resp.StatusCode != http.StatusBadGateway:
						t.Fatalf("a body over the limit ended cleanly: %d with %d bytes; want an incomplete transfer", resp.StatusCode, len(b))
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				body := stBody(t, resp)
				if resp.StatusCode != c.status {
					t.Fatalf("got %d, want %d", resp.StatusCode, c.status)
				}
				if c.status == http.StatusOK && body != strings.Repeat("d", c.size) {
					t.Fatalf("got %d bytes, want %d", len(body), c.size)
				}
			})
		}
	}
}

// stHeaderFields returns n header fields "aK: b" on ten names, as HTTP/1.1
// text, and the header block they make.
func stHeaderFields(n int) (string, messages.Header) {
	var b strings.Builder
	h := messages.Header{}
	for i := range n {
		name := fmt.Sprintf("A%d", i%10)
		fmt.Fprintf(&b, "%s: b\r\n", name)
		h[name] = append(h[name], "b")
	}
	return b.String(), h
}

// stFieldsFor returns the number of "aK: b" fields whose header block
// encodes to size bytes or just under.
func stFieldsFor(size int) int {
	_, one := stHeaderFields(1)
	per := messages.HeaderBlockSize(one) - messages.HeaderBlockSize(messages.Header{})
	return (size - messages.HeaderBlockSize(messages.Header{})) / per
}

// Point 9: the header limit in frame terms. Many tiny fields can pass the
// listener's byte limit and still not fit a head frame: that request gets
// 431 and never reaches the tunnel, which keeps serving a slow request in
// flight; a head just under the limit passes; a local response whose head
// is over the limit gets 502 and the tunnel keeps serving.
func TestStreamingHeaderBlockLimit(t *testing.T) {
	const slack = 512 // for the fields the proxy adds (X-Forwarded-*) and the rest of the head
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			var counted atomic.Int32
			entered, release := make(chan struct{}), make(chan struct{})
			tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
				"/count": func(w http.ResponseWriter, r *http.Request) {
					counted.Add(1)
					n := 0
					for k, vs := range r.Header {
						if len(k) == 2 && k[0] == 'A' {
							n += len(vs)
						}
					}
					io.Copy(io.Discard, r.Body)
					fmt.Fprintf(w, "%d", n)
				},
				"/slow": func(w http.ResponseWriter, r *http.Request) {
					close(entered)
					if stAwait(r.Context(), release) {
						io.WriteString(w, "slow done")
					}
				},
				"/bighead": func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("X-Big", strings.Repeat("x", 72<<10))
					io.WriteString(w, "body")
				},
			}))
			ctx := testCtx(t, 30*time.Second)
			type result struct {
				status int
				body   string
				err    error
			}
			slow := make(chan result, 1)
			slowReq := stRequest(t, ctx, http.MethodGet, tun.URL+"/slow", nil, 0)
			go func() {
				resp, err := env.HTTP.Do(slowReq)
				if err != nil {
					slow <- result{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				slow <- result{resp.StatusCode, string(b), err}
			}()
			if !stAwait(ctx, entered) {
				t.Fatal("the slow request did not reach the local service")
			}

			cases := []struct {
				name   string
				fields int
				body   int
				status int
			}{
				// ~63 KB of text, under the listener's limit, but 11
				// encoded bytes per field against 7 on the wire.
				{"many tiny fields and a body", 9000, 500*1000 - 1, http.StatusRequestHeaderFieldsTooLarge},
				{"just over MaxHead", stFieldsFor(messages.MaxHead) + 1, 0, http.StatusRequestHeaderFieldsTooLarge},
				{"just under MaxHead", stFieldsFor(messages.MaxHead - slack), 10, http.StatusOK},
			}
			for _, c := range cases {
				text, block := stHeaderFields(c.fields)
				if len(text) >= proxy.MaxHeaderBytes {
					t.Fatalf("%s: %d bytes of fields would be refused by the listener; the case must pass it", c.name, len(text))
				}
				size := messages.HeaderBlockSize(block)
				if over := c.status != http.StatusOK; over != (size > messages.MaxHead) {
					t.Fatalf("%s: the fields alone encode to %d bytes, against MaxHead %d", c.name, size, messages.MaxHead)
				}
				before := counted.Load()
				conn := stDialRaw(t, env, 10*time.Second)
				conn.write(fmt.Sprintf("POST /count HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n", tun.Host(), c.body, text))
				// The body goes out on its own: the proxy may answer and
				// close before reading it.
				sent := make(chan struct{})
				go func() {
					defer close(sent)
					io.Copy(conn.conn, bytes.NewReader(make([]byte, c.body)))
				}()
				resp := conn.response(http.MethodPost)
				body, _ := io.ReadAll(resp.Body)
				conn.conn.Close()
				<-sent
				if resp.StatusCode != c.status {
					t.Fatalf("%s: %d fields (%d bytes of text, %d encoded): got %d, want %d", c.name, c.fields, len(text), size, resp.StatusCode, c.status)
				}
				if c.status == http.StatusOK {
					if string(body) != strconv.Itoa(c.fields) {
						t.Fatalf("%s: the local service saw %s of %d fields", c.name, body, c.fields)
					}
				} else if counted.Load() != before {
					t.Fatalf("%s: a head over MaxHead reached the local service", c.name)
				}
			}

			close(release)
			select {
			case r := <-slow:
				if r.err != nil || r.status != http.StatusOK || r.body != "slow done" {
					t.Fatalf("the slow request in flight: %d %q %v; want 200", r.status, r.body, r.err)
				}
			case <-ctx.Done():
				t.Fatal("the slow request in flight never completed")
			}

			status, body := stDo(t, env, stRequest(t, ctx, http.MethodGet, tun.URL+"/bighead", nil, 0))
			if status != http.StatusBadGateway {
				t.Fatalf("a response head of 72 KB: got %d %q, want 502", status, body)
			}
			if err := getHello(env, tun); err != nil {
				t.Fatalf("the tunnel after a response head over the limit: %v", err)
			}
		})
	}
}

// Point 10: Timeout bounds only the wait for the head while nothing moves,
// and IdleTimeout only a stream on which nothing moves.
func TestStreamingTimeLimits(t *testing.T) {
	const (
		timeout = 500 * time.Millisecond
		idle    = time.Second
	)
	// The window is kept at its initial size so that the end of the
	// slow upload, buffered in the client once the proxy is done sending,
	// is read by the local service well within timeout.
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: timeout, IdleTimeout: idle, MaxBody: -1, MaxWindow: messages.InitialWindow})
	const (
		events     = 10
		eventEvery = 300 * time.Millisecond
		uploadSize = 2 << 20
		readEvery  = 50 * time.Millisecond
	)
	routes := map[string]http.HandlerFunc{
		"/events": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			tick := time.NewTicker(eventEvery)
			defer tick.Stop()
			for i := range events {
				fmt.Fprintf(w, "data: %d\n\n", i)
				http.NewResponseController(w).Flush()
				if i == events-1 {
					return
				}
				select {
				case <-tick.C:
				case <-r.Context().Done():
					return
				}
			}
		},
		"/never": func(w http.ResponseWriter, r *http.Request) {
			stAwait(r.Context(), nil)
		},
		"/silent": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "start")
			http.NewResponseController(w).Flush()
			stAwait(r.Context(), nil)
		},
		"/upload": stHashHandler,
		"/slow-reader": func(w http.ResponseWriter, r *http.Request) {
			// Steady but slow: 64 KiB every 50 ms, so credit goes back
			// to the proxy all along.
			tick := time.NewTicker(readEvery)
			defer tick.Stop()
			h := sha256.New()
			var n int64
			for {
				k, err := io.CopyN(h, r.Body, 64<<10)
				n += k
				if err == io.EOF {
					break
				}
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				select {
				case <-tick.C:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
		},
	}
	for _, m := range modes {
		tun := startTunnel(t, env, m, mux(routes))
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			t.Run("event stream outlives both limits", func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t, 20*time.Second)
				start := time.Now()
				status, body := stDo(t, env, stRequest(t, ctx, http.MethodGet, tun.URL+"/events", nil, 0))
				var want strings.Builder
				for i := range events {
					fmt.Fprintf(&want, "data: %d\n\n", i)
				}
				if status != http.StatusOK || body != want.String() {
					t.Fatalf("got %d %q, want all %d events", status, body, events)
				}
				if d := time.Since(start); d < (events-1)*eventEvery*9/10 {
					t.Fatalf("the stream took %v: the handler did not pace it", d)
				}
			})
			t.Run("no answer gets 504", func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t, 20*time.Second)
				start := time.Now()
				status, _ := stDo(t, env, stRequest(t, ctx, http.MethodGet, tun.URL+"/never", nil, 0))
				d := time.Since(start)
				if status != http.StatusGatewayTimeout {
					t.Fatalf("got %d after %v, want 504", status, d)
				}
				if d < timeout*9/10 || d > timeout+3*time.Second {
					t.Fatalf("504 after %v, want about %v", d, timeout)
				}
			})
			t.Run("silent after the head is aborted", func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t, 20*time.Second)
				resp, err := env.HTTP.Do(stRequest(t, ctx, http.MethodPost, tun.URL+"/silent", nil, 0))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				start := time.Now()
				b, err := io.ReadAll(resp.Body)
				d := time.Since(start)
				if err == nil {
					t.Fatalf("a stream silent past IdleTimeout ended cleanly after %v with %q; want an aborted transfer", d, b)
				}
				if ctx.Err() != nil {
					t.Fatalf("a stream silent past IdleTimeout was still open after %v", d)
				}
				if d < idle*9/10 || d > idle+4*time.Second {
					t.Fatalf("aborted after %v, want about %v", d, idle)
				}
			})
			uploads := []struct {
				name, path string
				body       io.Reader
				only       mode // "": both modes
			}{
				// Forwarded over TCP, the local kernel's socket buffers
				// (megabytes on loopback) would take the whole body at
				// once: the tunnel would then rightly see no progress while
				// the service reads its buffers, and answer 504. In-process
				// the buffers are small, so credit keeps coming.
				{"slow local reader", "/slow-reader", stSource(11, uploadSize), handlerMode},
				{"slow steady visitor", "/upload", &stPaced{r: stSource(11, uploadSize), piece: 64 << 10, every: readEvery / 2}, ""},
			}
			for _, u := range uploads {
				if u.only != "" && u.only != m {
					continue
				}
				t.Run(u.name+" outlives Timeout", func(t *testing.T) {
					t.Parallel()
					ctx := testCtx(t, 30*time.Second)
					start := time.Now()
					status, body := stDo(t, env, stRequest(t, ctx, http.MethodPost, tun.URL+u.path, u.body, uploadSize))
					d := time.Since(start)
					want := fmt.Sprintf("%d %s", uploadSize, stSum(11, uploadSize))
					if status != http.StatusOK || body != want {
						t.Fatalf("got %d %q after %v, want 200 %q", status, body, d, want)
					}
					if d <= 2*timeout {
						t.Fatalf("the upload took %v, not much longer than Timeout: the test proves nothing", d)
					}
				})
			}
		})
	}
}

// stPaced hands out at most piece bytes per read, one read per tick of
// every: a visitor uploading steadily but slowly.
type stPaced struct {
	r     io.Reader
	piece int
	every time.Duration
	tick  *time.Ticker
}

func (p *stPaced) Read(b []byte) (int, error) {
	if p.tick == nil {
		p.tick = time.NewTicker(p.every)
	} else {
		<-p.tick.C
	}
	n, err := p.r.Read(b[:min(len(b), p.piece)])
	if err != nil {
		p.tick.Stop()
	}
	return n, err
}

// Point 11: a request body that trickles in, or stalls, gets 408; one that
// keeps a decent pace is not cut however long it takes.
func TestStreamingRequestBodyDeadlines(t *testing.T) {
	const (
		idle   = time.Second
		length = 100000
	)
	env := tunneltest.StartProxy(t, proxy.Config{IdleTimeout: idle, MinBodyRate: 1000})
	cases := []struct {
		name    string
		prefix  int           // bytes sent at once
		piece   int           // then bytes per step
		every   time.Duration // between steps
		status  int
		maxWait time.Duration // from the last byte sent at once
	}{
		{"trickle below the minimum rate", 0, 1, 100 * time.Millisecond, http.StatusRequestTimeout, 5 * time.Second},
		{"part of the body then a stall", 5000, 0, 0, http.StatusRequestTimeout, 5 * time.Second},
		{"steady pace", 0, 5000, 100 * time.Millisecond, http.StatusOK, 0},
	}
	for _, m := range modes {
		tun := startTunnel(t, env, m, mux(map[string]http.HandlerFunc{
			"/upload/": func(w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					return
				}
				fmt.Fprintf(w, "%d", n)
			},
		}))
		for i, c := range cases {
			t.Run(string(m)+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				conn := stDialRaw(t, env, 20*time.Second)
				conn.write(fmt.Sprintf("POST /upload/%d HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", i, tun.Host(), length))
				conn.write(strings.Repeat("p", c.prefix))
				stalled := time.Now()
				stop := make(chan struct{})
				sent := make(chan struct{})
				go func() {
					defer close(sent)
					if c.piece == 0 {
						return
					}
					tick := time.NewTicker(c.every)
					defer tick.Stop()
					for left := length - c.prefix; left > 0; left -= c.piece {
						select {
						case <-tick.C:
						case <-stop:
							return
						}
						if _, err := conn.conn.Write(bytes.Repeat([]byte("s"), min(c.piece, left))); err != nil {
							return
						}
					}
				}()
				resp, err := http.ReadResponse(conn.br, &http.Request{Method: http.MethodPost})
				d := time.Since(stalled)
				close(stop)
				if err != nil {
					conn.conn.Close()
					<-sent
					t.Fatalf("no answer after %v, the connection ended (%v); want %d", d, err, c.status)
				}
				body, _ := io.ReadAll(resp.Body)
				conn.conn.Close()
				<-sent
				if resp.StatusCode != c.status {
					t.Fatalf("got %d %q after %v, want %d", resp.StatusCode, body, d, c.status)
				}
				if c.status == http.StatusOK {
					if string(body) != strconv.Itoa(length) {
						t.Fatalf("the local service read %s bytes, want %d", body, length)
					}
					if d < idle {
						t.Fatalf("the steady upload took %v, not longer than IdleTimeout: the test proves nothing", d)
					}
					return
				}
				if d < idle*9/10 || d > c.maxWait {
					t.Fatalf("408 after %v, want after about %v and before %v", d, idle, c.maxWait)
				}
			})
		}
	}
}

// Point 12: a request with both Transfer-Encoding and Content-Length ends
// its connection, so a request smuggled behind it is never served.
func TestStreamingTransferEncodingWithContentLength(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			var mu sync.Mutex
			var paths []string
			tun := startTunnel(t, env, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, "served "+r.URL.Path)
			}))
			c := stDialRaw(t, env, 10*time.Second)
			c.write("POST /first HTTP/1.1\r\nHost: " + tun.Host() + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" +
				"0\r\n\r\n" +
				"GET /smuggled HTTP/1.1\r\nHost: " + tun.Host() + "\r\n\r\n")
			resp := c.response(http.MethodPost)
			body := stBody(t, resp)
			if resp.StatusCode != http.StatusOK || body != "served /first" {
				t.Fatalf("first request: %d %q", resp.StatusCode, body)
			}
			if !resp.Close {
				t.Fatalf("first request answered without Connection: close (header %q)", resp.Header.Values("Connection"))
			}
			rest, err := io.ReadAll(c.br)
			if err != nil || len(rest) > 0 {
				t.Fatalf("after the first answer: %q, %v; want the connection closed", rest, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != 1 || paths[0] != "/first" {
				t.Fatalf("the local service saw %q, want only /first", paths)
			}
		})
	}
}

// Point 13: CONNECT on a tunnel hostname is refused and never reaches the
// local service.
func TestStreamingConnectRefused(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			var calls atomic.Int32
			tun := startTunnel(t, env, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
			host, _, err := net.SplitHostPort(tun.Host())
			if err != nil {
				t.Fatal(err)
			}
			c := stDialRaw(t, env, 10*time.Second)
			c.write(fmt.Sprintf("CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n", host, host))
			resp := c.response(http.MethodConnect)
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("CONNECT: got %d, want 405", resp.StatusCode)
			}
			if n := calls.Load(); n != 0 {
				t.Fatalf("the local service was called %d times for a CONNECT", n)
			}
			// The tunnel still serves, and this is the local service's
			// first call: no CONNECT reached it meanwhile either.
			if status, body := env.Get(t, tun.URL+"/after"); status != http.StatusOK {
				t.Fatalf("GET after CONNECT: %d %q", status, body)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("the local service was called %d times, want once (the GET)", n)
			}
		})
	}
}

// Point 14: the two sides of different protocol versions say so instead
// of failing obscurely.
func TestStreamingVersionMismatch(t *testing.T) {
	t.Run("version 1 client", func(t *testing.T) {
		env := tunneltest.StartProxy(t, proxy.Config{})
		ctx := testCtx(t, 10*time.Second)
		ws, _, err := websocket.Dial(ctx, "ws://"+env.Addr+messages.LegacyControlPath, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", messages.LegacyControlPath, err)
		}
		defer ws.CloseNow()
		_, _, err = ws.Read(ctx)
		ce := closeErr(t, "version 1 connection", err)
		if ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "upgrade the client") {
			t.Fatalf("closed with %d %q, want 1008 with a reason saying to upgrade the client", ce.Code, ce.Reason)
		}
	})
	t.Run("proxy without version 2", func(t *testing.T) {
		old := httptest.NewServer(http.NotFoundHandler())
		defer old.Close()
		c := &client.Client{Proxy: old.URL, Key: tunneltest.NewKey(t), Handler: http.HandlerFunc(hello), Logger: tunneltest.Logger(t)}
		ctx := testCtx(t, 10*time.Second)
		err := c.Run(ctx)
		var refused *client.RefusedError
		if !errors.As(err, &refused) {
			t.Fatalf("Run against a proxy that 404s the control path: %v, want a *client.RefusedError", err)
		}
		if want := fmt.Sprintf("does not speak keyhole protocol version %d", messages.Version); !strings.Contains(refused.Error(), want) {
			t.Fatalf("refusal %q does not say %q", refused.Error(), want)
		}
	})
}
