package proxy_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/goleak"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// proxy, its client connections and the public requests must all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is a public caller's view of one request.
type result struct {
	status int
	header http.Header
	body   string
	err    error
	took   time.Duration
}

func newRequest(t testing.TB, method, rawURL string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func do(env *tunneltest.Env, req *http.Request) result {
	start := time.Now()
	resp, err := env.HTTP.Do(req)
	if err != nil {
		return result{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: string(b), err: err, took: time.Since(start)}
}

// mustDo makes a request and fails the test if it does not complete.
func mustDo(t testing.TB, env *tunneltest.Env, req *http.Request) result {
	t.Helper()
	r := do(env, req)
	if r.err != nil {
		t.Fatalf("%s %s (Host %s): %v", req.Method, req.URL, req.Host, r.err)
	}
	return r
}

func get(t testing.TB, env *tunneltest.Env, rawURL string) result {
	t.Helper()
	return mustDo(t, env, newRequest(t, http.MethodGet, rawURL, nil))
}

// goDo makes a request in the background.
func goDo(env *tunneltest.Env, req *http.Request) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- do(env, req) }()
	return ch
}

// await waits for a background request.
func await(t testing.TB, ch <-chan result, within time.Duration) result {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("public request: %v", r.err)
		}
		return r
	case <-time.After(within):
		t.Fatalf("public request did not complete within %v", within)
		return result{}
	}
}

// wantPublicError checks a response the proxy answered itself: the fixed,
// short, plain-text message of its status and nothing else.
func wantPublicError(t testing.TB, r result, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %q)", r.status, status, r.body)
	}
	msg := proxy.PublicMessage(status)
	if msg == "" {
		t.Fatalf("no public message for %d", status)
	}
	if r.body != msg+"\n" {
		t.Fatalf("body %q, want %q", r.body, msg+"\n")
	}
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if len(r.body) > 200 {
		t.Fatalf("error body of %d bytes is not short", len(r.body))
	}
	for _, bad := range []string{"error:", "err=", "dial", "EOF", "eof", "websocket", "bus", "registry", "context", "tcp", "127.0.0.1", "goroutine", "panic"} {
		if strings.Contains(r.body, bad) {
			t.Fatalf("error body %q contains %q", r.body, bad)
		}
	}
}

// rawConn is a hand-driven client connection, for sending what the real
// client never would.
type rawConn struct {
	t  testing.TB
	ws *websocket.Conn
	ch messages.Challenge

	// Set by register.
	label string
	url   string
	host  string // label.domain:port, the public Host
	resp  messages.RegistrationResponse

	// Filled by the reader goroutine that register starts.
	msgs    chan messages.Message
	done    chan struct{}
	err     error // why reading stopped; read after done is closed
	started bool

	// Credit the proxy has given, per stream and for the connection (the
	// zero ID), kept by the reader goroutine.
	creditMu sync.Mutex
	credit   map[messages.ID]int
	creditCh chan struct{}
}

// dialRaw opens a control connection and reads the challenge.
func dialRaw(t testing.TB, env *tunneltest.Env) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+env.Addr+proxy.ControlPath, &websocket.DialOptions{
		HTTPClient:      env.HTTP,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		t.Fatalf("dial control endpoint: %v", err)
	}
	ws.SetReadLimit(16 << 20)
	rc := &rawConn{t: t, ws: ws, msgs: make(chan messages.Message, 4096), done: make(chan struct{}),
		credit: map[messages.ID]int{{}: messages.InitialConnWindow}, creditCh: make(chan struct{}, 1)}
	t.Cleanup(rc.close)
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("read challenge: %v", err)
	}
	m, err := messages.Decode(data)
	if err != nil {
		t.Fatalf("decode challenge: %v", err)
	}
	ch, ok := m.(*messages.Challenge)
	if !ok {
		t.Fatalf("first message is %v, want Challenge", m.Type())
	}
	if ch.Nonce == "" || ch.Domain == "" {
		t.Fatalf("incomplete challenge %+v", ch)
	}
	rc.ch = *ch
	return rc
}

func (rc *rawConn) close() {
	rc.ws.CloseNow()
	if rc.started {
		<-rc.done
	}
}

func (rc *rawConn) sendFrame(typ websocket.MessageType, b []byte) {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rc.ws.Write(ctx, typ, b); err != nil {
		rc.t.Fatalf("raw client write: %v", err)
	}
}

func (rc *rawConn) send(m messages.Message) {
	rc.t.Helper()
	rc.sendFrame(websocket.MessageBinary, messages.Encode(m))
}

// readErr reads, before registration has started the reader goroutine,
// until the connection ends, and returns why it ended. Any message other
// than a Ping fails the test.
func (rc *rawConn) readErr() error {
	rc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, data, err := rc.ws.Read(ctx)
		if err != nil {
			return err
		}
		if m, _ := messages.Decode(data); m == nil || m.Type() != messages.TypePing {
			rc.t.Fatalf("got a frame (%x...) where a close was expected", data[:min(len(data), 8)])
		}
	}
}

// register signs the challenge with key, expects to be registered, and
// starts reading in the background.
func (rc *rawConn) register(key crypto.Signer) *rawConn {
	rc.t.Helper()
	jws, err := messages.SignRegistration(key, rc.ch, messages.RegistrationClaims{})
	if err != nil {
		rc.t.Fatal(err)
	}
	return rc.registerJWS(jws)
}

func (rc *rawConn) registerJWS(jws string) *rawConn {
	rc.t.Helper()
	rc.send(&messages.RegistrationRequest{JWS: jws})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := rc.ws.Read(ctx)
	if err != nil {
		rc.t.Fatalf("read registration response: %v", err)
	}
	m, err := messages.Decode(data)
	if err != nil {
		rc.t.Fatal(err)
	}
	resp, ok := m.(*messages.RegistrationResponse)
	if !ok {
		rc.t.Fatalf("got %v, want RegistrationResponse", m.Type())
	}
	rc.resp = *resp
	rc.label, _, _ = strings.Cut(resp.Hostname, ".")
	rc.url = resp.URL
	rc.host = strings.TrimPrefix(resp.URL, "http://")
	rc.started = true
	go rc.readLoop()
	return rc
}

func (rc *rawConn) readLoop() {
	defer close(rc.done)
	for {
		_, data, err := rc.ws.Read(context.Background())
		if err != nil {
			rc.err = err
			return
		}
		m, err := messages.Decode(data)
		if err != nil {
			rc.err = err
			rc.ws.CloseNow()
			return
		}
		frames := []messages.Message{m}
		if b, ok := m.(*messages.Batch); ok {
			frames = frames[:0]
			for _, f := range b.Frames {
				inner, err := messages.Decode(f)
				if err != nil {
					rc.err = err
					rc.ws.CloseNow()
					return
				}
				frames = append(frames, inner)
			}
		}
		for _, m := range frames {
			if !rc.take(m) {
				return
			}
		}
	}
}

// take handles one frame from the proxy: credit is kept, data has its
// connection credit returned at once (the raw client buffers everything),
// and everything else but Ping is queued for next.
func (rc *rawConn) take(m messages.Message) bool {
	switch m := m.(type) {
	case *messages.Credit:
		rc.creditMu.Lock()
		rc.credit[m.ID] += int(m.Increment)
		rc.creditMu.Unlock()
		select {
		case rc.creditCh <- struct{}{}:
		default:
		}
		return true
	case *messages.Data:
		rc.returnConnCredit(len(m.Data))
	case *messages.WSMessage:
		rc.returnConnCredit(len(m.Data))
	}
	select {
	case rc.msgs <- m:
		return true
	default:
		rc.err = errors.New("raw client: message queue full")
		rc.ws.CloseNow()
		return false
	}
}

func (rc *rawConn) returnConnCredit(n int) {
	if n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc.ws.Write(ctx, websocket.MessageBinary, messages.Encode(&messages.Credit{Increment: uint32(n)}))
}

// reserve waits until the proxy has given n bytes of credit on stream id
// and on the connection, and takes them.
func (rc *rawConn) reserve(id messages.ID, n int) {
	rc.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		rc.creditMu.Lock()
		if rc.credit[id] >= n && rc.credit[messages.ID{}] >= n {
			rc.credit[id] -= n
			rc.credit[messages.ID{}] -= n
			rc.creditMu.Unlock()
			return
		}
		rc.creditMu.Unlock()
		select {
		case <-rc.creditCh:
		case <-deadline:
			rc.t.Fatalf("raw client: no credit for %d bytes within 10s", n)
		}
	}
}

// respond answers stream id with a head and the body, in data frames
// within the proxy's credit.
func (rc *rawConn) respond(id messages.ID, status uint16, h messages.Header, body []byte) {
	rc.t.Helper()
	rc.send(&messages.HTTPResponse{ID: id, Status: status, Header: h, Body: len(body) > 0})
	for len(body) > 0 {
		n := min(len(body), messages.MaxData)
		rc.reserve(id, n)
		rc.send(&messages.Data{ID: id, End: n == len(body), Data: body[:n]})
		body = body[n:]
	}
}

// next returns the next message other than a Ping.
func (rc *rawConn) next() messages.Message {
	rc.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-rc.msgs:
			if m.Type() == messages.TypePing {
				continue
			}
			return m
		case <-rc.done:
			// Drain what arrived before the end.
			select {
			case m := <-rc.msgs:
				if m.Type() != messages.TypePing {
					return m
				}
				continue
			default:
			}
			rc.t.Fatalf("raw client connection ended while waiting for a message: %v", rc.err)
		case <-timeout:
			rc.t.Fatal("raw client: no message within 10s")
		}
	}
}

// rawRequest is a request as the raw client received it: the head and,
// when it has one, the whole body.
type rawRequest struct {
	*messages.HTTPRequest
	Body    []byte
	Trailer messages.Header
}

// nextRequest returns the next request, with its body read to the end
// (credit returned as it goes).
func (rc *rawConn) nextRequest() *rawRequest {
	rc.t.Helper()
	m := rc.next()
	for {
		// A reset of an earlier stream may come first.
		if e, ok := m.(*messages.Error); !ok || e.ID.IsZero() {
			break
		}
		m = rc.next()
	}
	head, ok := m.(*messages.HTTPRequest)
	if !ok {
		rc.t.Fatalf("got %v (%+v), want HTTPRequest", m.Type(), m)
	}
	rc.creditMu.Lock()
	rc.credit[head.ID] += int(head.Window)
	rc.creditMu.Unlock()
	req := &rawRequest{HTTPRequest: head}
	if !head.Body {
		return req
	}
	if head.ExpectContinue {
		rc.send(&messages.Credit{ID: head.ID, Increment: messages.InitialWindow})
	}
	for {
		m := rc.next()
		if tr, ok := m.(*messages.Trailer); ok {
			req.Trailer = tr.Header
			return req
		}
		d, ok := m.(*messages.Data)
		if !ok {
			rc.t.Fatalf("got %v (%+v) in a request body", m.Type(), m)
		}
		req.Body = append(req.Body, d.Data...)
		if len(d.Data) > 0 {
			rc.send(&messages.Credit{ID: head.ID, Increment: uint32(len(d.Data))})
		}
		if d.End {
			return req
		}
	}
}

// closed waits for the connection to end and returns why.
func (rc *rawConn) closed(within time.Duration) error {
	rc.t.Helper()
	select {
	case <-rc.done:
		return rc.err
	case <-time.After(within):
		rc.t.Fatalf("raw client connection still open after %v", within)
		return nil
	}
}

// wantClose checks that err is a close frame with code and a reason
// containing reason.
func wantClose(t testing.TB, err error, code websocket.StatusCode, reason string) {
	t.Helper()
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("connection ended with %v, want a close frame %d %q", err, code, reason)
	}
	if websocket.CloseStatus(err) != code || ce.Code != code {
		t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Reason, code)
	}
	if !strings.Contains(ce.Reason, reason) {
		t.Fatalf("close reason %q does not contain %q", ce.Reason, reason)
	}
}

// tunnelRequest is a public request to the raw client's tunnel.
func (rc *rawConn) request(method, path string, body []byte) *http.Request {
	req, err := http.NewRequest(method, rc.url+path, bytes.NewReader(body))
	if err != nil {
		rc.t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	return req
}

// Hand-built registrations, as in messages/registration_test.go.

var b64 = base64.RawURLEncoding

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func jwkJSON(t testing.TB, key any) json.RawMessage {
	t.Helper()
	j, err := jose.JSONWebKey{Key: key}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// handJWS builds a compact JWS from a protected header and payload, signing
// the signing input with sign (nil for an empty signature).
func handJWS(t testing.TB, header map[string]any, payload []byte, sign func([]byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(payload)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + b64.EncodeToString(sig)
}

func edSign(priv ed25519.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte { return ed25519.Sign(priv, in) }
}

// es256Sign signs as JWS ES256 does: SHA-256, then r||s, 32 bytes each.
func es256Sign(t testing.TB, priv *ecdsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		r, s, err := ecdsa.Sign(rand.Reader, priv, d[:])
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	}
}

// regHeader is a correct protected header for ch, with the given alg and
// embedded key.
func regHeader(alg string, jwk json.RawMessage, ch messages.Challenge) map[string]any {
	return map[string]any{"alg": alg, "jwk": jwk, "nonce": ch.Nonce, "keyhole-domain": ch.Domain}
}

// joseSign signs with go-jose under any algorithm.
func joseSign(t testing.TB, alg jose.SignatureAlgorithm, key any, extra map[jose.HeaderKey]any, embed bool) string {
	t.Helper()
	opts := &jose.SignerOptions{EmbedJWK: embed}
	for k, v := range extra {
		opts = opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sizedJWS builds a valid registration for ch that is exactly size bytes
// long, padding the protected header and the token.
func sizedJWS(t testing.TB, key ed25519.PrivateKey, ch messages.Challenge, size int) string {
	t.Helper()
	pub := jwkJSON(t, key.Public())
	const sigLen = 86 // base64 of a 64-byte Ed25519 signature
	for pad := range 4 {
		h := regHeader("EdDSA", pub, ch)
		h["pad"] = strings.Repeat("p", pad)
		hj, _ := json.Marshal(h)
		hLen := b64.EncodedLen(len(hj))
		// The payload {"token":"ttt..."} is 12+n bytes of JSON.
		want := size - hLen - 2 - sigLen
		for n := max(0, want*3/4-16); n <= want*3/4; n++ {
			if b64.EncodedLen(12+n) != want {
				continue
			}
			pj, _ := json.Marshal(messages.RegistrationClaims{Token: strings.Repeat("t", n)})
			jws := handJWS(t, h, pj, edSign(key))
			if len(jws) != size {
				t.Fatalf("built %d bytes, want %d", len(jws), size)
			}
			return jws
		}
	}
	t.Fatalf("cannot build a JWS of exactly %d bytes", size)
	return ""
}
