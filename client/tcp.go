package client

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// TCPService is a raw TCP service a [Client] publishes (Client.TCP): each
// TCP stream a visitor opens through the proxy becomes a connection to
// Target, carried both ways with half-closes, under the same flow control
// as HTTP bodies.
type TCPService struct {
	// Target is the host:port each visitor's connection is made to, such
	// as "127.0.0.1:5432". Required, except for [Listen].
	Target string
	// VisitorToken, when set, must be presented by every visitor
	// (`client connect --token`, or [Visitor.Dial]'s token): a stream
	// without it, or with another, is refused with a reason the visitor
	// sees. It is compared in constant time, and never logged or sent to
	// the proxy by this side. Default: none, every visitor is let in.
	VisitorToken string
	// RemotePort asks the proxy to expose the service on this public TCP
	// port as well, for visitors who cannot run `client connect`; the
	// proxy's operator must allow it (proxy --tcp-ports), or the
	// registration is refused. Anyone who can reach the port is let in
	// (within AllowIP and DenyIP), so it cannot go with VisitorToken.
	// Default 0: no public port.
	RemotePort int

	// accept, set by Listen instead of Target, takes each stream as a
	// net.Conn.
	accept chan net.Conn
	done   <-chan struct{} // closed when Listen's listener closes
}

func (t *TCPService) remotePort() int {
	if t == nil {
		return 0
	}
	return t.RemotePort
}

func countSet(v ...bool) int {
	n := 0
	for _, b := range v {
		if b {
			n++
		}
	}
	return n
}

// setupTCP checks a TCP client's settings.
func (r *runner) setupTCP() error {
	c, t := r.c, r.c.TCP
	switch {
	case c.Inspect != nil || len(c.Webhooks) > 0 || len(c.BasicAuth) > 0 || c.HostHeader != "" || c.Transport != nil:
		return errors.New("client: Inspect, Webhooks, BasicAuth, HostHeader and Transport are for HTTP tunnels, not TCP")
	case len(t.VisitorToken) > messages.MaxVisitorToken:
		return fmt.Errorf("client: the visitor token is longer than %d bytes", messages.MaxVisitorToken)
	case t.RemotePort < 0 || t.RemotePort > 65535:
		return fmt.Errorf("client: remote port %d is not a TCP port", t.RemotePort)
	case t.RemotePort != 0 && t.VisitorToken != "":
		// The public port's visitors are plain TCP clients: they have no
		// way to present a token.
		return errors.New("client: a public port admits anyone; it cannot be had with a visitor token")
	case t.accept != nil:
		r.target = &url.URL{Scheme: "tcp", Host: "in-process"}
		return nil
	}
	host, port, err := net.SplitHostPort(t.Target)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return fmt.Errorf("client: TCP target %q must be host:port, like 127.0.0.1:5432", t.Target)
	}
	r.target = &url.URL{Scheme: "tcp", Host: t.Target}
	return nil
}

// refusal returns why a stream presenting token may not pass, or "".
func (t *TCPService) refusal(token string) string {
	switch {
	case t == nil:
		return "this hostname is an HTTP tunnel, not a TCP one"
	case t.VisitorToken == "":
		return ""
	case token == "":
		return "this tunnel requires a visitor token (client connect --token)"
	}
	// Digests, so that the comparison takes the same time whatever the
	// lengths.
	a, b := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(t.VisitorToken))
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return "wrong visitor token"
	}
	return ""
}

func (s *session) timeout() time.Duration {
	return time.Duration(s.reg.TimeoutMillis) * time.Millisecond
}

// serveTCP answers a TCP stream the proxy opened: it checks the visitor's
// token, connects to the target (or hands the stream to Listen's caller),
// answers with a TCPResponse and carries the bytes until both directions
// end. A refusal is a reset whose reason the visitor sees.
func (s *session) serveTCP(ctx context.Context, m *messages.TCPRequest, st *stream.Stream) {
	start := time.Now()
	t := s.r.c.TCP
	log := s.log.With("req", m.ID.String())
	if reason := t.refusal(m.Token); reason != "" {
		log.Warn("tcp stream refused", "reason", reason)
		st.Reset(messages.CodeRefused, reason)
		return
	}
	if t.accept != nil {
		s.acceptTCP(ctx, m, st)
		return
	}
	d := net.Dialer{Timeout: s.timeout(), KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", t.Target)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// The visitor hears what happened, not where the target is.
		code, reason := messages.CodeUpstream, "the tunnel's target could not be reached"
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			reason = "the tunnel's target refused the connection"
		case errors.As(err, &ne) && ne.Timeout():
			code, reason = messages.CodeTimeout, "the tunnel's target did not answer in time"
		}
		log.Warn("tcp target unreachable", "target", t.Target, "err", err)
		st.Reset(code, reason)
		return
	}
	defer conn.Close()
	if st.Send(&messages.TCPResponse{ID: m.ID}) != nil {
		return
	}
	err = stream.PumpConn(ctx, st, conn, stream.ConnOptions{ResetCode: messages.CodeUpstream, ResetReason: "the tunnel's target broke the connection"})
	attrs := []any{"target", t.Target, "duration", time.Since(start).Round(time.Millisecond)}
	if err != nil && ctx.Err() == nil {
		attrs = append(attrs, "err", err)
	}
	log.Info("tcp", attrs...)
}

// acceptTCP hands a stream to Listen's caller as a net.Conn, and waits
// until it is over.
func (s *session) acceptTCP(ctx context.Context, m *messages.TCPRequest, st *stream.Stream) {
	t := s.r.c.TCP
	// The answer goes first: data the caller writes must come after it.
	if st.Send(&messages.TCPResponse{ID: m.ID}) != nil {
		return
	}
	over := make(chan struct{})
	conn := stream.NewConn(ctx, st, Addr(s.reg.Hostname), Addr("stream "+m.ID.String()), func() { close(over) })
	timer := time.NewTimer(s.timeout())
	defer timer.Stop()
	select {
	case t.accept <- conn:
	case <-timer.C:
		st.Reset(messages.CodeOverloaded, "the service accepted no connection in time")
		return
	case <-t.done:
		st.Reset(messages.CodeCanceled, "the service stopped listening")
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-over:
	case <-ctx.Done():
	}
}

// Addr is a tunnel's address as a net.Addr: its public URL or hostname.
type Addr string

// Network returns "keyhole".
func (Addr) Network() string { return "keyhole" }

func (a Addr) String() string { return string(a) }

// VisitorURL turns a proxy URL as users write it into the websocket URL
// where visitors of TCP tunnels connect (messages.TCPPath).
func VisitorURL(proxy string) (string, error) {
	u, err := ControlURL(proxy)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(u, controlPath) + messages.TCPPath, nil
}

// visitorPing is how often each side of a visitor connection pings when
// it has sent nothing else; silence for twice as long ends it. The proxy
// uses the same interval (docs/PROTOCOL.md section 16.1).
const visitorPing = 10 * time.Second

// RefusedStreamError is returned by [Visitor.Dial] when the stream was
// refused: by the tunnel's client (a missing or wrong visitor token, a
// target that cannot be reached) or by the proxy (no such tunnel, offline,
// not a TCP tunnel).
type RefusedStreamError struct {
	Host   string
	Reason string
}

func (e *RefusedStreamError) Error() string {
	return fmt.Sprintf("stream to %s refused: %s", e.Host, e.Reason)
}

// Visitor reaches TCP tunnels through a keyhole proxy, as `client connect`
// does: it keeps one websocket to the proxy's visitor endpoint, opened on
// the first Dial and again after it ended, and each connection is a
// stream on it. The zero value of every field is its documented default.
// A Visitor is safe for concurrent use; Close it when done.
type Visitor struct {
	// Proxy is the proxy's URL, as for [Client]. Default
	// "ws://localhost:8080".
	Proxy string
	// TLSConfig verifies a wss:// proxy. Default: the system roots.
	TLSConfig *tls.Config
	// Logger receives connection events. Default: discard.
	Logger *slog.Logger

	mu       sync.Mutex
	cur      *session
	curDone  chan struct{} // closed when cur has ended
	moved    chan struct{} // cur's proxy is draining: the next Dial opens another
	closed   bool
	ctx      context.Context
	cancel   context.CancelFunc
	sessions sync.WaitGroup
}

// Dial opens a TCP stream to the tunnel hostname ("<label>.<domain>"; a
// URL or a port is accepted and ignored), presenting token if the tunnel
// requires one, and returns it once the tunnel's client has connected to
// its target. A refusal is a *RefusedStreamError with the reason. The
// connection's CloseWrite half-closes it; ctx bounds only the dial.
func (v *Visitor) Dial(ctx context.Context, hostname, token string) (net.Conn, error) {
	st, s, forget, err := v.open(ctx, hostname, token)
	if err != nil {
		return nil, err
	}
	return stream.NewConn(s.ctx, st, Addr("visitor"), Addr(tunnelHost(hostname)), forget), nil
}

// Forward carries conn over a new stream to hostname until both
// directions end, or ctx ends, then closes conn: what `client connect`
// does with each connection it accepts. A refusal closes conn at once and
// returns the *RefusedStreamError.
func (v *Visitor) Forward(ctx context.Context, conn net.Conn, hostname, token string) error {
	defer conn.Close()
	st, s, forget, err := v.open(ctx, hostname, token)
	if err != nil {
		return err
	}
	defer forget()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	return stream.PumpConn(ctx, st, conn, stream.ConnOptions{ResetCode: messages.CodeCanceled, ResetReason: "the visitor's connection broke"})
}

// open opens a stream to hostname and waits for its answer; forget ends
// the stream's life on the session.
func (v *Visitor) open(ctx context.Context, hostname, token string) (*stream.Stream, *session, func(), error) {
	host := tunnelHost(hostname)
	if host == "" {
		return nil, nil, nil, fmt.Errorf("client: invalid tunnel hostname %q", hostname)
	}
	if len(token) > messages.MaxVisitorToken {
		return nil, nil, nil, fmt.Errorf("client: the visitor token is longer than %d bytes", messages.MaxVisitorToken)
	}
	s, err := v.session(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	id := messages.NewID()
	st := s.newStream(id, messages.InitialWindow, false)
	tctx, end := s.begin(id, st)
	forget := sync.OnceFunc(end)
	if err := s.send(&messages.TCPRequest{ID: id, Window: messages.InitialWindow, Host: host, Token: token}); err != nil {
		forget()
		return nil, nil, nil, err
	}
	// The answer, within ctx and the session's life.
	wctx, wcancel := context.WithCancel(ctx)
	stop := context.AfterFunc(tctx, wcancel)
	m, err := st.Next(wctx)
	stop()
	wcancel()
	var reset *stream.ResetError
	switch {
	case errors.As(err, &reset):
		forget()
		return nil, nil, nil, &RefusedStreamError{Host: host, Reason: reset.Reason}
	case err != nil:
		st.Reset(messages.CodeCanceled, "dial abandoned")
		forget()
		if ctx.Err() != nil {
			return nil, nil, nil, ctx.Err()
		}
		return nil, nil, nil, errSessionClosed
	}
	if _, ok := m.(*messages.TCPResponse); !ok {
		st.Reset(messages.CodeBadResponse, "expected a TCPResponse")
		forget()
		return nil, nil, nil, fmt.Errorf("client: proxy answered a TCP stream with %v", m.Type())
	}
	return st, s, forget, nil
}

// tunnelHost returns the hostname of a tunnel named by hostname, a URL
// or host:port, lowercased.
func tunnelHost(hostname string) string {
	h := hostname
	if _, rest, ok := strings.Cut(h, "://"); ok {
		h = rest
	}
	h, _, _ = strings.Cut(h, "/")
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "" || strings.ContainsAny(h, " @[]") {
		return ""
	}
	return h
}

// session returns the visitor connection, opening one if none is up.
func (v *Visitor) session(ctx context.Context) (*session, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, net.ErrClosed
	}
	if v.cur != nil {
		select {
		case <-v.curDone:
		case <-v.moved:
		default:
			return v.cur, nil
		}
		v.cur = nil
	}
	if v.ctx == nil {
		v.ctx, v.cancel = context.WithCancel(context.Background())
	}
	u, err := VisitorURL(v.Proxy)
	if err != nil {
		return nil, err
	}
	log := v.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &runner{c: &Client{Proxy: v.Proxy, TLSConfig: v.TLSConfig}, log: log, controlURL: u, maxConcurrent: 1}
	s := r.newSession()
	s.visitor = true
	up := make(chan error, 1)
	done, moved := make(chan struct{}), make(chan struct{}, 1)
	v.sessions.Add(1)
	go func() {
		defer v.sessions.Done()
		defer close(done)
		err := s.runVisitor(v.ctx, up, moved)
		if err != nil && v.ctx.Err() == nil {
			log.Warn("visitor connection ended", "err", err)
		}
	}()
	select {
	case err := <-up:
		if err != nil {
			var refused *RefusedError
			if errors.As(err, &refused) {
				err = errors.New(refused.Reason)
			}
			return nil, err
		}
	case <-ctx.Done():
		// It may still come up; the next Dial will find out.
		return nil, ctx.Err()
	}
	v.cur, v.curDone, v.moved = s, done, moved
	return s, nil
}

// Close ends the visitor connection and every stream on it, and waits
// for it.
func (v *Visitor) Close() error {
	v.mu.Lock()
	v.closed = true
	if v.cancel != nil {
		v.cancel()
	}
	v.mu.Unlock()
	v.sessions.Wait()
	return nil
}

// runVisitor opens a visitor connection, tells up whether it did, and
// serves it until it ends. There is no registration: the visitor opens
// streams, the proxy answers them.
func (s *session) runVisitor(ctx context.Context, up chan<- error, moved chan<- struct{}) error {
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	dctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	err := s.dial(dctx, s.r.controlURL, fmt.Sprintf("the proxy takes no TCP visitors (HTTP 404 at %s); it may be older than this client", messages.TCPPath))
	cancel()
	if err != nil {
		up <- err
		return err
	}
	defer s.ws.CloseNow()
	// What a registration would have said, as section 16 of
	// docs/PROTOCOL.md fixes it for visitor connections.
	s.reg = messages.RegistrationResponse{
		PingMillis:    uint32(visitorPing / time.Millisecond),
		TimeoutMillis: uint32(handshakeTimeout / time.Millisecond),
		MaxWindow:     8 << 20,
		ConnBudget:    16 << 20,
	}
	s.budget = stream.NewBudget(int64(s.reg.ConnBudget), nil)
	up <- nil
	return s.serve(moved)
}

// opensStream reports whether m opens a stream: what only the proxy's
// side sends on a tunnel, and never on a visitor connection.
func opensStream(m messages.Message) bool {
	switch m.(type) {
	case *messages.HTTPRequest, *messages.WSRequest, *messages.TCPRequest:
		return true
	}
	return false
}
