package proxy

import (
	"bytes"
	"errors"
	"slices"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// relay is what the holder of a client connection knows of one stream
// routed to it. The holder passes frames on in both directions and checks
// the client's side of the protocol: the order of heads, data and ends,
// and that the client never sends more than its credit. The visitor's side
// is another proxy instance, and trusted.
type relay struct {
	replyTo string
	ws      bool
	tcp     bool // a TCP stream (see tcp.go): Data both ways, no idle timeout
	state   relayState
	// clientCredit is how many data bytes the client may still send: the
	// window the head granted plus the Credit relayed to the client since,
	// minus what it sent.
	clientCredit   int64
	toClientDone   bool // the visitor's direction ended
	fromClientDone bool // the client's direction ended
	active         time.Time
	// WebSocket: bytes of the message in progress from and to the client;
	// -1 between messages.
	msgFrom, msgTo int64
	// HTTP: body bytes relayed to and from the client, counted against
	// the tunnel's own cap when its token sets one below the proxy's.
	bodyTo, bodyFrom int64
}

type relayState uint8

const (
	awaitingHead relayState = iota
	open
	// ended is a tombstone of a stream that either side reset: frames the
	// client sent before it heard, or queued before its own reset, are
	// late, not violations, and are dropped quietly until sweep removes
	// it. A stream that ends in the ordinary way leaves nothing behind:
	// the client knows it is over.
	ended
)

// overTunnelCap reports whether n body bytes pass the tunnel's own cap.
func (c *clientConn) overTunnelCap(n int64) bool { return c.capBody && n > c.maxBody }

// finishLocked forgets a stream that is over in the ordinary way. Caller
// holds c.mu.
func (c *clientConn) finishLocked(id messages.ID, r *relay) {
	if r.state != ended {
		c.live--
	}
	delete(c.streams, id)
}

// abortLocked ends a stream early, reset by either side, leaving a
// tombstone. Caller holds c.mu.
func (c *clientConn) abortLocked(r *relay, now time.Time) {
	if r.state != ended {
		c.live--
		r.state = ended
		r.active = now
	}
}

// finishIfDoneLocked forgets r once both directions are complete.
func (c *clientConn) finishIfDoneLocked(id messages.ID, r *relay) {
	if r.toClientDone && r.fromClientDone {
		c.finishLocked(id, r)
	}
}

// onClientFrame handles a frame for client connection conn, sent by the
// instance replyTo, which serves the visitor.
func (p *Proxy) onClientFrame(replyTo, conn string, frame []byte) {
	t, err := messages.Peek(frame)
	if err != nil {
		return
	}
	// A frame goes to the connection it names, current or replaced (a
	// replaced one finishes its streams, and hands new requests to its
	// successor; see fromBus).
	p.mu.Lock()
	c := p.conns[conn]
	p.mu.Unlock()
	if t == messages.TypeTakeover {
		m, err := messages.Decode(frame)
		tk, ok := m.(*messages.Takeover)
		switch {
		case err != nil || !ok || c == nil:
		case tk.Hostname == c.label:
			c.replaced(tk.Successor)
		case slices.Contains(c.names, tk.Hostname):
			c.loseName(tk.Hostname, tk.Successor)
		}
		return
	}
	if c != nil {
		c.fromBus(replyTo, frame)
		return
	}
	if succ, last := p.forwarded(frame); succ != "" {
		id, _ := messages.PeekID(frame)
		p.post(instanceOf(succ), messages.AppendEnvelopeFrame(nil, replyTo, succ, frame), streamKey(id), nil)
		if last {
			p.forgetForward(id)
		}
		return
	}
	if !p.ownsConnName(conn) || (t != messages.TypeHTTPRequest && t != messages.TypeWSRequest && t != messages.TypeTCPRequest) {
		return
	}
	id, _ := messages.PeekID(frame)
	if succ := p.movedTo(conn); succ != "" && t == messages.TypeHTTPRequest {
		// The requester's cache still named a connection that was replaced
		// and has closed since: the request goes where the hostname went,
		// and its body, which still comes here, follows it.
		if m, err := messages.Decode(frame); err == nil && m.(*messages.HTTPRequest).Body {
			p.forwardStream(id, succ)
		}
		p.post(instanceOf(succ), messages.AppendEnvelopeFrame(nil, replyTo, succ, frame), streamKey(id), nil)
		return
	}
	// The connection it named was ours and is gone: answer at once rather
	// than let the visitor wait for the timeout. The hostname may be held
	// elsewhere by now; the requester may look again.
	p.replyError(replyTo, conn, id, messages.CodeGone, 0)
}

// replyError sends an Error for id to the instance that asked, without
// waiting.
func (p *Proxy) replyError(replyTo, conn string, id messages.ID, code messages.ErrorCode, retryAfter uint32) {
	payload := messages.AppendReplyMessage(nil, conn, &messages.Error{ID: id, Code: code, RetryAfter: retryAfter})
	p.post(replyTo, payload, streamKey(id), nil)
}

// control queues a frame for the client ahead of all data.
func (c *clientConn) control(m messages.Message) bool { return c.out.Send(m) }

// fromBus takes a frame from a visitor's stream to this client. It runs on
// the bus's delivery goroutine, so it never blocks: a full queue fails the
// stream instead.
func (c *clientConn) fromBus(replyTo string, payloadFrame []byte) {
	// The payload is the bus's until this returns: what is queued for the
	// client is a copy, pooled for the frames that carry data.
	m, err := messages.Decode(payloadFrame)
	if err != nil {
		c.log.Warn("bad frame on bus", "err", err)
		return
	}
	var frame []byte
	switch m.(type) {
	case *messages.Data, *messages.WSMessage:
		frame = stream.CopyData(payloadFrame)
	default:
		frame = bytes.Clone(payloadFrame)
	}
	id, _ := messages.PeekID(frame)
	c.mu.Lock()
	if succ, ok := c.handedOff[id]; ok {
		if endsVisitorSide(m) {
			delete(c.handedOff, id)
		}
		c.mu.Unlock()
		// The envelope is a copy of its own: the pooled one goes back.
		c.p.post(instanceOf(succ), messages.AppendEnvelopeFrame(nil, replyTo, succ, payloadFrame), streamKey(id), nil)
		stream.Release(frame)
		return
	}
	c.mu.Unlock()
	// A frame that opens a stream: checked alike for the three kinds.
	var host string
	var window uint32
	var opens, ws, noBody, tcp bool
	switch m := m.(type) {
	case *messages.HTTPRequest:
		opens, host, window, noBody = true, m.Host, m.Window, !m.Body
	case *messages.WSRequest:
		opens, host, window, ws = true, m.Host, m.Window, true
	case *messages.TCPRequest:
		opens, host, window, tcp = true, m.Host, m.Window, true
	}
	if opens {
		switch {
		case !c.servesHost(host):
			c.p.replyError(replyTo, c.holder, id, messages.CodeGone, 0)
		case c.tcp && !tcp:
			c.answerNotHTTP(replyTo, m)
		case tcp && !c.tcp:
			c.refuseNotTCP(replyTo, id, host)
		default:
			c.openStream(replyTo, id, frame, ws, window, noBody)
		}
		return
	}
	now := time.Now()
	c.mu.Lock()
	r := c.streams[id]
	if r == nil || r.state == ended || r.replyTo != replyTo {
		c.mu.Unlock()
		return
	}
	r.active = now
	switch m := m.(type) {
	case *messages.Credit:
		r.clientCredit += int64(m.Increment)
		c.mu.Unlock()
		c.out.Control(frame)
	case *messages.Data:
		if r.ws || r.toClientDone {
			c.mu.Unlock()
			return
		}
		r.bodyTo += int64(len(m.Data))
		if !r.tcp && c.overTunnelCap(r.bodyTo) {
			c.mu.Unlock()
			c.resetStream(id, replyTo, messages.CodeTooLarge, "request body over the tunnel's limit")
			return
		}
		r.toClientDone = m.End
		c.finishIfDoneLocked(id, r)
		c.mu.Unlock()
		c.out.Data(id, frame, len(m.Data))
	case *messages.Trailer:
		if r.ws || r.toClientDone {
			c.mu.Unlock()
			return
		}
		r.toClientDone = true
		c.finishIfDoneLocked(id, r)
		c.mu.Unlock()
		c.out.Data(id, frame, 0)
	case *messages.WSMessage:
		if !r.ws || r.state != open {
			c.mu.Unlock()
			return
		}
		first := r.msgTo < 0
		r.msgTo = max(r.msgTo, 0) + int64(len(m.Data))
		tooBig := c.maxBody > 0 && r.msgTo > c.maxBody
		if m.Fin {
			r.msgTo = -1
		}
		c.mu.Unlock()
		switch {
		case tooBig:
			c.failStream(id, replyTo, websocket.StatusMessageTooBig, "message too big")
			return
		case first:
			if ok, _ := c.rate.Allow(); !ok {
				c.failStream(id, replyTo, websocket.StatusTryAgainLater, "rate limit exceeded")
				return
			}
		}
		c.out.Data(id, frame, len(m.Data))
	case *messages.WSTeardown:
		if !r.ws || r.state != open {
			c.mu.Unlock()
			return
		}
		c.abortLocked(r, now) // the client may be sending until it hears
		c.mu.Unlock()
		c.out.Data(id, frame, 0)
	case *messages.Error:
		// The visitor's side gave up (timeout, visitor gone, over a
		// limit). Keep a tombstone so frames already on their way are
		// dropped quietly, and tell the client to stop.
		c.abortLocked(r, now)
		c.mu.Unlock()
		c.out.Reset(id, frame)
	default:
		c.mu.Unlock()
	}
}

// endsVisitorSide reports whether m is the visitor side's last frame of a
// stream: past it, a stream handed to a successor has nothing more to pass
// on.
func endsVisitorSide(m messages.Message) bool {
	switch m := m.(type) {
	case *messages.Data:
		return m.End
	case *messages.Trailer, *messages.Error, *messages.WSTeardown:
		return true
	}
	return false
}

// openStream routes a new stream to this client, or answers for it.
func (c *clientConn) openStream(replyTo string, id messages.ID, frame []byte, ws bool, window uint32, noBody bool) {
	if !ws {
		if succ := c.successorFor(); succ != "" {
			c.mu.Lock()
			if c.handedOff == nil {
				c.handedOff = make(map[messages.ID]string)
			}
			if !noBody {
				c.handedOff[id] = succ
			}
			c.mu.Unlock()
			c.p.post(instanceOf(succ), messages.AppendEnvelopeFrame(nil, replyTo, succ, frame), streamKey(id), nil)
			return
		}
	}
	if ok, retry := c.rate.Allow(); !ok {
		c.p.replyError(replyTo, c.holder, id, messages.CodeRateLimited, uint32(retry/time.Second))
		return
	}
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		c.p.replyError(replyTo, c.holder, id, messages.CodeGone, 0)
		return
	}
	if c.live >= c.maxStreams {
		c.mu.Unlock()
		c.p.replyError(replyTo, c.holder, id, messages.CodeOverloaded, 0)
		return
	}
	c.streams[id] = &relay{
		replyTo:      replyTo,
		ws:           ws,
		tcp:          messages.Type(frame[1]) == messages.TypeTCPRequest,
		clientCredit: int64(window),
		toClientDone: noBody,
		active:       time.Now(),
		msgFrom:      -1,
		msgTo:        -1,
	}
	c.live++
	c.mu.Unlock()
	if !c.out.Control(frame) {
		c.p.metrics.drop(dropClientQueue)
		c.forget(id)
		c.p.replyError(replyTo, c.holder, id, messages.CodeOverloaded, 0)
	}
}

// failStream ends a WebSocket stream from the middle: both ends get a
// teardown.
func (c *clientConn) failStream(id messages.ID, replyTo string, code websocket.StatusCode, reason string) {
	c.forget(id)
	td := &messages.WSTeardown{ID: id, Code: uint16(code), Reason: reason}
	// Behind the messages already on their way: they passed.
	c.out.Data(id, messages.Encode(td), 0)
	c.p.post(replyTo, messages.AppendReplyMessage(nil, c.holder, td), streamKey(id), nil)
}

// resetStream ends a stream from the middle: the client is told to stop,
// and the visitor's side gets code.
func (c *clientConn) resetStream(id messages.ID, replyTo string, code messages.ErrorCode, reason string) {
	c.forget(id)
	c.control(&messages.Error{ID: id, Code: messages.CodeCanceled, Reason: reason})
	c.p.replyError(replyTo, c.holder, id, code, 0)
}

// forget ends a stream from the proxy's side. Its tombstone stays until
// sweep removes it, so frames the client sent meanwhile are dropped quietly.
func (c *clientConn) forget(id messages.ID) {
	c.mu.Lock()
	if r := c.streams[id]; r != nil {
		c.abortLocked(r, time.Now())
	}
	c.mu.Unlock()
}

func (c *clientConn) pendingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live + len(c.handedOff)
}

// handle processes one websocket message from the client and reports
// whether the connection should go on.
func (c *clientConn) handle(data []byte) bool {
	err := messages.EachFrame(data, func(frame []byte, m messages.Message) error {
		if !c.handleOne(frame, m) {
			return errViolation
		}
		return nil
	})
	switch {
	case err == nil:
		return true
	case errors.Is(err, errViolation):
	case errors.Is(err, messages.ErrVersion):
		c.violation("unsupported protocol version")
	default:
		c.violation("malformed frame")
	}
	return false
}

// errViolation stops handle once handleOne has closed the connection.
var errViolation = errors.New("protocol violation")

// handleOne processes one frame from the client.
func (c *clientConn) handleOne(frame []byte, m messages.Message) bool {
	var id messages.ID
	switch m := m.(type) {
	case *messages.Ping:
		return true
	case *messages.Credit:
		if m.ID.IsZero() {
			c.out.Credit(int(m.Increment))
			return true
		}
		id = m.ID
	case *messages.Error:
		if m.ID.IsZero() {
			return true // a connection-level notice from the client; nothing to do
		}
		id = m.ID
	case *messages.HTTPResponse:
		id = m.ID
	case *messages.WSResponse:
		id = m.ID
	case *messages.TCPResponse:
		id = m.ID
	case *messages.Data:
		id = m.ID
	case *messages.Trailer:
		id = m.ID
	case *messages.WSMessage:
		id = m.ID
	case *messages.WSTeardown:
		id = m.ID
	default:
		c.violation("unexpected " + m.Type().String())
		return false
	}
	n := messages.CreditBytes(m)
	if n > messages.MaxData {
		c.violation("data frame larger than the protocol allows")
		return false
	}
	if n > 0 && !c.in.Received(n) {
		c.violation("data beyond the connection's credit")
		return false
	}
	// Every data byte counts against the connection's credit until it has
	// left here: dropped, or published (see publishTo).
	published := false
	defer func() {
		if !published {
			c.passed(n)
		}
	}()

	now := time.Now()
	c.mu.Lock()
	r := c.streams[id]
	if r != nil && r.state == ended {
		// A late frame for a stream that the proxy's side reset, sent
		// before the client heard of it: drop it.
		c.mu.Unlock()
		return true
	}
	if _, ok := m.(*messages.Credit); ok && r == nil {
		// Credit for a stream that is over harms nobody, and it can cross
		// the stream's end: a local service that answered before reading
		// the whole request body goes on returning credit for it.
		c.mu.Unlock()
		return true
	}
	if r == nil || !c.allowed(r, m) {
		c.mu.Unlock()
		c.violation("message for an ID this connection does not own")
		return false
	}
	if int64(n) > r.clientCredit {
		c.mu.Unlock()
		c.violation("data beyond the stream's credit")
		return false
	}
	r.clientCredit -= int64(n)
	r.active = now
	replyTo := r.replyTo
	var bad string
	var tooBig, tooLarge, first bool // tooBig: a WebSocket message; tooLarge: an HTTP body
	switch m := m.(type) {
	case *messages.HTTPResponse:
		switch {
		case !messages.ValidResponseStatus(m.Status):
			bad = "response status outside 200-599"
		case messages.ValidateHeader(m.Header) != nil:
			bad = "invalid response header"
		case len(frame) > messages.MaxHead:
			bad = "response head too large"
		}
		r.state = open
		r.fromClientDone = !m.Body
		if bad == "" {
			c.finishIfDoneLocked(id, r)
		}
	case *messages.WSResponse:
		switch {
		case !messages.ValidUpgradeStatus(m.Status):
			bad = "upgrade status outside 101 and 200-599"
		case messages.ValidateHeader(m.Header) != nil:
			bad = "invalid upgrade response header"
		case len(frame) > messages.MaxHead:
			bad = "upgrade response too large"
		}
		if m.Status == 101 {
			r.state = open
		} else if bad == "" {
			c.finishLocked(id, r)
		}
	case *messages.TCPResponse:
		r.state = open
	case *messages.Data:
		r.bodyFrom += int64(len(m.Data))
		if !r.tcp && c.overTunnelCap(r.bodyFrom) {
			tooLarge = true
			break
		}
		r.fromClientDone = m.End
		c.finishIfDoneLocked(id, r)
	case *messages.Trailer:
		if messages.ValidateHeader(m.Header) != nil || len(frame) > messages.MaxHead {
			bad = "invalid trailer"
		}
		r.fromClientDone = true
		if bad == "" {
			c.finishIfDoneLocked(id, r)
		}
	case *messages.WSMessage:
		first = r.msgFrom < 0
		r.msgFrom = max(r.msgFrom, 0) + int64(len(m.Data))
		tooBig = c.maxBody > 0 && r.msgFrom > c.maxBody
		if m.Fin {
			r.msgFrom = -1
		}
	case *messages.WSTeardown:
		c.finishLocked(id, r) // the client ended it: it sends nothing more
	case *messages.Error:
		// The client reset it. Data it queued earlier may still follow,
		// as a reset may overtake data (PROTOCOL.md 6.2): late, not a
		// violation, so a tombstone stays.
		c.abortLocked(r, now)
	}
	gone := c.gone
	c.mu.Unlock()
	if gone {
		c.wake()
	}
	switch {
	case bad != "":
		// The local service's answer cannot be passed on; that fails this
		// exchange, not the tunnel.
		c.log.Warn("bad answer from client", "reason", bad, "req", id)
		c.resetStream(id, replyTo, messages.CodeBadResponse, bad)
		return true
	case tooLarge:
		c.resetStream(id, replyTo, messages.CodeTooLarge, "response body over the tunnel's limit")
		return true
	case tooBig:
		c.failStream(id, replyTo, websocket.StatusMessageTooBig, "message too big")
		return true
	case first:
		if ok, _ := c.rate.Allow(); !ok {
			c.failStream(id, replyTo, websocket.StatusTryAgainLater, "rate limit exceeded")
			return true
		}
	}
	published = true
	c.publishTo(replyTo, id, frame, n)
	return true
}

// allowed reports whether the client may send m on r now. Caller holds
// c.mu.
func (c *clientConn) allowed(r *relay, m messages.Message) bool {
	switch m.(type) {
	case *messages.HTTPResponse:
		return !r.ws && !r.tcp && r.state == awaitingHead
	case *messages.WSResponse:
		return r.ws && r.state == awaitingHead
	case *messages.TCPResponse:
		return r.tcp && r.state == awaitingHead
	case *messages.Data, *messages.Trailer:
		return !r.ws && r.state == open && !r.fromClientDone
	case *messages.WSMessage, *messages.WSTeardown:
		return r.ws && r.state == open
	}
	return true // Credit and Error, at any point before the end
}

// passed returns connection credit for n bytes that have left the holder.
func (c *clientConn) passed(n int) {
	if n == 0 {
		return
	}
	if inc := c.in.Passed(n); inc > 0 {
		c.control(&messages.Credit{Increment: inc})
	}
}

// publishTo sends a frame to the instance serving its stream, without
// waiting, and returns its n bytes of connection credit once it has left.
// One that reaches nobody means that instance is gone: the stream is
// over for the client too.
func (c *clientConn) publishTo(replyTo string, id messages.ID, frame []byte, n int) {
	var payload []byte
	if size := messages.ReplySize(c.holder, len(frame)); size <= stream.BufCap {
		payload = stream.Buf()
	} else {
		payload = make([]byte, 0, size)
	}
	payload = messages.AppendReply(payload, c.holder, frame)
	c.p.post(replyTo, payload, streamKey(id), func(got int, err error) {
		c.passed(n)
		if err == nil && got > 0 {
			return
		}
		c.log.Debug("reply not delivered", "to", replyTo, "req", id, "err", err)
		c.mu.Lock()
		r := c.streams[id]
		if r != nil {
			c.abortLocked(r, time.Now())
		}
		c.mu.Unlock()
		if r != nil {
			c.control(&messages.Error{ID: id, Code: messages.CodeCanceled, Reason: "visitor's proxy gone"})
		}
	})
}

// replaced is called when a newer connection, successor ("" if unknown),
// registered the same key. Nothing new is delivered to c. Streams already
// in flight may finish (a client moving off a draining instance loses
// none), then c is told why and closed; see wake.
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
// from failing requests. It was never delivered to c, so it runs once; its
// body, which the visitor's side keeps sending here, is passed on behind
// it. A WebSocket is not handed on.
func (c *clientConn) successorFor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gone {
		return ""
	}
	return c.successor
}

// wake closes a replaced connection once it should (replacedAndIdle). It
// runs wherever that may have become so: at the replacement, at a stream's
// end, and on the scheduler's tick for the timeout.
func (c *clientConn) wake() {
	if c.replacedAndIdle() {
		c.requestClose(StatusReplaced, "replaced by a newer connection with the same key")
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
	return c.live == 0 && len(c.handedOff) == 0
}

// goAway tells the client to reconnect elsewhere because this instance is
// draining. The connection stays up for streams already in flight.
func (c *clientConn) goAway() {
	c.control(&messages.Error{Code: messages.CodeGoingAway, Reason: "proxy shutting down, reconnect"})
}

// requestClose asks the writer to close the websocket with code and reason.
// The first request wins.
func (c *clientConn) requestClose(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.closing)
	})
	c.startWriter() // there may be none running to see it
}

// failPending answers every stream still open on this connection: the
// visitors get 502 now (or see their transfer cut) rather than a timeout.
func (c *clientConn) failPending() {
	c.mu.Lock()
	c.gone = true
	streams := c.streams
	c.streams = make(map[messages.ID]*relay)
	c.mu.Unlock()
	for id, r := range streams {
		if r.state != ended {
			c.p.replyError(r.replyTo, c.holder, id, messages.CodeUnavailable, 0)
		}
	}
}

// sweep drops tombstones once a late frame can no longer be expected, and
// ends streams that nobody has used for longer than any stream may wait:
// the visitor's instance is gone (it crashed) or a frame was lost.
func (c *clientConn) sweep(now time.Time) {
	cfg := &c.p.cfg
	orphan := cfg.Timeout + cfg.IdleTimeout
	type lost struct {
		id      messages.ID
		replyTo string
	}
	var expired []lost
	c.mu.Lock()
	for id, r := range c.streams {
		switch {
		case r.state == ended:
			if now.Sub(r.active) > cfg.Timeout {
				delete(c.streams, id)
			}
		case (r.ws || r.tcp) && r.state == open:
			// A WebSocket may be quiet for as long as both ends like.
		case now.Sub(r.active) > orphan:
			c.abortLocked(r, now)
			expired = append(expired, lost{id, r.replyTo})
		}
	}
	c.mu.Unlock()
	for _, l := range expired {
		c.control(&messages.Error{ID: l.id, Code: messages.CodeCanceled, Reason: "timed out"})
		c.p.replyError(l.replyTo, c.holder, l.id, messages.CodeTimeout, 0)
	}
}
