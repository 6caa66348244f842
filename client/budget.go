package client

import (
	"context"
	"sync"
)

// budget bounds the bytes waiting in a queue. Senders are admitted in
// arrival order while what is queued stays under limit; a frame always fits
// an empty queue, so a frame larger than the limit still goes, alone.
type budget struct {
	limit int

	mu      sync.Mutex
	used    int
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n     int
	ready chan struct{}
}

// acquire waits until n bytes may be queued, or ctx ends.
func (b *budget) acquire(ctx context.Context, n int) bool {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.fits(n) {
		b.used += n
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return true
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // admitted meanwhile: give the bytes back
		b.used -= n
	default:
		for i, x := range b.waiters {
			if x == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
	}
	b.admit()
	return false
}

// release returns n bytes taken by acquire.
func (b *budget) release(n int) {
	b.mu.Lock()
	b.used -= n
	b.admit()
	b.mu.Unlock()
}

func (b *budget) fits(n int) bool { return b.used == 0 || b.used+n <= b.limit }

// admit wakes waiters, in order, while they fit. Caller holds b.mu.
func (b *budget) admit() {
	for len(b.waiters) > 0 && b.fits(b.waiters[0].n) {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
}
