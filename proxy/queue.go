package proxy

import "sync"

// frameQueue is a bounded FIFO of frames for one writer. Unlike a buffered
// channel it costs nothing while empty, which matters with thousands of
// idle clients, and it hands the writer everything queued at once.
type frameQueue struct {
	mu     sync.Mutex
	frames [][]byte
	max    int
	ready  chan struct{} // signalled when frames may be waiting
}

func newFrameQueue(max int) *frameQueue {
	return &frameQueue{max: max, ready: make(chan struct{}, 1)}
}

// push queues f, or reports false if the queue is full. It never blocks.
func (q *frameQueue) push(f []byte) bool {
	q.mu.Lock()
	if len(q.frames) >= q.max {
		q.mu.Unlock()
		return false
	}
	q.frames = append(q.frames, f)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take moves every queued frame into buf and returns it.
func (q *frameQueue) take(buf [][]byte) [][]byte {
	q.mu.Lock()
	buf = append(buf[:0], q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	if cap(q.frames) > 64 {
		q.frames = nil // let a burst's backing array go
	}
	q.mu.Unlock()
	return buf
}
