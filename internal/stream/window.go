package stream

import (
	"sync"
	"sync/atomic"
	"time"
)

// Budget bounds the receive windows granted beyond their initial size,
// in bytes: a stream's window grows only if its budget, and every parent
// budget, has room. A nil *Budget has no bound.
type Budget struct {
	limit  int64
	used   atomic.Int64
	parent *Budget
}

// NewBudget returns a budget of limit bytes inside parent (nil for none).
func NewBudget(limit int64, parent *Budget) *Budget {
	return &Budget{limit: limit, parent: parent}
}

// TryTake takes n bytes if this budget and its parents all have room.
func (b *Budget) TryTake(n int) bool {
	if b == nil {
		return true
	}
	if b.used.Add(int64(n)) > b.limit {
		b.used.Add(-int64(n))
		return false
	}
	if !b.parent.TryTake(n) {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

// Release returns n bytes taken by TryTake.
func (b *Budget) Release(n int) {
	for ; b != nil; b = b.parent {
		b.used.Add(-int64(n))
	}
}

// Used reports the bytes taken from b.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// ConnWindow is the receiving side of a connection's flow control. The
// connection's credit covers the frames on their way through the shared
// read path: a receiver returns it once a frame has left that path (handed
// to its stream's queue, which its own window bounds, or relayed on), so a
// stalled stream never holds the connection's credit.
//
// Like a stream's, the window grows (up to max) while credit is due again
// within fastCredit: under load every credit round trip through the two
// sides' goroutines takes a while, and a small window then throttles every
// stream of the connection at once.
type ConnWindow struct {
	mu          sync.Mutex
	window      int
	max         int
	outstanding int // credit the peer still has
	unacked     int // bytes passed on but not yet returned as credit
	lastCredit  time.Time
}

// NewConnWindow returns a connection window of window bytes that may grow
// to max.
func NewConnWindow(window, max int) *ConnWindow {
	return &ConnWindow{window: window, max: max, outstanding: window}
}

// Received accounts for n data bytes from the peer and reports false if
// the peer had no credit for them.
func (c *ConnWindow) Received(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.outstanding {
		return false
	}
	c.outstanding -= n
	return true
}

// Passed records that n bytes left the shared path and returns the credit
// to send the peer now: 0 until a quarter of the window has passed, so that
// credit travels in few frames.
func (c *ConnWindow) Passed(n int) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unacked += n
	if c.unacked < c.window/4 {
		return 0
	}
	inc := c.unacked
	now := time.Now()
	if now.Sub(c.lastCredit) < fastCredit && c.window < c.max {
		grow := min(c.window, c.max-c.window)
		c.window += grow
		inc += grow
	}
	c.lastCredit = now
	c.unacked = 0
	c.outstanding += inc
	return uint32(inc)
}
