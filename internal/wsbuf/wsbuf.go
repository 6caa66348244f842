// Package wsbuf reads websocket messages into pooled buffers, and gathers
// a message's writes into one system call ([CorkConn]).
//
// coder/websocket's Conn.Read grows a fresh buffer for every message, which
// for a 400 KB body means a dozen allocations, copies and zeroings. Most of
// keyhole's reads only look at a message before copying what they keep into
// a frame of its own, so a pooled buffer serves them with no allocation.
package wsbuf

import (
	"bytes"
	"context"
	"sync"

	"github.com/coder/websocket"
)

// maxPooled keeps unusually large buffers out of the pool, so one huge
// message does not pin its memory for the life of the process.
const maxPooled = 4 << 20

var pool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Buffer holds one message. Its bytes are valid until Release.
type Buffer struct {
	b *bytes.Buffer
}

// Bytes returns the message.
func (b Buffer) Bytes() []byte { return b.b.Bytes() }

// Release returns the buffer to the pool; the bytes must not be used after.
func (b Buffer) Release() {
	if b.b.Cap() <= maxPooled {
		b.b.Reset()
		pool.Put(b.b)
	}
}

// Read reads the next message of c, honouring its read limit.
func Read(ctx context.Context, c *websocket.Conn) (websocket.MessageType, Buffer, error) {
	typ, r, err := c.Reader(ctx)
	if err != nil {
		return 0, Buffer{}, err
	}
	buf := pool.Get().(*bytes.Buffer)
	if _, err := buf.ReadFrom(r); err != nil {
		Buffer{buf}.Release()
		return 0, Buffer{}, err
	}
	return typ, Buffer{buf}, nil
}
