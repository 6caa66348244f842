// Package queue is a bounded FIFO that holds no memory while empty.
//
// A buffered channel sized for bursts allocates that whole buffer up front,
// which for thousands of idle client connections or WebSocket streams adds
// up to more than everything else they hold. This queue grows with what is
// in it and lets its backing array go once a burst has drained.
package queue

import "sync"

// Queue is a FIFO bounded in items and in bytes, for one consumer and any
// number of producers. Push never blocks.
type Queue[T any] struct {
	maxItems int
	maxBytes int64
	ready    chan struct{}

	mu    sync.Mutex
	items []T
	sizes []int64
	head  int
	bytes int64
}

// New returns a queue of at most maxItems items and maxBytes bytes (0 means
// no byte bound). One item always fits into an empty queue, however large.
func New[T any](maxItems int, maxBytes int64) *Queue[T] {
	return &Queue[T]{maxItems: maxItems, maxBytes: maxBytes, ready: make(chan struct{}, 1)}
}

// Push appends v, of size n bytes, and reports false if that would pass a
// bound; the queue is then unchanged.
func (q *Queue[T]) Push(v T, n int64) bool {
	q.mu.Lock()
	held := len(q.items) - q.head
	if held >= q.maxItems || (held > 0 && q.maxBytes > 0 && q.bytes+n > q.maxBytes) {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, v)
	q.sizes = append(q.sizes, n)
	q.bytes += n
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// Ready is signalled after a Push, and after a Pop that leaves items
// behind, so a consumer waiting on it never misses a queued item.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

// Pop removes and returns the oldest item, or reports false if there is
// none.
func (q *Queue[T]) Pop() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.bytes -= q.sizes[q.head]
	q.head++
	if q.head == len(q.items) {
		q.reset()
	} else {
		// Items remain: a consumer that takes one and waits again must
		// still be woken.
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return v, true
}

// TakeAll moves every item into buf, oldest first, and returns it.
func (q *Queue[T]) TakeAll(buf []T) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	buf = append(buf, q.items[q.head:]...)
	clear(q.items)
	q.reset()
	return buf
}

// reset empties the queue, keeping a small backing array for the next
// items and letting a burst's large one go. Caller holds q.mu.
func (q *Queue[T]) reset() {
	q.head, q.bytes = 0, 0
	if cap(q.items) > 64 {
		q.items, q.sizes = nil, nil
		return
	}
	q.items, q.sizes = q.items[:0], q.sizes[:0]
}

// Len returns the number of items queued.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}
