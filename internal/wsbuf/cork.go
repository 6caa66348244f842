package wsbuf

import (
	"net"
	"sync"
	"time"
)

// CorkConn is a net.Conn whose writes can be held back and sent together.
//
// coder/websocket writes a client's masked frame through a 4 KiB buffer,
// one system call per 4 KiB: a 64 KiB data frame costs sixteen. Between
// Cork and Uncork every write is collected instead, so one websocket
// message, whatever its size, goes out in one system call. Writes while not
// corked (a pong, a close frame from the library's own goroutines) pass
// straight through.
type CorkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	buf    []byte
}

// NewCorkConn wraps c.
func NewCorkConn(c net.Conn) *CorkConn { return &CorkConn{Conn: c} }

// Write implements net.Conn.
func (c *CorkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		c.buf = append(c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// Cork starts collecting writes.
func (c *CorkConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// maxKept bounds the buffer a CorkConn keeps between messages.
const maxKept = 128 << 10

// Uncork sends what was collected, in one write bounded by timeout, and
// stops collecting.
func (c *CorkConn) Uncork(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Conn.Write(c.buf)
	c.Conn.SetWriteDeadline(time.Time{})
	if cap(c.buf) > maxKept {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
	return err
}
