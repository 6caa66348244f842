package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// An idle client connection costs the proxy one goroutine: the HTTP
// handler's, which reads. The writer goroutine exists only while frames
// are writable (or the websocket is to be closed), and the timed duties of
// every connection (pings, dropping silent clients, registry refreshes,
// tombstone sweeps) are driven by one scheduler per instance; see
// sched.go.

// Writer states. At most one writer runs at a time: whoever moves the
// state from writerIdle to writerRunning starts it, and it stops only by
// moving it back, which fails when more was queued meanwhile.
const (
	// writerRunning is also a new connection's state (the zero value):
	// the registration response must go first, and run writes it before
	// any writer starts.
	writerRunning int32 = iota
	writerAgain         // running, and asked to look again before it stops
	writerIdle
	writerDone // closed or closing: no writer starts again
)

// connIO is the part of a clientConn that its read and write loops and the
// scheduler keep.
type connIO struct {
	conn      *wsbuf.IdleConn // nil when the websocket is not over one
	wstate    atomic.Int32
	closed    sync.WaitGroup // one count, done when the websocket is closed
	lastWrite atomic.Int64   // unix nanos
	dropped   atomic.Bool    // closed without a close handshake

	// Kept by the scheduler: the first three under its mutex, lastRefresh
	// by its goroutine.
	sched       *scheduler
	slot, idx   int
	lastRefresh time.Time

	refreshMu   sync.Mutex
	refreshStop context.CancelFunc // cancels the refresh in flight, if one is
	refreshOver bool               // the connection ended: no refresh starts
	refreshing  sync.WaitGroup
}

// run serves c once attach has made it reachable: it writes first (the
// registration response) before anything else, reads until the connection
// ends, and returns once the websocket is closed and nothing c started is
// left running.
func (c *clientConn) run(first []byte) {
	c.closed.Add(1)
	// Frames queued since attach have waited, the state being
	// writerRunning; whatever came meanwhile is written after first.
	if err := c.write(first); err != nil {
		c.writeFailed()
	} else if !c.wstate.CompareAndSwap(writerRunning, writerIdle) {
		go c.runWriter()
	}
	s := c.p.scheduleConn(c)
	c.readLoop()
	c.requestClose(websocket.StatusNormalClosure, "")
	c.closed.Wait() // the writer that closed it was the last one
	s.remove(c)
	c.stopRefresh()
}

// startWriter makes sure a writer will look at the queue, and at whether
// the websocket is to be closed: it starts one, or tells the running one
// to look again.
func (c *clientConn) startWriter() {
	for {
		switch s := c.wstate.Load(); s {
		case writerIdle:
			if c.wstate.CompareAndSwap(s, writerRunning) {
				go c.runWriter()
				return
			}
		case writerRunning:
			if c.wstate.CompareAndSwap(s, writerAgain) {
				return
			}
		default: // writerAgain, writerDone
			return
		}
	}
}

// runWriter is the writer: the only writer of c.ws. It writes until
// nothing is writable, then stops; or it closes the websocket.
func (c *clientConn) runWriter() {
	for {
		c.wstate.Store(writerRunning)
		select {
		case <-c.closing:
			c.closeWS()
			return
		case <-c.p.ctx.Done():
			c.requestClose(websocket.StatusGoingAway, "proxy shutting down")
			c.closeWS()
			return
		default:
		}
		if err := c.out.Flush(c.write); err != nil {
			c.writeFailed()
			return
		}
		if c.wstate.CompareAndSwap(writerRunning, writerIdle) {
			return
		}
	}
}

// closeWS closes the websocket as requestClose asked.
func (c *clientConn) closeWS() {
	c.wstate.Store(writerDone)
	defer c.closed.Done()
	if c.dropped.Load() {
		c.ws.CloseNow()
		return
	}
	c.ws.Close(c.closeCode, c.closeReason)
}

func (c *clientConn) writeFailed() {
	c.requestClose(websocket.StatusInternalError, "write failed")
	c.wstate.Store(writerDone)
	c.ws.CloseNow()
	c.closed.Done()
}

// drop closes the connection at once, without a close handshake.
func (c *clientConn) drop(code websocket.StatusCode, reason string) {
	c.dropped.Store(true)
	c.requestClose(code, reason)
	c.ws.CloseNow()
}

// write writes one frame as one websocket message, in one system call.
// The connection's write deadline bounds it, rather than a context of its
// own: the library keeps the last write's context until the next write,
// which for an idle connection is for ever, and a timer context with its
// timer is the larger part of a kilobyte.
func (c *clientConn) write(frame []byte) error {
	var err error
	if c.conn != nil {
		c.conn.Cork(writeTimeout)
		err = c.ws.Write(c.p.ctx, websocket.MessageBinary, frame)
		if uerr := c.conn.Uncork(); err == nil {
			err = uerr
		}
	} else {
		ctx, cancel := context.WithTimeout(c.p.ctx, writeTimeout)
		err = c.ws.Write(ctx, websocket.MessageBinary, frame)
		cancel()
	}
	if err == nil {
		c.lastWrite.Store(time.Now().UnixNano())
	}
	return err
}

// tick does c's timed duties; the scheduler calls it every half ping
// interval. It never blocks: a ping is queued, a refresh runs beside.
func (c *clientConn) tick(now time.Time) {
	select {
	case <-c.closing:
		return
	default:
	}
	ping := c.p.cfg.Ping
	c.wake() // the replaced connection's timeout may have passed
	if now.Sub(time.Unix(0, c.lastRead.Load())) > 2*ping {
		// A silent client will not answer a close handshake either,
		// and Close would wait 5 s for it while the client's public
		// requests and WebSockets hang: drop the connection at once.
		c.drop(websocket.StatusPolicyViolation, "no message for twice the ping interval")
		return
	}
	// A running writer is writing (or stuck, and will fail): a ping
	// queued behind it would add nothing.
	if now.Sub(time.Unix(0, c.lastWrite.Load())) >= ping && c.wstate.Load() == writerIdle {
		c.control(&messages.Ping{})
	}
	if now.Sub(c.lastRefresh) >= ping && c.startRefresh() {
		c.lastRefresh = now
	}
	c.sweep(now)
}

// startRefresh starts refreshing the registry entry unless a refresh is
// still running (or the connection ended); it reports whether it did.
// The refresh runs beside everything else: a slow or hung registry must
// not hold up frames and pings to the client (which would drop a
// connection that is fine).
func (c *clientConn) startRefresh() bool {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if c.refreshStop != nil || c.refreshOver {
		return false
	}
	ctx, cancel := context.WithCancel(c.p.ctx)
	c.refreshStop = cancel
	c.refreshing.Go(func() {
		c.refresh(ctx)
		cancel()
		c.refreshMu.Lock()
		c.refreshStop = nil
		c.refreshMu.Unlock()
	})
	return true
}

// stopRefresh cancels the refresh in flight, if any, and waits for it: a
// refresh that ran on after detach could claim the hostname again.
func (c *clientConn) stopRefresh() {
	c.refreshMu.Lock()
	c.refreshOver = true
	if c.refreshStop != nil {
		c.refreshStop()
	}
	c.refreshMu.Unlock()
	c.refreshing.Wait()
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
		c.awaitFrame()
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

// awaitFrame waits until the client sends something. An idle connection's
// reader waits here, holding no buffer and a few frames above net/http's
// rather than deep inside the websocket library, so that the garbage
// collector can shrink its stack to 8 KiB (a goroutine's stack shrinks
// only while it uses less than a quarter of it, and registration grows
// this one to 16 KiB). An error shows in the read that follows.
func (c *clientConn) awaitFrame() {
	if c.conn != nil {
		c.conn.Wait()
	}
}

// violation closes the connection for a protocol violation.
func (c *clientConn) violation(reason string) {
	c.log.Warn("protocol violation", "reason", reason)
	c.requestClose(websocket.StatusPolicyViolation, reason)
}
