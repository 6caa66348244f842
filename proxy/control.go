package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
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

// hostEntry is a hostname whose client this instance holds: one
// connection, or the members of a pool that this instance holds.
type hostEntry struct {
	conn *clientConn
	pool []*clientConn
}

// holds reports whether c is e's connection or one of its pool members.
func (e *hostEntry) holds(c *clientConn) bool {
	return e != nil && (e.conn == c || slices.Contains(e.pool, c))
}

// clientConn is one registered client websocket. The HTTP handler goroutine
// reads; a writer goroutine, while there is something to write, writes and
// closes; the instance's scheduler pings (see connio.go).
type clientConn struct {
	p      *Proxy
	ws     *websocket.Conn
	holder string // instance/conn: names the connection
	label  string
	entry  string // the registry value of label
	// names are the friendly names it was granted and asked for, each
	// with the registry value nameEntry, unless lost (under mu).
	names     []string
	nameEntry string
	pool      bool           // shares label with the other members of its key's pool
	policy    *visitorPolicy // who may visit; nil admits everyone
	tcp       bool           // carries TCP streams, not HTTP: its registration said so
	tokenID   string         // the access token's ID, if it has one
	// The tunnel's limits: the proxy's, or its token's where lower.
	maxBody    int64 // 0: none
	capBody    bool  // maxBody is the token's, below the proxy's: count bodies here
	maxStreams int
	log        *slog.Logger
	rate       *limiter.Rate
	out        *stream.Writer     // frames for the client; holds nothing while idle
	in         *stream.ConnWindow // the client's connection credit towards us
	closing    chan struct{}
	lastRead   atomic.Int64 // unix nanos
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
	lost       map[string]bool        // names a newer grant took
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
	adm, ok := p.register(rctx, ws)
	if !ok {
		return
	}
	label := adm.label
	holder := newHolder(p.instance, time.Now())
	rules := adm.policy.encode()
	c := &clientConn{
		p:         p,
		ws:        ws,
		holder:    holder,
		label:     label,
		entry:     entryValue("", holder, rules),
		names:     adm.names,
		nameEntry: adm.nameEntry(holder, rules),
		pool:      adm.claims.Pool,
		policy:    adm.policy,
		tcp:       adm.claims.TCP,
		tokenID:   adm.tokenID,
		rate:      limiter.NewRate(adm.rate(&p.cfg)),
		in:        stream.NewConnWindow(messages.InitialConnWindow, maxConnWindow),
		closing:   make(chan struct{}),
		streams:   make(map[messages.ID]*relay),
		connIO:    connIO{conn: conn},
	}
	c.maxBody, c.capBody = adm.maxBody(&p.cfg)
	c.maxStreams = adm.maxStreams(&p.cfg)
	c.out = stream.NewWriter(messages.InitialConnWindow, maxControlQueue)
	// Queuing a frame, or credit that may make one writable, starts the
	// writer if it is not running.
	c.out.OnReady(c.startWriter)
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
		MaxBody:           uint32(c.maxBody),
		MaxWindow:         uint32(p.cfg.MaxWindow),
		ConnBudget:        uint32(p.cfg.ConnWindowBudget),
	}
	first := messages.Encode(resp)
	if reason := p.openPublicPort(c, adm.claims.RemotePort); reason != "" {
		// Still in the handshake: the client takes it as final.
		c.log.Info("registration refused", "reason", reason)
		ws.Close(websocket.StatusPolicyViolation, closeReason(reason))
		return
	}
	defer p.closePublicPort(c)
	actx, cancel := context.WithTimeout(rctx, p.cfg.registrationTimeout)
	err = p.attach(actx, c)
	cancel()
	if err != nil {
		c.log.Error("register hostname", "err", err)
		ws.Close(websocket.StatusTryAgainLater, "proxy unavailable, try again")
		return
	}
	ws.SetReadLimit(messages.MaxFrame)
	c.log.Info("client registered", "remote", r.RemoteAddr, "token", adm.claims.Token != "", "names", adm.names)
	p.metrics.clientConnected(1)
	defer p.metrics.clientConnected(-1)
	if g := adm.grant; g != nil && !g.Expires.IsZero() {
		// The token's end is the connection's, when Verify starts to
		// refuse it: a reconnect is refused, and says why.
		t := time.AfterFunc(time.Until(g.Expires.Add(TokenLeeway)), func() {
			c.log.Info("access token expired; closing")
			c.requestClose(websocket.StatusPolicyViolation, ErrTokenExpired.Error())
		})
		defer t.Stop()
	}

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
func (p *Proxy) register(ctx context.Context, ws *websocket.Conn) (*admission, bool) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.registrationTimeout)
	defer cancel()
	ch := messages.Challenge{Nonce: randomToken(16), Domain: p.cfg.Domain}
	issued := time.Now()
	if err := ws.Write(ctx, websocket.MessageBinary, messages.Encode(&ch)); err != nil {
		ws.CloseNow()
		return nil, false
	}
	refuse := func(reason string) (*admission, bool) {
		p.log.Info("registration refused", "reason", reason)
		ws.Close(websocket.StatusPolicyViolation, closeReason(reason))
		return nil, false
	}
	typ, rd, err := ws.Reader(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, false
	}
	if typ != websocket.MessageBinary {
		return refuse("registration required before any other message")
	}
	data, err := io.ReadAll(io.LimitReader(rd, messages.MaxPreRegistration+1))
	if err != nil {
		ws.CloseNow()
		return nil, false
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
	a, reason, err := p.admit(ctx, reg)
	if err != nil {
		p.log.Warn("registration: registry unavailable", "err", err)
		ws.Close(websocket.StatusTryAgainLater, "proxy unavailable, try again")
		return nil, false
	}
	if a == nil {
		return refuse(reason)
	}
	if p.isDraining() {
		ws.Close(websocket.StatusGoingAway, "proxy shutting down, reconnect")
		return nil, false
	}
	return a, true
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

// announceTakeover tells the instance holding prev that successor
// replaced it.
func (p *Proxy) announceTakeover(ctx context.Context, label, prev, successor string) {
	payload := messages.AppendEnvelope(nil, p.instance, prev, &messages.Takeover{Hostname: label, Successor: successor})
	if _, err := p.send(ctx, instanceOf(prev), payload); err != nil {
		p.log.Warn("announce takeover", "host", label, "err", err)
	}
}

func (p *Proxy) registryTTL() time.Duration { return 3 * p.cfg.Ping }

// localConns returns the connections this instance holds, each once
// (a connection is also listed under its names). Caller holds p.mu.
func (p *Proxy) localConns() []*clientConn {
	conns := make([]*clientConn, 0, len(p.hosts))
	for host, e := range p.hosts {
		if e.conn != nil && e.conn.label == host {
			conns = append(conns, e.conn)
		}
		conns = append(conns, e.pool...)
	}
	return conns
}
