package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// Close codes the proxy uses on client connections, besides the RFC 6455
// ones. Clients print the reason that comes with them.
const (
	// StatusReplaced closes a connection whose key registered again on a
	// newer connection. The client must not reconnect.
	StatusReplaced = websocket.StatusCode(messages.CloseReplaced)
)

// hostEntry is a hostname whose client this instance holds.
type hostEntry struct {
	conn *clientConn
}

// clientConn is one registered client websocket. The HTTP handler goroutine
// reads; a writer goroutine, while there is something to write, writes and
// closes; the instance's scheduler pings (see connio.go).
type clientConn struct {
	p        *Proxy
	ws       *websocket.Conn
	holder   string // instance/conn, the registry value
	label    string
	log      *slog.Logger
	rate     *limiter.Rate
	out      outQueue           // frames for the client; holds nothing while idle
	in       *stream.ConnWindow // the client's connection credit towards us
	closing  chan struct{}
	lastRead atomic.Int64 // unix nanos
	connIO

	closeOnce   sync.Once
	closeCode   websocket.StatusCode
	closeReason string

	mu         sync.Mutex
	streams    map[messages.ID]*relay // streams routed to this client, and tombstones
	live       int                    // streams in streams that are not tombstones
	handedOff  map[messages.ID]string // streams passed to the successor: their later frames follow
	gone       bool                   // replaced or closing: deliver nothing more
	replacedAt time.Time              // when a newer connection took over
	successor  string                 // the holder that replaced this one, when known
}

// maxConnWindow caps the growth of a client connection's window. The
// data it covers is never held here: the holder passes each frame on as it
// reads it.
const maxConnWindow = 16 << 20

// maxControlQueue bounds the control frames (heads, credit, resets) waiting
// to be written to one client. A client that reads nothing fills it, and
// new requests for it then get 503.
const maxControlQueue = 4 << 20

// serveControl accepts a client websocket, runs the registration handshake
// and then serves the connection until it ends.
func (p *Proxy) serveControl(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" {
		// Only keyhole clients connect here; a page in a browser must not
		// be able to register a tunnel with a visitor's connection.
		publicError(w, http.StatusForbidden)
		return
	}
	if p.isDraining() || !p.track() {
		// A client connecting now must go to an instance that stays.
		publicError(w, http.StatusServiceUnavailable)
		return
	}
	defer p.wg.Done()
	ws, conn, err := wsbuf.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return // Accept wrote the HTTP error
	}
	ws.SetReadLimit(-1) // register reads at most registrationReadLimit
	// Nothing cancels the request's context while a hijacked connection's
	// handler runs, and deriving the handshake's timeouts from it would
	// leave a map of children in it for the life of the connection.
	rctx := context.WithoutCancel(r.Context())
	label, reg, ok := p.register(rctx, ws)
	if !ok {
		return
	}
	c := &clientConn{
		p:       p,
		ws:      ws,
		holder:  newHolder(p.instance, time.Now()),
		label:   label,
		rate:    limiter.NewRate(p.cfg.Rate, p.cfg.Burst),
		in:      stream.NewConnWindow(messages.InitialConnWindow, maxConnWindow),
		closing: make(chan struct{}),
		streams: make(map[messages.ID]*relay),
		connIO:  connIO{conn: conn},
	}
	c.out = outQueue{stream.NewWriter(messages.InitialConnWindow, maxControlQueue), c}
	c.log = p.log.With("host", label, "conn", c.holder)
	c.lastRead.Store(time.Now().UnixNano())
	// Written first, and alone (never in a Batch: the client reads it with
	// its handshake read limit), by run after attach: once the registry
	// names c, requests may be queued for it, and the client must hear
	// this first. If attach fails it is never sent.
	resp := &messages.RegistrationResponse{
		Hostname:          label + "." + p.cfg.Domain,
		URL:               p.cfg.tunnelURL(label),
		PingMillis:        uint32(p.cfg.Ping / time.Millisecond),
		TimeoutMillis:     uint32(p.cfg.Timeout / time.Millisecond),
		IdleTimeoutMillis: uint32(p.cfg.IdleTimeout / time.Millisecond),
		MaxBody:           uint32(p.cfg.MaxBody),
		MaxWindow:         uint32(p.cfg.MaxWindow),
		ConnBudget:        uint32(p.cfg.ConnWindowBudget),
	}
	first := messages.Encode(resp)
	actx, cancel := context.WithTimeout(rctx, p.cfg.registrationTimeout)
	err = p.attach(actx, c)
	cancel()
	if err != nil {
		c.log.Error("register hostname", "err", err)
		ws.Close(websocket.StatusTryAgainLater, "proxy unavailable, try again")
		return
	}
	ws.SetReadLimit(messages.MaxFrame)
	c.log.Info("client registered", "remote", r.RemoteAddr, "token", reg.Claims.Token != "")
	p.metrics.clientConnected(1)
	defer p.metrics.clientConnected(-1)

	c.run(first)
	// Gone before the queue closes: a request arriving in between is
	// told the connection left (and may be tried elsewhere), not that its
	// queue is full.
	c.failPending()
	c.out.Close()
	p.detach(c)
	c.log.Info("client disconnected", "code", c.closeCode, "reason", c.closeReason)
}

// register runs the challenge-response handshake and reports the verified
// hostname label. On failure it closes ws with a policy violation and a
// reason the client prints.
func (p *Proxy) register(ctx context.Context, ws *websocket.Conn) (string, *messages.Registration, bool) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.registrationTimeout)
	defer cancel()
	ch := messages.Challenge{Nonce: randomToken(16), Domain: p.cfg.Domain}
	issued := time.Now()
	if err := ws.Write(ctx, websocket.MessageBinary, messages.Encode(&ch)); err != nil {
		ws.CloseNow()
		return "", nil, false
	}
	refuse := func(reason string) (string, *messages.Registration, bool) {
		p.log.Info("registration refused", "reason", reason)
		ws.Close(websocket.StatusPolicyViolation, closeReason(reason))
		return "", nil, false
	}
	typ, rd, err := ws.Reader(ctx)
	if err != nil {
		ws.CloseNow()
		return "", nil, false
	}
	if typ != websocket.MessageBinary {
		return refuse("registration required before any other message")
	}
	data, err := io.ReadAll(io.LimitReader(rd, messages.MaxPreRegistration+1))
	if err != nil {
		ws.CloseNow()
		return "", nil, false
	}
	if len(data) > messages.MaxPreRegistration {
		// Close discards the rest of the message unread.
		return refuse(fmt.Sprintf("registration larger than %d bytes", messages.MaxJWS))
	}
	m, err := messages.Decode(data)
	if errors.Is(err, messages.ErrVersion) {
		return refuse(fmt.Sprintf("unsupported protocol version: this proxy speaks version %d", messages.Version))
	}
	req, ok := m.(*messages.RegistrationRequest)
	if err != nil || !ok {
		return refuse("registration required before any other message")
	}
	if time.Since(issued) > p.cfg.challengeTTL {
		return refuse("challenge expired")
	}
	reg, err := messages.VerifyRegistration(req.JWS, ch)
	if err != nil {
		// The close code already says "refused"; the reason says why.
		return refuse(strings.TrimPrefix(err.Error(), messages.ErrRefused.Error()+": "))
	}
	if t := p.cfg.RegistrationToken; t != "" && !constantTimeEqual(reg.Claims.Token, t) {
		return refuse("a valid registration token is required")
	}
	if !p.permits(reg.Label) {
		return refuse(refusedByAccess)
	}
	if p.isDraining() {
		ws.Close(websocket.StatusGoingAway, "proxy shutting down, reconnect")
		return "", nil, false
	}
	return reg.Label, reg, true
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// closeReason fits a reason into a close frame.
func closeReason(s string) string { return messages.CloseReason(s) }

// legacyRefusal is what a version 1 client hears: it prints the reason and
// stops, as for any refused registration.
var legacyRefusal = fmt.Sprintf("this proxy speaks keyhole protocol version %d; upgrade the client", messages.Version)

// refuseLegacy answers a version 1 client, which connects at
// messages.LegacyControlPath, with a refusal that says to upgrade.
func (p *Proxy) refuseLegacy(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" || !isWebSocketUpgrade(r) {
		publicError(w, http.StatusNotFound)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	p.log.Info("registration refused", "reason", "protocol version 1", "remote", r.RemoteAddr)
	ws.Close(websocket.StatusPolicyViolation, legacyRefusal)
}

// attach makes c the holder of its hostname on this instance and in the
// registry, and tells the instance holding an older connection for it, if
// any, that it was replaced.
func (p *Proxy) attach(ctx context.Context, c *clientConn) error {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	// Routable before the registry names it: a request published for c
	// as soon as the claim is visible must find it.
	p.mu.Lock()
	p.conns[c.holder] = c
	p.mu.Unlock()
	prev, err := p.reg.Claim(ctx, c.label, c.holder, p.registryTTL())
	if err != nil {
		p.mu.Lock()
		delete(p.conns, c.holder)
		p.mu.Unlock()
		return err
	}
	p.learnRoute(c.label, c.holder)
	var old *clientConn
	p.mu.Lock()
	if e := p.hosts[c.label]; e != nil {
		old, e.conn = e.conn, c
	} else {
		p.hosts[c.label] = &hostEntry{conn: c}
	}
	p.mu.Unlock()
	if old != nil {
		old.replaced(c.holder)
	}
	if prev != "" && prev != c.holder && (old == nil || prev != old.holder) {
		p.announceTakeover(ctx, c.label, prev, c.holder)
	}
	return nil
}

// announceTakeover tells the instance holding prev that successor
// replaced it.
func (p *Proxy) announceTakeover(ctx context.Context, label, prev, successor string) {
	payload := messages.AppendEnvelope(nil, p.instance, prev, &messages.Takeover{Hostname: label, Successor: successor})
	if _, err := p.send(ctx, instanceOf(prev), payload); err != nil {
		p.log.Warn("announce takeover", "host", label, "err", err)
	}
}

// detach forgets c, releasing its hostname unless a newer connection has
// taken it over.
func (p *Proxy) detach(c *clientConn) {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	p.mu.Lock()
	delete(p.conns, c.holder)
	e := p.hosts[c.label]
	mine := e != nil && e.conn == c
	if mine {
		delete(p.hosts, c.label)
	}
	p.mu.Unlock()
	if succ := c.successorFor(); succ != "" {
		p.rememberMove(c.holder, succ)
	}
	if !mine {
		return
	}
	p.forgetRoute(c.label, c.holder)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.reg.Release(ctx, c.label, c.holder); err != nil {
		c.log.Warn("release hostname", "err", err)
	}
}

func (p *Proxy) registryTTL() time.Duration { return 3 * p.cfg.Ping }

// localConns returns the connections this instance holds. Caller holds p.mu.
func (p *Proxy) localConns() []*clientConn {
	conns := make([]*clientConn, 0, len(p.hosts))
	for _, e := range p.hosts {
		conns = append(conns, e.conn)
	}
	return conns
}
