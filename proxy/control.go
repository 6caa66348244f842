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
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/internal/queue"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// Close codes the proxy uses on client connections, besides the RFC 6455
// ones. Clients print the reason that comes with them.
const (
	// StatusReplaced closes a connection whose key registered again on a
	// newer connection. The client must not reconnect.
	StatusReplaced websocket.StatusCode = 4000
)

// registrationReadLimit bounds what is read of the first message. Anything
// larger is refused with a policy violation and a reason, like any
// oversized registration, rather than tripping the websocket's own limit
// (1009, which a client would not take as a refusal).
const registrationReadLimit = 4 * messages.MaxJWS

// hostEntry is a hostname whose client this instance holds.
type hostEntry struct {
	conn *clientConn
	sub  bus.Subscription
}

// clientConn is one registered client websocket. The HTTP handler goroutine
// reads; one writer goroutine writes, pings and closes.
type clientConn struct {
	p        *Proxy
	ws       *websocket.Conn
	holder   string // instance/conn, the registry value
	label    string
	log      *slog.Logger
	rate     *limiter.Rate
	out      *queue.Queue[[]byte] // holds nothing while the client is idle
	closing  chan struct{}
	kick     chan struct{} // wakes the writer to re-check a replaced connection
	lastRead atomic.Int64  // unix nanos

	closeOnce   sync.Once
	closeCode   websocket.StatusCode
	closeReason string

	mu         sync.Mutex
	pending    map[messages.ID]*exchange
	gone       bool      // replaced or closing: deliver nothing more
	replacedAt time.Time // when a newer connection took over
	successor  string    // the holder that replaced this one, when known
}

// exchange is an HTTP exchange or WebSocket stream routed to this client.
type exchange struct {
	replyTo  string
	stream   bool
	open     bool // stream: the client accepted the upgrade
	deadline time.Time
	ended    bool // canceled or expired; kept briefly so a late answer is dropped quietly
}

const outQueue = 1024

// serveControl accepts a client websocket, runs the registration handshake
// and then serves the connection until it ends.
func (p *Proxy) serveControl(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" {
		// Only keyhole clients connect here; a page in a browser must not
		// be able to register a tunnel with a visitor's connection.
		publicError(w, http.StatusForbidden)
		return
	}
	if !p.track() {
		publicError(w, http.StatusServiceUnavailable)
		return
	}
	defer p.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return // Accept wrote the HTTP error
	}
	ws.SetReadLimit(-1) // register reads at most registrationReadLimit
	label, reg, ok := p.register(r.Context(), ws)
	if !ok {
		return
	}
	c := &clientConn{
		p:       p,
		ws:      ws,
		holder:  p.instance + "/" + randomToken(8),
		label:   label,
		rate:    limiter.NewRate(p.cfg.Rate, p.cfg.Burst),
		out:     queue.New[[]byte](outQueue, 0),
		closing: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		pending: make(map[messages.ID]*exchange),
	}
	c.log = p.log.With("host", label, "conn", c.holder)
	c.lastRead.Store(time.Now().UnixNano())
	// Queued before attach: once the registry names c, requests may be
	// queued for it, and the client must hear this first. If attach fails
	// it is never sent.
	resp := &messages.RegistrationResponse{
		Hostname:      label + "." + p.cfg.Domain,
		URL:           p.cfg.tunnelURL(label),
		PingMillis:    uint32(p.cfg.Ping / time.Millisecond),
		MaxBody:       uint32(p.cfg.MaxBody),
		TimeoutMillis: uint32(p.cfg.Timeout / time.Millisecond),
	}
	c.enqueue(messages.Encode(resp))
	actx, cancel := context.WithTimeout(r.Context(), p.cfg.registrationTimeout)
	err = p.attach(actx, c)
	cancel()
	if err != nil {
		c.log.Error("register hostname", "err", err)
		ws.Close(websocket.StatusTryAgainLater, "proxy unavailable, try again")
		return
	}
	// Room for the largest body plus headers and framing.
	ws.SetReadLimit(int64(p.cfg.MaxBody) + maxHeaderBytes + 4096)
	c.log.Info("client registered", "remote", r.RemoteAddr, "token", reg.Claims.Token != "")
	p.metrics.clientConnected(1)
	defer p.metrics.clientConnected(-1)

	done := make(chan struct{})
	go func() {
		defer close(done)
		c.writeLoop()
	}()
	c.readLoop()
	c.requestClose(websocket.StatusNormalClosure, "")
	<-done
	p.detach(c)
	c.failPending()
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
	data, err := io.ReadAll(io.LimitReader(rd, registrationReadLimit+1))
	if err != nil {
		ws.CloseNow()
		return "", nil, false
	}
	if len(data) > registrationReadLimit {
		// Close discards the rest of the message unread.
		return refuse(fmt.Sprintf("registration larger than %d bytes", messages.MaxJWS))
	}
	m, err := messages.Decode(data)
	if errors.Is(err, messages.ErrVersion) {
		return refuse("unsupported protocol version")
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

// closeReason fits a reason into a close frame (at most 123 bytes).
func closeReason(s string) string {
	for len(s) > 123 {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// attach makes c the holder of its hostname on this instance and in the
// registry, and tells every other instance to drop an older connection.
func (p *Proxy) attach(ctx context.Context, c *clientConn) error {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	p.mu.Lock()
	e := p.hosts[c.label]
	p.mu.Unlock()
	var sub bus.Subscription
	if e == nil {
		label := c.label
		s, err := p.bus.Subscribe(ctx, bus.HostTopic(label), func(b []byte) { p.onHostMessage(label, b) })
		if err != nil {
			return err
		}
		sub = s
	}
	// Routable before the registry names it: a request published for c
	// as soon as the claim is visible must find it.
	p.mu.Lock()
	p.conns[c.holder] = c
	p.mu.Unlock()
	if err := p.reg.Claim(ctx, c.label, c.holder, p.registryTTL()); err != nil {
		p.mu.Lock()
		delete(p.conns, c.holder)
		p.mu.Unlock()
		if sub != nil {
			sub.Unsubscribe(context.WithoutCancel(ctx))
		}
		return err
	}
	var old *clientConn
	p.mu.Lock()
	if e != nil {
		old, e.conn = e.conn, c
	} else {
		p.hosts[c.label] = &hostEntry{conn: c, sub: sub}
	}
	p.mu.Unlock()
	if old != nil {
		old.replaced(c.holder)
	}
	payload := messages.AppendEnvelope(nil, p.instance, c.holder, &messages.Takeover{Hostname: c.label})
	if _, err := p.publish(ctx, bus.HostTopic(c.label), payload); err != nil {
		c.log.Warn("announce takeover", "err", err)
	}
	return nil
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
	if !mine {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.sub.Unsubscribe(ctx); err != nil {
		c.log.Warn("unsubscribe", "err", err)
	}
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

// onHostMessage handles a payload published to a hostname this instance
// holds.
func (p *Proxy) onHostMessage(label string, payload []byte) {
	m, err := messages.Decode(payload)
	env, ok := m.(*messages.Envelope)
	if err != nil || !ok {
		p.log.Warn("bad message on host topic", "host", label, "err", err)
		return
	}
	t, err := messages.Peek(env.Frame)
	if err != nil {
		return
	}
	// A frame goes to the connection it names, current or replaced (a
	// replaced one finishes its exchanges and streams, and hands new
	// requests to its successor; see fromBus).
	p.mu.Lock()
	var cur *clientConn
	if e := p.hosts[label]; e != nil {
		cur = e.conn
	}
	c := p.conns[env.Conn]
	p.mu.Unlock()
	if t == messages.TypeTakeover {
		if cur != nil && cur.holder != env.Conn {
			cur.replaced(env.Conn)
		}
		return
	}
	if c == nil || c.label != label {
		// The requester's view of the registry is stale: the connection it
		// named was ours and is gone. Answer at once rather than let it
		// time out. A connection of another instance is that instance's to
		// answer for: this one may still be subscribed only to finish the
		// exchanges of a connection that moved there, and an error from
		// here would race the real answer.
		if (t == messages.TypeHTTPRequest || t == messages.TypeWSRequest) && p.ownsConnName(env.Conn) {
			if id, ok := messages.PeekID(env.Frame); ok {
				p.replyError(env.ReplyTo, env.Conn, id, messages.CodeUnavailable, 0)
			}
		}
		return
	}
	c.fromBus(env.ReplyTo, t, env.Frame)
}

// replyError sends an Error for id to the instance that asked. It never
// blocks: it may run on the bus's delivery goroutine.
func (p *Proxy) replyError(replyTo, conn string, id messages.ID, code messages.ErrorCode, retryAfter uint32) {
	payload := messages.AppendEnvelope(nil, p.instance, conn, &messages.Error{ID: id, Code: code, RetryAfter: retryAfter})
	p.post(bus.InstanceTopic(replyTo), payload)
}

// fromBus takes a frame from a public exchange to this client. It runs on
// the bus's delivery goroutine, so it never blocks: a full queue fails the
// exchange instead.
func (c *clientConn) fromBus(replyTo string, t messages.Type, frame []byte) {
	id, ok := messages.PeekID(frame)
	if !ok {
		return
	}
	switch t {
	case messages.TypeHTTPRequest, messages.TypeWSRequest:
		if succ := c.successorFor(t); succ != "" {
			c.p.post(bus.HostTopic(c.label), messages.AppendEnvelopeFrame(nil, replyTo, succ, frame))
			return
		}
		if ok, retry := c.rate.Allow(); !ok {
			c.p.replyError(replyTo, c.holder, id, messages.CodeRateLimited, uint32(retry/time.Second))
			return
		}
		c.mu.Lock()
		if c.gone {
			c.mu.Unlock()
			c.p.replyError(replyTo, c.holder, id, messages.CodeUnavailable, 0)
			return
		}
		if len(c.pending) >= c.p.cfg.maxPending {
			c.mu.Unlock()
			c.p.replyError(replyTo, c.holder, id, messages.CodeOverloaded, 0)
			return
		}
		c.pending[id] = &exchange{replyTo: replyTo, stream: t == messages.TypeWSRequest, deadline: time.Now().Add(c.p.cfg.Timeout)}
		c.mu.Unlock()
		if !c.enqueue(frame) {
			c.p.metrics.drop(dropClientQueue)
			c.forget(id)
			c.p.replyError(replyTo, c.holder, id, messages.CodeOverloaded, 0)
		}
	case messages.TypeWSMessage, messages.TypeWSTeardown:
		c.mu.Lock()
		ex := c.pending[id]
		if ex == nil || !ex.open || ex.replyTo != replyTo {
			c.mu.Unlock()
			return
		}
		if t == messages.TypeWSTeardown {
			ex.end()
		}
		c.mu.Unlock()
		if t == messages.TypeWSMessage {
			if ok, _ := c.rate.Allow(); !ok {
				c.failStream(id, replyTo, websocket.StatusTryAgainLater, "rate limit exceeded")
				return
			}
		}
		if !c.enqueue(frame) {
			c.p.metrics.drop(dropClientQueue)
			c.failStream(id, replyTo, websocket.StatusTryAgainLater, "tunnel overloaded")
		}
	case messages.TypeError:
		// The public side gave up (timeout or caller gone). Keep a
		// tombstone so a late answer is dropped quietly, and tell the
		// client to stop.
		c.mu.Lock()
		ex := c.pending[id]
		if ex == nil || ex.replyTo != replyTo {
			c.mu.Unlock()
			return
		}
		ex.end()
		c.mu.Unlock()
		c.enqueue(frame)
	}
}

// failStream ends a stream from the middle: both ends get a teardown.
func (c *clientConn) failStream(id messages.ID, replyTo string, code websocket.StatusCode, reason string) {
	c.forget(id)
	td := &messages.WSTeardown{ID: id, Code: uint16(code), Reason: reason}
	c.enqueue(messages.Encode(td))
	c.p.post(bus.InstanceTopic(replyTo), messages.AppendEnvelope(nil, c.p.instance, c.holder, td))
}

// forget ends an exchange from the proxy's side. Its tombstone stays until
// sweep removes it, so frames the client sent meanwhile are dropped quietly.
func (c *clientConn) forget(id messages.ID) {
	c.mu.Lock()
	if ex := c.pending[id]; ex != nil {
		ex.end()
	}
	c.mu.Unlock()
}

// end turns an exchange into a tombstone. Caller holds c.mu.
func (ex *exchange) end() {
	if !ex.ended {
		ex.ended = true
		ex.deadline = time.Now()
	}
}

func (c *clientConn) enqueue(frame []byte) bool { return c.out.Push(frame, int64(len(frame))) }

func (c *clientConn) pendingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ex := range c.pending {
		if !ex.ended {
			n++
		}
	}
	return n
}

// publishTo sends a frame to the instance waiting for it.
func (c *clientConn) publishTo(replyTo string, frame []byte) {
	payload := messages.AppendEnvelopeFrame(make([]byte, 0, messages.EnvelopeSize(c.p.instance, c.holder, len(frame))), c.p.instance, c.holder, frame)
	ctx, cancel := context.WithTimeout(c.p.ctx, writeTimeout)
	defer cancel()
	n, err := c.p.publish(ctx, bus.InstanceTopic(replyTo), payload)
	if err != nil || n == 0 {
		c.log.Debug("reply not delivered", "to", replyTo, "err", err)
	}
}

// replaced is called when a newer connection, successor ("" if unknown),
// registered the same key. Nothing new is delivered to c. Exchanges already
// in flight may finish (a client moving off a draining instance loses
// none), then c is told why and closed; see writeLoop.
func (c *clientConn) replaced(successor string) {
	c.mu.Lock()
	if !c.gone {
		c.gone = true
		c.replacedAt = time.Now()
	}
	if c.successor == "" {
		c.successor = successor
	}
	c.mu.Unlock()
	c.wake()
}

// successorFor returns the connection that an HTTP request for replaced c
// should go to instead, or "". Such a request was published by an instance
// that looked the hostname up just before the takeover: handing it on,
// rather than answering 502, keeps a client's move (a rolling deploy)
// from failing requests. It was never delivered to c, so it runs once. A
// WebSocket is not handed on: the visitor's later frames would still name
// c.
func (c *clientConn) successorFor(t messages.Type) string {
	if t != messages.TypeHTTPRequest {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gone {
		return ""
	}
	return c.successor
}

func (c *clientConn) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// replacedAndIdle reports whether a replaced connection should close now:
// nothing is left in flight, or the timeout has passed.
func (c *clientConn) replacedAndIdle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.replacedAt.IsZero() {
		return false
	}
	if time.Since(c.replacedAt) > c.p.cfg.Timeout {
		return true
	}
	for _, ex := range c.pending {
		if !ex.ended {
			return false
		}
	}
	return true
}

// goAway tells the client to reconnect elsewhere because this instance is
// draining. The connection stays up for exchanges already in flight.
func (c *clientConn) goAway() {
	c.enqueue(messages.Encode(&messages.Error{Code: messages.CodeGoingAway, Reason: "proxy shutting down, reconnect"}))
}

// requestClose asks the writer to close the websocket with code and reason.
// The first request wins.
func (c *clientConn) requestClose(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.closing)
	})
}

// failPending answers every exchange still waiting on this connection: the
// public callers get 502 now rather than a timeout.
func (c *clientConn) failPending() {
	c.mu.Lock()
	c.gone = true
	pending := c.pending
	c.pending = make(map[messages.ID]*exchange)
	c.mu.Unlock()
	for id, ex := range pending {
		if !ex.ended {
			c.p.replyError(ex.replyTo, c.holder, id, messages.CodeUnavailable, 0)
		}
	}
}
