package e2e

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// testCtx returns a context that ends with the test, or after d.
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// mode is how the client reaches the local service.
type mode string

const (
	handlerMode mode = "handler" // client.Client{Handler: h}, served in-process
	forwardMode mode = "forward" // client.Client{Target: u}, a real TCP server
)

var modes = []mode{handlerMode, forwardMode}

// startTunnel publishes h through env in the given mode.
func startTunnel(t *testing.T, env *tunneltest.Env, m mode, h http.Handler) *tunneltest.Tunnel {
	t.Helper()
	if m == handlerMode {
		return env.Serve(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return env.Forward(srv.URL)
}

// wsURL turns a tunnel's http:// URL plus path into a ws:// URL.
func wsURL(tun *tunneltest.Tunnel, path string) string {
	return "ws" + strings.TrimPrefix(tun.URL, "http") + path
}

// dialVisitor opens a public WebSocket through the proxy, as a visitor
// would. Its read limit is lifted so that the proxy's limit is the one
// under test.
func dialVisitor(ctx context.Context, t *testing.T, env *tunneltest.Env, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	c, resp, err := tryDialVisitor(ctx, env, url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: status %d: %v", url, status, err)
	}
	return c
}

func tryDialVisitor(ctx context.Context, env *tunneltest.Env, url string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	o := websocket.DialOptions{}
	if opts != nil {
		o = *opts
	}
	o.HTTPClient = env.HTTP
	c, resp, err := websocket.Dial(ctx, url, &o)
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(-1)
	return c, resp, nil
}

// accepted is a local WebSocket the local service accepted, handed to the
// test together with the handshake as the service saw it.
type accepted struct {
	conn *websocket.Conn
	req  *http.Request
}

// local is a local service that accepts upgrades and hands each connection
// to the test, which drives both ends itself. Whatever it accepted is closed
// when the test ends.
type local struct {
	t  *testing.T
	ch chan accepted
}

func newLocal(t *testing.T) *local {
	l := &local{t: t, ch: make(chan accepted, 16)}
	t.Cleanup(func() {
		for {
			select {
			case a := <-l.ch:
				a.conn.CloseNow()
			default:
				return
			}
		}
	})
	return l
}

// accept returns a handler that accepts every upgrade with opts. It returns
// at once: the connection is hijacked and lives on.
func (l *local) accept(opts *websocket.AcceptOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			return
		}
		c.SetReadLimit(-1)
		l.ch <- accepted{conn: c, req: r.Clone(context.Background())}
	}
}

// next waits for the next accepted local connection.
func (l *local) next(ctx context.Context) accepted {
	l.t.Helper()
	select {
	case a := <-l.ch:
		l.t.Cleanup(func() { a.conn.CloseNow() })
		return a
	case <-ctx.Done():
		l.t.Fatal("the local service accepted no WebSocket")
		return accepted{}
	}
}

// echo is a local service that echoes every message until the connection
// ends.
func echo(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	for {
		typ, b, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, b); err != nil {
			return
		}
	}
}

// hello is a plain HTTP endpoint, to show HTTP still flows on a tunnel.
func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }

// mux builds the usual local service: /echo, /hello and whatever extra
// routes the test adds.
func mux(routes map[string]http.HandlerFunc) *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/echo", echo)
	m.HandleFunc("/hello", hello)
	for p, h := range routes {
		m.HandleFunc(p, h)
	}
	return m
}

// echoOnce sends msg on c and expects it back unchanged within d.
func echoOnce(ctx context.Context, c *websocket.Conn, msg string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return fmt.Errorf("write %q: %w", msg, err)
	}
	typ, b, err := c.Read(ctx)
	if err != nil {
		return fmt.Errorf("read echo of %q: %w", msg, err)
	}
	if typ != websocket.MessageText || string(b) != msg {
		return fmt.Errorf("echo of %q: got %v %q", msg, typ, b)
	}
	return nil
}

// getHello fetches /hello through the tunnel and checks the answer.
func getHello(env *tunneltest.Env, tun *tunneltest.Tunnel) error {
	resp, err := env.HTTP.Get(tun.URL + "/hello")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || string(b) != "hello" {
		return fmt.Errorf("GET /hello: %d %q", resp.StatusCode, b)
	}
	return nil
}

// closeErr extracts the close frame that ended a connection, failing the
// test when err is not a close.
func closeErr(t *testing.T, what string, err error) websocket.CloseError {
	t.Helper()
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: want a close frame, got %v", what, err)
	}
	return ce
}

// readUntilClose reads and discards messages until c fails, and returns
// the error, or fails the test if that takes longer than d.
func readUntilClose(t *testing.T, what string, c *websocket.Conn, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: still open after %v", what, d)
		}
		return err
	}
}

// rawUpgrade sends a WebSocket upgrade request to the proxy on a plain TCP
// connection and returns the status line's code, the headers and the body
// of the answer. Unlike a WebSocket library it shows exactly what came back,
// so a test can assert that no 101 was sent.
func rawUpgrade(t *testing.T, env *tunneltest.Env, host, path string) (int, http.Header, string) {
	t.Helper()
	return rawUpgradeWith(t, env, host, path, host)
}

// rawUpgradeWith is rawUpgrade with the Origin http://origin.
func rawUpgradeWith(t *testing.T, env *tunneltest.Env, host, path, origin string) (int, http.Header, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", env.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
		"Origin: http://%s\r\n\r\n", path, host, origin)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer to upgrade: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("upgrade of %s%s was completed (101), want a refusal", host, path)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// rawClient speaks the keyhole protocol by hand, so tests can make a client
// misbehave: ignore requests, answer for IDs it does not own, or vanish.
type rawClient struct {
	t       *testing.T
	ws      *websocket.Conn
	reg     *messages.RegistrationResponse
	pending []messages.Message // the rest of a Batch
}

// dialRaw connects and registers a hand-driven client.
func dialRaw(ctx context.Context, t *testing.T, env *tunneltest.Env) *rawClient {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, "ws://"+env.Addr+proxy.ControlPath, nil)
	if err != nil {
		t.Fatalf("dial control: %v", err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(-1)
	rc := &rawClient{t: t, ws: ws}
	ch, ok := rc.read(ctx).(*messages.Challenge)
	if !ok {
		t.Fatal("first message is not a Challenge")
	}
	_, key, _ := ed25519.GenerateKey(nil)
	jws, err := messages.SignRegistration(key, *ch, messages.RegistrationClaims{})
	if err != nil {
		t.Fatal(err)
	}
	rc.send(ctx, &messages.RegistrationRequest{JWS: jws})
	reg, ok := rc.read(ctx).(*messages.RegistrationResponse)
	if !ok {
		t.Fatal("no RegistrationResponse")
	}
	rc.reg = reg
	return rc
}

// url is the raw client's public URL, plus path, as ws://.
func (rc *rawClient) url(path string) string {
	return "ws" + strings.TrimPrefix(rc.reg.URL, "http") + path
}

func (rc *rawClient) send(ctx context.Context, m messages.Message) {
	rc.t.Helper()
	if err := rc.ws.Write(ctx, websocket.MessageBinary, messages.Encode(m)); err != nil {
		rc.t.Fatalf("raw client: send %T: %v", m, err)
	}
}

// read returns the next message that is not a Ping.
func (rc *rawClient) read(ctx context.Context) messages.Message {
	rc.t.Helper()
	m, err := rc.tryRead(ctx)
	if err != nil {
		rc.t.Fatalf("raw client: read: %v", err)
	}
	return m
}

// tryRead returns the next message that is not a Ping or a Credit, taking
// Batches apart.
func (rc *rawClient) tryRead(ctx context.Context) (messages.Message, error) {
	for {
		if len(rc.pending) > 0 {
			m := rc.pending[0]
			rc.pending = rc.pending[1:]
			switch m.(type) {
			case *messages.Ping, *messages.Credit:
				continue
			}
			return m, nil
		}
		_, b, err := rc.ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		m, err := messages.Decode(b)
		if err != nil {
			return nil, err
		}
		if batch, ok := m.(*messages.Batch); ok {
			for _, f := range batch.Frames {
				inner, err := messages.Decode(f)
				if err != nil {
					return nil, err
				}
				rc.pending = append(rc.pending, inner)
			}
			continue
		}
		rc.pending = append(rc.pending, m)
	}
}

// acceptStream waits for the next WSRequest and accepts it.
func (rc *rawClient) acceptStream(ctx context.Context) *messages.WSRequest {
	rc.t.Helper()
	req, ok := rc.read(ctx).(*messages.WSRequest)
	if !ok {
		rc.t.Fatal("raw client: expected a WSRequest")
	}
	rc.send(ctx, &messages.WSResponse{ID: req.ID, Status: http.StatusSwitchingProtocols})
	return req
}
