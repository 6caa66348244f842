package wsbuf

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// A hijacked HTTP connection comes with net/http's 4 KiB bufio.Reader and
// 4 KiB bufio.Writer, which net/http keeps referenced for as long as the
// connection lives and coder/websocket reads and writes through: 8 KiB per
// websocket even while nothing moves, as much as the rest of an idle
// tunnel's heap. Accept drops them and gives the library buffers of
// bufio's minimum size instead, over an IdleConn, which holds a pooled
// buffer only while received bytes wait to be consumed or a message is
// being written.

const (
	// ioBufSize is a pooled buffer: one read system call's worth, or the
	// gathered small writes of one message.
	ioBufSize = 4 << 10
	// libBufSize is what the library's bufio.Reader gets: bufio's minimum.
	libBufSize = 16
	// libWriteBufSize is what its bufio.Writer gets: room for a whole
	// control frame (a 2-byte header and at most 125 bytes), so that the
	// library's own frames (pongs, close frames, written from its
	// goroutines) reach the connection in one Write each, and never
	// interleave with a frame of the writer's.
	libWriteBufSize = 2 + 125 + 1
	// closeFlushTimeout bounds Close's sending of gathered bytes: Close
	// must not hang on a client that reads nothing.
	closeFlushTimeout = 10 * time.Millisecond
)

var ioPool = sync.Pool{New: func() any { b := make([]byte, ioBufSize); return &b }}

func getIOBuf() *[]byte { return ioPool.Get().(*[]byte) }

func putIOBuf(b *[]byte) {
	if cap(*b) == ioBufSize {
		*b = (*b)[:ioBufSize]
		ioPool.Put(b)
	}
}

// Accept is websocket.Accept for a connection that keeps no buffer while
// idle (see IdleConn). conn is nil when w cannot be hijacked, in which case
// the websocket is websocket.Accept's own.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (ws *websocket.Conn, conn *IdleConn, err error) {
	if !canHijack(w) {
		ws, err = websocket.Accept(w, r, opts)
		return ws, nil, err
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err = websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, nil, err
	}
	return ws, hw.conn, nil
}

// canHijack reports whether w, or what it wraps, is an http.Hijacker, as
// websocket.Accept looks for one.
func canHijack(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// hijackWriter hands websocket.Accept an IdleConn in place of the hijacked
// connection, with small buffers of its own.
type hijackWriter struct {
	http.ResponseWriter
	conn *IdleConn
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := newIdleConn(nc)
	if n := brw.Reader.Buffered(); n > 0 {
		// The client sent more than the upgrade request (net/http read it
		// ahead): it is the start of the websocket stream.
		b, _ := brw.Reader.Peek(n)
		p := getIOBuf()
		if len(b) > cap(*p) {
			*p = make([]byte, len(b))
		}
		c.rbuf, c.rend = p, copy(*p, b)
	}
	// net/http keeps these for the life of the connection but never uses
	// them again after a hijack: let their buffers go.
	*brw.Reader = bufio.Reader{}
	*brw.Writer = bufio.Writer{}
	w.conn = c
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, libBufSize), bufio.NewWriterSize(c, libWriteBufSize)), nil
}

// IdleConn is a server's websocket connection that holds no buffer while
// no bytes move.
//
// Reads: the bytes of one read system call wait in a pooled buffer until
// consumed; the buffer goes back to the pool as soon as they are. Wait
// blocks until bytes arrive without holding any buffer (the goroutine is
// parked on the poller, not inside a read), so an idle connection costs
// none, and the goroutine that waits there, close to the bottom of its
// stack, lets the runtime shrink that stack. A read of libBufSize or less
// (the library's bufio.Reader filling itself) gets one byte, so that the
// library never holds bytes it has not consumed: every byte not yet
// consumed is here, where Wait sees it.
//
// Writes: between Cork and Uncork, small writes are gathered in a pooled
// buffer and a large one goes out with what was gathered in one writev, so
// that a message costs one system call; the buffer goes back to the pool
// at Uncork. Writes while not corked (the library's pongs and close frames)
// pass straight through. A close frame the library writes from its own
// goroutine while the writer has the connection corked is gathered too,
// and Close sends it before closing.
//
// A connection with no file descriptor (TLS) cannot be waited on: Wait
// returns at once and a read blocks holding its pooled buffer, as a
// bufio.Reader would.
type IdleConn struct {
	net.Conn
	raw syscall.RawConn // nil without a file descriptor

	fillMu     sync.Mutex // one read system call at a time
	rmu        sync.Mutex
	rbuf       *[]byte // pooled; the unconsumed bytes are (*rbuf)[rpos:rend]
	rpos, rend int
	rerr       error // how reading ended, reported once the bytes are consumed

	wmu    sync.Mutex
	corked bool
	wbuf   *[]byte // pooled while corked; the gathered bytes
}

func newIdleConn(nc net.Conn) *IdleConn {
	c := &IdleConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
	return c
}

// Read implements net.Conn.
func (c *IdleConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if n, err, ok := c.take(p); ok {
			return n, err
		}
		if len(p) >= ioBufSize {
			if n, err, ok := c.readInto(p); ok {
				return n, err
			}
			continue
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// take consumes waiting bytes into p; ok is false when none are waiting
// and reading has not ended.
func (c *IdleConn) take(p []byte) (n int, err error, ok bool) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rpos < c.rend {
		if len(p) <= libBufSize {
			p = p[:1]
		}
		n = copy(p, (*c.rbuf)[c.rpos:c.rend])
		c.rpos += n
		if c.rpos == c.rend {
			putIOBuf(c.rbuf)
			c.rbuf, c.rpos, c.rend = nil, 0, 0
		}
		return n, nil, true
	}
	if c.rerr != nil {
		return 0, c.rerr, true
	}
	return 0, nil, false
}

func (c *IdleConn) ready() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.rpos < c.rend || c.rerr != nil
}

// readInto reads straight into p, which is as large as a pooled buffer;
// ok is false when bytes arrived through another reader meanwhile.
func (c *IdleConn) readInto(p []byte) (int, error, bool) {
	c.fillMu.Lock()
	defer c.fillMu.Unlock()
	if c.ready() {
		return 0, nil, false
	}
	n, err := c.Conn.Read(p)
	return n, err, true
}

// fill reads what has arrived into a pooled buffer, waiting for something
// to arrive. An error it returns is the connection's (closed, deadline);
// an error of the read itself, or the end of the stream, is kept for take.
func (c *IdleConn) fill() error {
	c.fillMu.Lock()
	defer c.fillMu.Unlock()
	if c.ready() {
		return nil
	}
	if c.raw == nil {
		b := getIOBuf()
		n, err := c.Conn.Read(*b)
		c.store(b, n, err)
		return nil
	}
	return c.raw.Read(func(fd uintptr) bool {
		b := getIOBuf()
		n, err := syscall.Read(int(fd), *b)
		for err == syscall.EINTR {
			n, err = syscall.Read(int(fd), *b)
		}
		switch {
		case err == syscall.EAGAIN:
			putIOBuf(b) // nothing yet: the poller wakes us, bufferless
			return false
		case err != nil:
			c.store(b, 0, os.NewSyscallError("read", err))
		case n == 0:
			c.store(b, 0, io.EOF)
		default:
			c.store(b, n, nil)
		}
		return true
	})
}

func (c *IdleConn) store(b *[]byte, n int, err error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if n > 0 {
		c.rbuf, c.rpos, c.rend = b, 0, n
	} else {
		putIOBuf(b)
	}
	if err != nil {
		c.rerr = err
	}
}

// Wait blocks until bytes have arrived, or reading has ended, holding no
// buffer meanwhile. It returns at once when bytes are already waiting, or
// when the connection cannot be waited on. Its error is the connection's;
// the next Read reports it too.
func (c *IdleConn) Wait() error {
	if c.raw == nil || c.ready() {
		return nil
	}
	return c.fill()
}

// Close implements net.Conn. What was gathered goes out first (briefly
// tried, and not at all while a write is under way): the library closes
// right after writing a close frame, which may have been gathered.
func (c *IdleConn) Close() error {
	if c.wmu.TryLock() {
		if c.wbuf != nil && len(*c.wbuf) > 0 {
			c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
			c.Conn.Write(*c.wbuf)
			*c.wbuf = (*c.wbuf)[:0]
		}
		c.wmu.Unlock()
	}
	return c.Conn.Close()
}

// Write implements net.Conn.
func (c *IdleConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	if !c.corked {
		c.wmu.Unlock()
		return c.Conn.Write(p)
	}
	defer c.wmu.Unlock()
	if c.wbuf == nil {
		c.wbuf = getIOBuf()
		*c.wbuf = (*c.wbuf)[:0]
	}
	gathered := *c.wbuf
	if len(gathered)+len(p) <= cap(gathered) {
		*c.wbuf = append(gathered, p...)
		return len(p), nil
	}
	// Too large to gather: what was gathered goes out with p, at once and
	// in one system call, so p need not be copied.
	*c.wbuf = gathered[:0]
	bufs := net.Buffers{gathered, p}
	if len(gathered) == 0 {
		bufs = bufs[1:]
	}
	n, err := bufs.WriteTo(c.Conn)
	return max(0, int(n)-len(gathered)), err
}

// Cork starts gathering writes. Every write until Uncork returns, the
// one Uncork makes included, must be done within timeout.
func (c *IdleConn) Cork(timeout time.Duration) {
	c.wmu.Lock()
	c.corked = true
	c.wmu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(timeout))
}

// Uncork sends what was gathered, stops gathering and gives the buffer
// back.
func (c *IdleConn) Uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	defer c.Conn.SetWriteDeadline(time.Time{})
	c.corked = false
	b := c.wbuf
	if b == nil {
		return nil
	}
	c.wbuf = nil
	defer putIOBuf(b)
	if len(*b) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*b)
	return err
}
