package stream

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// A TCP stream is a stream whose two directions are the two directions of
// a TCP connection: Data frames under credit, a Data with End for a
// half-close (the socket's CloseWrite), an Error for a reset (the socket's
// RST). [PumpConn] carries a real socket over one; [Conn] is one as a
// net.Conn.

// ConnOptions tune [PumpConn] for its side of the tunnel.
type ConnOptions struct {
	// ResetCode and ResetReason reset the stream when conn fails (a read
	// or write error other than its orderly end).
	ResetCode   messages.ErrorCode
	ResetReason string
}

// PumpConn carries conn over s until both directions have ended, or either
// side fails. What conn yields goes to the peer as Data within its credit,
// and conn's EOF as End; the peer's data is written to conn as it comes,
// its credit returned once written, and the peer's End half-closes conn
// (CloseWrite): the other direction keeps flowing. It returns nil once
// both directions ended in order. Otherwise it resets s (unless the peer
// did), aborts conn (an RST where conn is TCP) and returns why. The
// caller closes conn in either case.
func PumpConn(ctx context.Context, s *Stream, conn net.Conn, o ConnOptions) error {
	// Ending ctx, or a failure of either direction, unblocks the other:
	// conn's reads and writes fail once it is closed.
	stop := context.AfterFunc(ctx, func() { abort(conn) })
	defer stop()
	// So does a reset, even of a stream whose one direction is over and
	// whose other waits in conn's Read.
	over := make(chan struct{})
	defer close(over)
	go func() {
		select {
		case <-s.Done():
			abort(conn)
		case <-over:
		}
	}()
	errs := make(chan error, 2)
	go func() {
		_, err := SendBody(ctx, s, conn, BodyOptions{})
		errs <- err
	}()
	go func() {
		_, err := io.Copy(conn, NewBodyReader(ctx, s))
		if err == nil {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		errs <- err
	}()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			var reset *ResetError
			switch {
			case errors.As(err, &reset):
				// The peer reset the stream, or the session ended.
			case ctx.Err() != nil:
				s.Reset(messages.CodeCanceled, "stream abandoned")
			default:
				s.Reset(o.ResetCode, o.ResetReason)
			}
			abort(conn)
		}
	}
	if first != nil && s.Err() != nil {
		// The stream's reset says more than the socket error it caused.
		first = s.Err()
	}
	return first
}

// abort closes conn so that its peer sees a reset, not an orderly end.
func abort(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// Conn is a TCP stream as a net.Conn. Read gives the peer's data (io.EOF
// after its End), Write sends Data within the peer's credit, CloseWrite
// sends End, and Close ends the stream as closing a socket ends a TCP
// connection. Deadlines work as net.Conn says.
type Conn struct {
	s             *Stream
	body          *BodyReader
	local, remote net.Addr
	onEnd         func()

	parent context.Context // the stream's session
	ctx    context.Context // ends at Close, or with parent
	cancel context.CancelFunc
	rd, wd *deadline

	wmu       sync.Mutex // one Write at a time, so writes keep their order
	mu        sync.Mutex
	eof       bool // Read saw the peer's End
	unread    bool // Read left part of a frame unread
	wrote     bool // End sent
	closed    bool // Close was called
	closeOnce sync.Once
	endOnce   sync.Once
}

// NewConn returns s as a net.Conn whose waits end when ctx ends (the
// stream's session) or at Close. onEnd, when set, runs once when the
// stream is over on this side, at Close or after it.
func NewConn(ctx context.Context, s *Stream, local, remote net.Addr, onEnd func()) *Conn {
	c := &Conn{s: s, local: local, remote: remote, onEnd: onEnd, parent: ctx}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.rd, c.wd = newDeadline(c.ctx), newDeadline(c.ctx)
	c.body = NewBodyReader(c.rd, s)
	return c
}

// Stream returns the stream under c.
func (c *Conn) Stream() *Stream { return c.s }

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.body.Read(p)
	c.mu.Lock()
	c.unread = len(c.body.cur) > 0
	if err == io.EOF {
		c.eof = true
	}
	c.mu.Unlock()
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

// Write implements net.Conn. It returns once p is queued within the
// peer's credit, which it waits for.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	ended := c.wrote || c.closed
	c.mu.Unlock()
	if ended {
		return 0, c.opError("write", net.ErrClosed)
	}
	n := 0
	for n < len(p) {
		k, err := c.s.Reserve(c.wd, min(len(p)-n, messages.MaxData))
		if err != nil {
			return n, c.opError("write", err)
		}
		if err := c.s.SendData(&messages.Data{ID: c.s.id, Data: p[n : n+k]}, k); err != nil {
			return n, c.opError("write", err)
		}
		n += k
	}
	return n, nil
}

// CloseWrite ends this side's direction: the peer reads EOF, and may go on
// sending.
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.wrote || c.closed {
		c.mu.Unlock()
		return nil
	}
	c.wrote = true
	c.mu.Unlock()
	if err := c.s.End(); err != nil {
		return c.opError("close", err)
	}
	return nil
}

// Close implements net.Conn, as closing a socket does: what was written is
// delivered and this side's direction ends, unless data from the peer is
// left unread, which resets the stream. Data the peer sends after the
// Close resets it too: nobody would read it.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.cancel() // a Read or Write in progress returns
		c.wmu.Lock()
		c.mu.Lock()
		eof, wrote := c.eof, c.wrote
		unread := c.unread || !eof && c.s.bufferedBytes() > 0
		c.wrote, c.closed = true, true
		c.mu.Unlock()
		if unread {
			c.s.Reset(messages.CodeCanceled, "connection closed with data unread")
		} else if !wrote {
			c.s.End()
		}
		c.wmu.Unlock()
		if unread || eof || c.s.Err() != nil {
			c.end()
			return
		}
		go c.drain()
	})
	return nil
}

// bufferedBytes reports the data bytes received and not yet taken.
func (s *Stream) bufferedBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buffered
}

// closeLinger bounds how long a closed Conn waits for its peer's
// direction to end (Linux keeps a closed socket in FIN_WAIT_2 as long).
const closeLinger = time.Minute

// drain waits, after Close, for the peer's direction to end; data that
// comes first resets the stream, and so does a peer that takes longer
// than closeLinger.
func (c *Conn) drain() {
	defer c.end()
	ctx, cancel := context.WithTimeout(c.parent, closeLinger)
	defer cancel()
	for {
		m, err := c.s.Next(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				c.s.Reset(messages.CodeCanceled, "connection closed")
			}
			return
		}
		if d, ok := m.(*messages.Data); ok {
			Release(d.Data)
			if len(d.Data) > 0 {
				c.s.Reset(messages.CodeCanceled, "connection closed")
				return
			}
		}
	}
}

func (c *Conn) end() {
	c.endOnce.Do(func() {
		if c.onEnd != nil {
			c.onEnd()
		}
	})
}

func (c *Conn) opError(op string, err error) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	switch {
	case closed:
		err = net.ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = os.ErrDeadlineExceeded
	}
	return &net.OpError{Op: op, Net: "keyhole", Source: c.local, Addr: c.remote, Err: err}
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rd.set(t); return nil }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

// deadline is a context whose Done channel closes when its deadline
// passes or its parent ends, and opens afresh when a later deadline is set:
// the stream's waits (Next, Reserve) look at Done anew each time they wait,
// so a Conn's deadlines reach them without a context per call.
type deadline struct {
	parent context.Context

	mu    sync.Mutex
	ch    chan struct{}
	shut  bool // ch is closed
	timer *time.Timer
}

func newDeadline(parent context.Context) *deadline {
	d := &deadline{parent: parent, ch: make(chan struct{})}
	context.AfterFunc(parent, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.closeLocked()
	})
	return d
}

func (d *deadline) closeLocked() {
	if !d.shut {
		d.shut = true
		close(d.ch)
	}
}

// set moves the deadline to t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.parent.Err() != nil {
		return
	}
	if d.shut {
		d.ch, d.shut = make(chan struct{}), false
	}
	switch wait := time.Until(t); {
	case t.IsZero():
	case wait <= 0:
		d.closeLocked()
	default:
		ch := d.ch
		d.timer = time.AfterFunc(wait, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.ch == ch {
				d.closeLocked()
			}
		})
	}
}

func (d *deadline) Deadline() (time.Time, bool) { return time.Time{}, false }

func (d *deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func (d *deadline) Err() error {
	if err := d.parent.Err(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shut {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (d *deadline) Value(key any) any { return d.parent.Value(key) }
