package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// writeLoop is the only writer of c.ws; it writes first before anything
// else. It also keeps the link alive:
// a Ping when nothing was written for a ping interval, the registry entry
// refreshed, silent clients dropped, and old tombstones swept.
func (c *clientConn) writeLoop(first []byte) {
	if err := c.write(first); err != nil {
		c.requestClose(websocket.StatusInternalError, "write failed")
		c.ws.CloseNow()
		return
	}
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
	for {
		select {
		case <-c.out.Ready():
			if err := c.out.Flush(c.write); err != nil {
				c.requestClose(websocket.StatusInternalError, "write failed")
				c.ws.CloseNow()
				return
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
