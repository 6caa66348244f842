package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// writeLoop is the only writer of c.ws. It also keeps the link alive:
// a Ping when nothing was written for a ping interval, the registry entry
// refreshed, silent clients dropped, and old tombstones swept.
func (c *clientConn) writeLoop() {
	ping := c.p.cfg.Ping
	tick := time.NewTicker(ping / 2)
	defer tick.Stop()
	lastWrite := time.Now()
	lastRefresh := time.Now()
	// The registry refresh runs beside the writer, one at a time: a slow or
	// hung registry must not hold up frames and pings to the client (which
	// would drop a connection that is fine). It is cancelled, and waited
	// for, when the writer ends.
	var refreshing sync.WaitGroup
	refreshCtx, stopRefresh := context.WithCancel(c.p.ctx)
	defer refreshing.Wait()
	defer stopRefresh()
	refreshIdle := make(chan struct{}, 1)
	refreshIdle <- struct{}{}
	var batch [][]byte
	for {
		select {
		case <-c.out.Ready():
			batch = c.out.TakeAll(batch[:0])
			for _, f := range batch {
				if err := c.write(f); err != nil {
					c.requestClose(websocket.StatusInternalError, "write failed")
					c.ws.CloseNow()
					return
				}
			}
			clear(batch)
			if cap(batch) > 64 {
				batch = nil
			}
			lastWrite = time.Now()
			continue
		case <-c.kick:
		case <-tick.C:
		case <-c.closing:
			c.ws.Close(c.closeCode, c.closeReason)
			return
		case <-c.p.ctx.Done():
			c.requestClose(websocket.StatusGoingAway, "proxy shutting down")
			c.ws.Close(c.closeCode, c.closeReason)
			return
		}
		now := time.Now()
		if c.replacedAndIdle() {
			c.requestClose(StatusReplaced, "replaced by a newer connection with the same key")
			continue
		}
		if now.Sub(time.Unix(0, c.lastRead.Load())) > 2*ping {
			// A silent client will not answer a close handshake either,
			// and Close would wait 5 s for it while the client's public
			// requests and WebSockets hang: drop the connection at once.
			c.requestClose(websocket.StatusPolicyViolation, "no message for twice the ping interval")
			c.ws.CloseNow()
			return
		}
		if now.Sub(lastWrite) >= ping {
			if err := c.write(messages.Encode(&messages.Ping{})); err != nil {
				c.requestClose(websocket.StatusInternalError, "write failed")
				c.ws.CloseNow()
				return
			}
			lastWrite = now
		}
		if now.Sub(lastRefresh) >= ping {
			select {
			case <-refreshIdle:
				lastRefresh = now
				refreshing.Go(func() {
					c.refresh(refreshCtx)
					refreshIdle <- struct{}{}
				})
			default: // the last one is still running
			}
		}
		c.sweep(now)
	}
}

func (c *clientConn) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(c.p.ctx, writeTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageBinary, frame)
}

// refresh extends the registry entry, claiming it again if it vanished;
// losing it to another connection means that one took the hostname while
// we missed its announcement. See announce.
func (c *clientConn) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := c.announce(ctx); err != nil {
		c.log.Warn("refresh hostname", "err", err)
	}
}

// sweep ends exchanges whose deadline passed without an answer, telling
// the client to stop, and drops tombstones once a late answer can no
// longer be expected.
func (c *clientConn) sweep(now time.Time) {
	var expired []messages.ID
	c.mu.Lock()
	for id, ex := range c.pending {
		switch {
		case ex.ended:
			if now.Sub(ex.deadline) > c.p.cfg.Timeout {
				delete(c.pending, id)
			}
		case ex.open:
			// A live stream has no deadline.
		case now.After(ex.deadline):
			ex.end()
			expired = append(expired, id)
		}
	}
	c.mu.Unlock()
	for _, id := range expired {
		c.enqueue(messages.Encode(&messages.Error{ID: id, Code: messages.CodeCanceled, Reason: "timed out"}))
	}
}

// readLoop reads the client's frames until the connection ends.
func (c *clientConn) readLoop() {
	for {
		// The writer ends the connection (ws.Close unblocks this read), so
		// reads need no context of their own.
		typ, buf, err := wsbuf.Read(context.Background(), c.ws)
		if err != nil {
			if s := websocket.CloseStatus(err); s != -1 {
				c.requestClose(s, "")
			}
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		if typ != websocket.MessageBinary {
			buf.Release()
			c.violation("text message on a binary protocol")
			return
		}
		// handle copies what it forwards, so the buffer can be reused.
		ok := c.handle(buf.Bytes())
		buf.Release()
		if !ok {
			return
		}
	}
}

// violation closes the connection for a protocol violation.
func (c *clientConn) violation(reason string) {
	c.log.Warn("protocol violation", "reason", reason)
	c.requestClose(websocket.StatusPolicyViolation, reason)
}

// handle processes one frame from the client and reports whether the
// connection should go on.
func (c *clientConn) handle(data []byte) bool {
	t, err := messages.Peek(data)
	if err != nil {
		c.violation("unsupported protocol version or short frame")
		return false
	}
	switch t {
	case messages.TypePing:
		return true
	case messages.TypeHTTPResponse, messages.TypeWSResponse, messages.TypeWSMessage, messages.TypeWSTeardown, messages.TypeError:
	case messages.TypeChallenge, messages.TypeRegistrationRequest, messages.TypeRegistrationResponse,
		messages.TypeHTTPRequest, messages.TypeWSRequest, messages.TypeEnvelope, messages.TypeTakeover:
		c.violation("unexpected " + t.String())
		return false
	default:
		return true // unknown types are skipped, for forward compatibility
	}
	id, ok := messages.PeekID(data)
	if !ok {
		c.violation("short frame")
		return false
	}
	if t == messages.TypeError && id.IsZero() {
		return true // connection-level notice from the client; nothing to do
	}
	c.mu.Lock()
	ex := c.pending[id]
	if ex != nil && ex.ended {
		// A late frame for an exchange or stream that already ended on
		// the proxy's side, sent before the client heard of it: drop it.
		c.mu.Unlock()
		return true
	}
	if ex == nil || (t == messages.TypeHTTPResponse && ex.stream) ||
		(t == messages.TypeWSResponse && (!ex.stream || ex.open)) ||
		((t == messages.TypeWSMessage || t == messages.TypeWSTeardown) && !ex.open) {
		c.mu.Unlock()
		c.violation("message for an ID this connection does not own")
		return false
	}
	replyTo := ex.replyTo
	switch t {
	case messages.TypeHTTPResponse, messages.TypeError, messages.TypeWSTeardown:
		delete(c.pending, id)
	case messages.TypeWSResponse:
		delete(c.pending, id) // re-added below if accepted
	}
	gone := c.gone
	c.mu.Unlock()
	if gone {
		c.wake()
	}

	m, err := messages.Decode(data)
	if err != nil {
		c.p.replyError(replyTo, c.holder, id, messages.CodeBadResponse, 0)
		c.violation("malformed " + t.String())
		return false
	}
	switch m := m.(type) {
	case *messages.HTTPResponse:
		if messages.ValidateHeader(m.Header) != nil || m.Status < 200 || m.Status > 999 {
			c.p.replyError(replyTo, c.holder, id, messages.CodeBadResponse, 0)
			c.violation("invalid response header")
			return false
		}
		if len(m.Body) > int(c.p.cfg.MaxBody) {
			c.p.replyError(replyTo, c.holder, id, messages.CodeTooLarge, 0)
			return true
		}
	case *messages.WSResponse:
		if messages.ValidateHeader(m.Header) != nil || m.Status < 100 || m.Status > 999 || (m.Status < 200 && m.Status != 101) {
			c.p.replyError(replyTo, c.holder, id, messages.CodeBadResponse, 0)
			c.violation("invalid upgrade response")
			return false
		}
		if m.Status == 101 {
			c.mu.Lock()
			c.pending[id] = &exchange{replyTo: replyTo, stream: true, open: true}
			c.mu.Unlock()
		}
	case *messages.WSMessage:
		if len(m.Data) > int(c.p.cfg.MaxBody) {
			c.failStream(id, replyTo, websocket.StatusMessageTooBig, "message too big")
			return true
		}
		if ok, _ := c.rate.Allow(); !ok {
			c.failStream(id, replyTo, websocket.StatusTryAgainLater, "rate limit exceeded")
			return true
		}
	}
	c.publishTo(replyTo, data)
	return true
}
