package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/testcert"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// These tests put the public side on TLS with HTTP/2, as a deployment
// would, and carry gRPC (an HTTP/2-only protocol that depends on streaming
// both ways and on trailers) and plain HTTP/2 streams through the tunnel.

// tlsProxy is a proxy serving HTTPS on a loopback listener, with "h2"
// offered through ALPN, and a certificate for "localhost" and
// "*.localhost" from a private CA.
type tlsProxy struct {
	env  *tunneltest.Env // Addr is the TLS listener; for Connect
	ca   *testcert.CA
	port string
}

func startTLSProxyH2(t *testing.T, cfg proxy.Config) *tlsProxy {
	t.Helper()
	ca := testcert.NewCA(t)
	cert := ca.Issue(t, time.Time{}, "localhost", "*.localhost").TLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cfg.Domain = "localhost"
	cfg.PublicURL = "https://localhost:" + port
	cfg.Logger = tunneltest.Logger(t)
	p, err := proxy.New(context.Background(), cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	tlsCfg := proxy.TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
	srv := &http.Server{
		Handler:           p,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    proxy.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Serve, not ServeTLS: on a tls.Listener net/http still sees
		// "h2" in TLSConfig.NextProtos and answers HTTP/2 itself.
		srv.Serve(tls.NewListener(ln, tlsCfg))
	}()
	tp := &tlsProxy{env: &tunneltest.Env{T: t, Proxy: p, Addr: ln.Addr().String()}, ca: ca, port: port}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		srv.Close()
		<-done
	})
	return tp
}

// connect registers c over wss://, trusting the test CA.
func (tp *tlsProxy) connect(c *client.Client) *tunneltest.Tunnel {
	c.Proxy = "wss://localhost:" + tp.port
	c.TLSConfig = &tls.Config{RootCAs: tp.ca.Pool()}
	return tp.env.Connect(c)
}

// startTunnel publishes h in mode m, as the helper of the same name does
// for a plain proxy.
func (tp *tlsProxy) startTunnel(t *testing.T, m mode, h http.Handler) *tunneltest.Tunnel {
	t.Helper()
	if m == handlerMode {
		return tp.connect(&client.Client{Handler: h})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return tp.connect(&client.Client{Target: u})
}

// dial connects to the TLS listener whatever name the caller asked for, so
// tunnel names need no DNS; the name still goes out in SNI and Host.
func (tp *tlsProxy) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	return d.DialContext(ctx, "tcp", tp.env.Addr)
}

// h2Client is an HTTP client that speaks only HTTP/2 to the proxy: a
// connection that did not negotiate "h2" fails instead of falling back.
func (tp *tlsProxy) h2Client(t *testing.T) *http.Client {
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return tp.dial(ctx) },
		TLSClientConfig:    &tls.Config{RootCAs: tp.ca.Pool()},
		Protocols:          new(http.Protocols),
		DisableCompression: true,
		// A response head held back (buffered on the way) fails fast.
		ResponseHeaderTimeout: 3 * time.Second,
	}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// grpcConn is a gRPC client for tun's hostname over TLS, verifying the
// proxy's certificate for that name.
func (tp *tlsProxy) grpcConn(t *testing.T, tun *tunneltest.Tunnel) *grpc.ClientConn {
	t.Helper()
	authority := tun.Host()
	hostname, _, _ := net.SplitHostPort(authority)
	creds := credentials.NewTLS(&tls.Config{RootCAs: tp.ca.Pool(), ServerName: hostname})
	cc, err := grpc.NewClient("passthrough:///"+authority,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return tp.dial(ctx) }),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// streamEnd is what the origin saw of a streaming call once its handler
// returned.
type streamEnd struct {
	method      string
	hasDeadline bool // the call arrived with a grpc-timeout
	err         error
}

// grpcOrigin is a local gRPC server (plain TCP, so h2c) with the standard
// health service, reporting the end of every streaming call.
type grpcOrigin struct {
	addr   string
	health *health.Server
	ended  chan streamEnd
}

func startGRPCOrigin(t *testing.T) *grpcOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &grpcOrigin{addr: ln.Addr().String(), health: health.NewServer(), ended: make(chan streamEnd, 16)}
	srv := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		_, ok := ss.Context().Deadline()
		err := handler(srv, ss)
		select {
		case o.ended <- streamEnd{method: info.FullMethod, hasDeadline: ok, err: err}:
		default: // no test waits for this one
		}
		return err
	}))
	healthpb.RegisterHealthServer(srv, o.health)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		o.health.Shutdown()
		srv.Stop()
		<-done
	})
	return o
}

// target is the client's h2c:// URL for the origin.
func (o *grpcOrigin) target() *url.URL { return &url.URL{Scheme: "h2c", Host: o.addr} }

// nextEnd waits for the origin to report the end of a streaming call.
func (o *grpcOrigin) nextEnd(t *testing.T, within time.Duration) streamEnd {
	t.Helper()
	select {
	case e := <-o.ended:
		return e
	case <-time.After(within):
		t.Fatalf("the origin did not see the stream end within %v", within)
		return streamEnd{}
	}
}

// startGRPCTunnel runs a gRPC origin behind an h2c:// tunnel on a TLS
// proxy and returns a gRPC client for the tunnel's hostname.
func startGRPCTunnel(t *testing.T) (*grpcOrigin, healthpb.HealthClient) {
	t.Helper()
	tp := startTLSProxyH2(t, proxy.Config{})
	o := startGRPCOrigin(t)
	tun := tp.connect(&client.Client{Target: o.target()})
	return o, healthpb.NewHealthClient(tp.grpcConn(t, tun))
}

// TestGRPCUnary: unary calls through the tunnel get the same answers the
// health server gives directly, errors included. A success ends with
// grpc-status in trailers after the message; an error is a trailers-only
// response (a single HEADERS frame that ends the stream).
func TestGRPCUnary(t *testing.T) {
	o, hc := startGRPCTunnel(t)
	o.health.SetServingStatus("keyhole.test.Up", healthpb.HealthCheckResponse_SERVING)
	o.health.SetServingStatus("keyhole.test.Down", healthpb.HealthCheckResponse_NOT_SERVING)
	tests := []struct {
		name     string
		service  string
		wantCode codes.Code
		want     healthpb.HealthCheckResponse_ServingStatus
	}{
		{"whole server", "", codes.OK, healthpb.HealthCheckResponse_SERVING},
		{"serving", "keyhole.test.Up", codes.OK, healthpb.HealthCheckResponse_SERVING},
		{"not serving", "keyhole.test.Down", codes.OK, healthpb.HealthCheckResponse_NOT_SERVING},
		{"unknown service", "keyhole.test.Nope", codes.NotFound, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t, 5*time.Second)
			req := &healthpb.HealthCheckRequest{Service: tt.service}
			direct, directErr := o.health.Check(ctx, req)
			got, err := hc.Check(ctx, req)
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("Check(%q): code %v (%v), want %v", tt.service, code, err, tt.wantCode)
			}
			if err != nil {
				// grpc-message came through too.
				if got, want := status.Convert(err).Message(), status.Convert(directErr).Message(); got != want {
					t.Errorf("Check(%q): message %q, want %q", tt.service, got, want)
				}
				return
			}
			if got.GetStatus() != tt.want || got.GetStatus() != direct.GetStatus() {
				t.Errorf("Check(%q) = %v, want %v (directly: %v)", tt.service, got.GetStatus(), tt.want, direct.GetStatus())
			}
		})
	}
}

// TestGRPCWatch: a server-streaming call delivers each update as it
// happens. The next change is made only after the previous update arrived,
// so an update held anywhere on the way would time the test out.
func TestGRPCWatch(t *testing.T) {
	o, hc := startGRPCTunnel(t)
	const svc = "keyhole.test.Watched"
	o.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		set  healthpb.HealthCheckResponse_ServingStatus // -1: no change, the current status
	}{
		{"initial", -1},
		{"to not serving", healthpb.HealthCheckResponse_NOT_SERVING},
		{"back to serving", healthpb.HealthCheckResponse_SERVING},
		{"not serving again", healthpb.HealthCheckResponse_NOT_SERVING},
	}
	want := healthpb.HealthCheckResponse_SERVING
	for _, s := range steps {
		if s.set >= 0 {
			o.health.SetServingStatus(svc, s.set)
			want = s.set
		}
		got, err := recvWithin(w, 3*time.Second)
		if err != nil {
			t.Fatalf("%s: no update: %v", s.name, err)
		}
		if got.GetStatus() != want {
			t.Fatalf("%s: got %v, want %v", s.name, got.GetStatus(), want)
		}
	}
	cancel()
	o.nextEnd(t, 5*time.Second)
}

// recvWithin receives the next Watch message, or fails after d.
func recvWithin(w grpc.ServerStreamingClient[healthpb.HealthCheckResponse], d time.Duration) (*healthpb.HealthCheckResponse, error) {
	type result struct {
		m   *healthpb.HealthCheckResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := w.Recv()
		ch <- result{m, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(d):
		// The goroutine ends when the test cancels the call.
		return nil, fmt.Errorf("nothing within %v", d)
	}
}

// TestGRPCWatchEnds: a streaming call that the caller cancels, or whose
// deadline passes, ends on the caller's side with that code and promptly,
// and the end reaches the origin, which stops serving the call. The
// deadline goes through as grpc-timeout.
func TestGRPCWatchEnds(t *testing.T) {
	o, hc := startGRPCTunnel(t)
	const svc = "keyhole.test.Ended"
	o.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	tests := []struct {
		name         string
		timeout      time.Duration // 0: no deadline; the test cancels
		wantCodes    []codes.Code
		wantDeadline bool
	}{
		{"canceled", 0, []codes.Code{codes.Canceled}, false},
		// The origin gets the same deadline (grpc-timeout) and the health
		// server then ends the call with Canceled: whichever side's timer
		// fires first decides the code the caller sees. When the origin's
		// fires first and it resets its stream, the tunnel cuts the
		// visitor's stream too, and net/http can reset an HTTP/2 stream
		// only with INTERNAL_ERROR, which gRPC reports as Internal.
		{"deadline", time.Second, []codes.Code{codes.DeadlineExceeded, codes.Canceled, codes.Internal}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatal(err)
			}
			// The first update shows the origin is serving the call.
			if m, err := recvWithin(w, 3*time.Second); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("first update: %v %v", m.GetStatus(), err)
			}
			if tt.timeout == 0 {
				cancel()
			}
			start := time.Now()
			_, err = recvWithin(w, 3*time.Second)
			if code := status.Code(err); !slices.Contains(tt.wantCodes, code) {
				t.Fatalf("Recv after the end: code %v (%v), want one of %v", code, err, tt.wantCodes)
			}
			if d := time.Since(start); d > tt.timeout+2*time.Second {
				t.Errorf("the call took %v to end", d)
			}
			end := o.nextEnd(t, 5*time.Second)
			if end.method != healthpb.Health_Watch_FullMethodName {
				t.Errorf("the origin ended %q, want %q", end.method, healthpb.Health_Watch_FullMethodName)
			}
			if end.hasDeadline != tt.wantDeadline {
				t.Errorf("the origin saw a deadline: %v, want %v", end.hasDeadline, tt.wantDeadline)
			}
		})
	}
}

// TestHTTP2Events: an event stream over an HTTP/2 visitor connection
// delivers each event before the next is written: the local service writes
// event i+1 only once the test has read event i.
func TestHTTP2Events(t *testing.T) {
	tp := startTLSProxyH2(t, proxy.Config{})
	hc := tp.h2Client(t)
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			const n = 4
			token := rand.Text()
			next := make(chan struct{})
			tun := tp.startTunnel(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				rc := http.NewResponseController(w)
				for i := range n {
					fmt.Fprintf(w, "id: %d\ndata: %s-%d\n\n", i, token, i)
					if err := rc.Flush(); err != nil {
						return
					}
					select {
					case <-next:
					case <-r.Context().Done():
						return
					case <-time.After(5 * time.Second):
						return // the test gave up
					}
				}
			}))
			ctx := testCtx(t, 10*time.Second)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tun.URL+"/events", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
				t.Fatalf("got %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
			}
			events := readEvents(resp.Body)
			for i := range n {
				var ev event
				select {
				case ev = <-events:
				case <-time.After(3 * time.Second):
					t.Fatalf("event %d did not arrive within 3s", i)
				}
				if ev.err != nil {
					t.Fatalf("event %d: %v", i, ev.err)
				}
				if want := fmt.Sprintf("id: %d\ndata: %s-%d\n", i, token, i); ev.text != want {
					t.Fatalf("event %d: %q, want %q", i, ev.text, want)
				}
				select {
				case next <- struct{}{}:
				case <-time.After(3 * time.Second):
					t.Fatalf("the local service stopped writing after event %d", i)
				}
			}
			select {
			case ev := <-events:
				if ev.err != io.EOF || ev.text != "" {
					t.Fatalf("after the last event: %q %v, want a clean end", ev.text, ev.err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the stream did not end after the last event")
			}
		})
	}
}

// event is one event of a stream, or the error that ended it.
type event struct {
	text string
	err  error
}

// readEvents reads events from r until it fails, which ends the
// goroutine: at the latest when the test closes the response.
func readEvents(r io.Reader) <-chan event {
	ch := make(chan event, 16)
	go func() {
		br := bufio.NewReader(r)
		for {
			text, err := readEvent(br)
			ch <- event{text, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// readEvent reads one event: lines up to a blank line.
func readEvent(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return sb.String(), err
		}
		if line == "\n" {
			return sb.String(), nil
		}
		sb.WriteString(line)
	}
}

// TestHTTP2ResponseOverMaxBody: a response of unknown length that grows
// past MaxBody never reaches an HTTP/2 visitor as a clean short body. Once
// the head is out, the stream is reset and the visitor's read fails; the
// connection carries on. When head and overflow come at once the proxy may
// also answer 502 before any byte, as a reset discards what was queued.
func TestHTTP2ResponseOverMaxBody(t *testing.T) {
	const max = 64 << 10
	tp := startTLSProxyH2(t, proxy.Config{MaxBody: max})
	hc := tp.h2Client(t)
	tests := []struct {
		name      string
		afterHead bool // the body is written once the visitor has the head
	}{
		{"after the head", true},
		{"at once", false},
	}
	for _, m := range modes {
		for _, tt := range tests {
			t.Run(string(m)+"/"+tt.name, func(t *testing.T) {
				chunk := make([]byte, 16<<10)
				rand.Read(chunk)
				headSeen := make(chan struct{})
				tun := tp.startTunnel(t, m, mux(map[string]http.HandlerFunc{
					"/big": func(w http.ResponseWriter, r *http.Request) {
						rc := http.NewResponseController(w)
						if tt.afterHead {
							w.WriteHeader(http.StatusOK)
							rc.Flush()
							select {
							case <-headSeen:
							case <-r.Context().Done():
								return
							case <-time.After(5 * time.Second):
								return // the test gave up
							}
						}
						for range 4 * max / len(chunk) { // bounded: four times the cap
							if _, err := w.Write(chunk); err != nil {
								return
							}
							if err := rc.Flush(); err != nil {
								return
							}
						}
					},
				}))
				ctx := testCtx(t, 10*time.Second)
				var conns []string
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
					conns = append(conns, i.Conn.LocalAddr().String())
				}}
				get := func(path string) (*http.Response, error) {
					req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, tun.URL+path, nil)
					if err != nil {
						t.Fatal(err)
					}
					return hc.Do(req)
				}
				resp, err := get("/big")
				if err != nil {
					t.Fatal(err)
				}
				close(headSeen)
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.ProtoMajor != 2:
					t.Fatalf("got %s, want HTTP/2", resp.Proto)
				case resp.StatusCode == http.StatusBadGateway && !tt.afterHead:
					t.Logf("502 before any byte of the body")
				case resp.StatusCode != http.StatusOK:
					t.Fatalf("got %d, want 200 and a reset stream", resp.StatusCode)
				case err == nil || errors.Is(err, io.EOF):
					t.Fatalf("read %d bytes and then %v, want a reset stream", len(b), err)
				case len(b) > max:
					t.Errorf("read %d bytes, over MaxBody %d", len(b), max)
				default:
					t.Logf("cut after %d bytes: %v", len(b), err)
				}
				// Only the stream was reset: the next request goes on the
				// same connection.
				resp, err = get("/hello")
				if err != nil {
					t.Fatal(err)
				}
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || string(b) != "hello" {
					t.Fatalf("GET /hello after the reset: %d %q %v", resp.StatusCode, b, err)
				}
				if len(conns) != 2 || conns[0] != conns[1] {
					t.Errorf("connections used: %q, want the same one twice", conns)
				}
			})
		}
	}
}

// TestHTTP2Trailers: trailers the local service sends, declared in advance
// or not, reach an HTTP/2 visitor as trailers.
func TestHTTP2Trailers(t *testing.T) {
	tp := startTLSProxyH2(t, proxy.Config{})
	hc := tp.h2Client(t)
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			body := rand.Text()
			sum := sha256.Sum256([]byte(body))
			declared, late := hex.EncodeToString(sum[:]), rand.Text()
			tun := tp.startTunnel(t, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "X-Checksum")
				io.WriteString(w, body)
				w.Header().Set("X-Checksum", declared)
				w.Header().Set(http.TrailerPrefix+"X-Late", late)
			}))
			ctx := testCtx(t, 10*time.Second)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tun.URL+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.ProtoMajor != 2 || string(b) != body {
				t.Fatalf("got %s %d %q %v, want HTTP/2 and %q", resp.Proto, resp.StatusCode, b, err, body)
			}
			tests := []struct{ name, want string }{
				{"X-Checksum", declared},
				{"X-Late", late},
			}
			for _, tt := range tests {
				if got := resp.Trailer.Get(tt.name); got != tt.want {
					t.Errorf("trailer %s = %q, want %q (all: %v)", tt.name, got, tt.want, resp.Trailer)
				}
			}
		})
	}
}
