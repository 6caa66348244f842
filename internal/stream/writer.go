package stream

import (
	"sync"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// Writer queues one connection's outgoing frames. Control frames go first,
// in the order they came. Each stream's data frames keep their order, and
// the streams take turns a frame at a time, within the connection's
// credit: a big body never holds another stream back by more than a frame,
// and a stream whose reader stalled holds back nobody (its sender ran out
// of the stream's credit long before the connection's).
//
// A Writer holds nothing while idle, so thousands of idle connections
// cost little.
type Writer struct {
	maxControl int

	mu       sync.Mutex
	control  [][]byte
	ctlBytes int
	queues   map[messages.ID]*dataQueue
	ring     []*dataQueue // streams with frames waiting, in turn order
	credit   int
	closed   bool
	ready    chan struct{}
	onReady  func()
}

type dataQueue struct {
	id     messages.ID
	frames []queued
	inRing bool
}

type queued struct {
	b []byte
	n int // connection credit the frame uses
}

// NewWriter returns a writer with credit bytes of connection credit whose
// control queue holds at most maxControl bytes.
func NewWriter(credit, maxControl int) *Writer {
	return &Writer{credit: credit, maxControl: maxControl, ready: make(chan struct{}, 1)}
}

// Ready is signalled when frames may have become writable.
func (w *Writer) Ready() <-chan struct{} { return w.ready }

// OnReady makes f run, besides the Ready signal, whenever frames may have
// become writable: for an owner that starts its writing goroutine on
// demand rather than keeping one waiting. f must not block. Set it before
// the writer is shared.
func (w *Writer) OnReady(f func()) { w.onReady = f }

func (w *Writer) wake() {
	signal(w.ready)
	if w.onReady != nil {
		w.onReady()
	}
}

// Control queues a frame ahead of all data. It reports false when the
// writer is closed or the control queue is full; the frame is then
// dropped.
func (w *Writer) Control(frame []byte) bool {
	w.mu.Lock()
	ok := w.controlLocked(frame)
	w.mu.Unlock()
	if ok {
		w.wake()
	}
	return ok
}

func (w *Writer) controlLocked(frame []byte) bool {
	if w.closed || (len(w.control) > 0 && w.ctlBytes+len(frame) > w.maxControl) {
		return false
	}
	w.control = append(w.control, frame)
	w.ctlBytes += len(frame)
	return true
}

// Data queues a frame of stream id behind that stream's earlier frames; n
// is the connection credit it uses. It reports false once the writer is
// closed.
func (w *Writer) Data(id messages.ID, frame []byte, n int) bool {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return false
	}
	if w.queues == nil {
		w.queues = make(map[messages.ID]*dataQueue)
	}
	q := w.queues[id]
	if q == nil {
		q = &dataQueue{id: id}
		w.queues[id] = q
	}
	q.frames = append(q.frames, queued{frame, n})
	if !q.inRing {
		q.inRing = true
		w.ring = append(w.ring, q)
	}
	w.mu.Unlock()
	w.wake()
	return true
}

// Credit adds n bytes of connection credit.
func (w *Writer) Credit(n int) {
	w.mu.Lock()
	w.credit += n
	w.mu.Unlock()
	w.wake()
}

// Reset queues frame, the Error that resets stream id, ahead of all data,
// and drops the stream's data frames still queued, in one step: nothing of
// a stream may reach the peer after its reset, and a peer that has
// forgotten the stream takes a late data frame for a violation. It
// reports what Control reports.
func (w *Writer) Reset(id messages.ID, frame []byte) bool {
	w.mu.Lock()
	w.forgetLocked(id)
	ok := w.controlLocked(frame)
	w.mu.Unlock()
	if ok {
		w.wake()
	}
	return ok
}

// Send queues m, a frame that keeps no order with the data (a head, a
// credit, an Error), as Control does; an Error for a stream goes as Reset.
func (w *Writer) Send(m messages.Message) bool {
	frame := messages.Encode(m)
	if e, ok := m.(*messages.Error); ok && !e.ID.IsZero() {
		return w.Reset(e.ID, frame)
	}
	return w.Control(frame)
}

// Forget drops the frames of stream id still queued: the stream was reset.
func (w *Writer) Forget(id messages.ID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.forgetLocked(id)
}

func (w *Writer) forgetLocked(id messages.ID) {
	if q := w.queues[id]; q != nil {
		q.frames = nil
		delete(w.queues, id)
	}
}

// Queued reports the data frames waiting for stream id.
func (w *Writer) Queued(id messages.ID) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if q := w.queues[id]; q != nil {
		return len(q.frames)
	}
	return 0
}

// Close drops everything queued; Control and Data refuse from then on.
func (w *Writer) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.control, w.queues, w.ring, w.ctlBytes = nil, nil, nil, 0
}

// Take moves writable frames into buf and returns it: every control frame,
// then data frames a stream at a time within the connection's credit, until
// about max bytes are taken (always at least one frame when any is
// writable).
func (w *Writer) Take(buf [][]byte, max int) [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	size := 0
	for len(w.control) > 0 && (size == 0 || size+len(w.control[0]) <= max) {
		f := w.control[0]
		w.control[0] = nil
		w.control = w.control[1:]
		w.ctlBytes -= len(f)
		size += len(f)
		buf = append(buf, f)
	}
	if len(w.control) == 0 {
		w.control = nil
	}
	misses := 0
	for len(w.ring) > 0 && misses < len(w.ring) {
		q := w.ring[0]
		if len(q.frames) == 0 { // forgotten
			w.ring = w.ring[1:]
			q.inRing = false
			continue
		}
		f := q.frames[0]
		if f.n <= w.credit && size > 0 && size+len(f.b) > max {
			break // q keeps its turn for the next Take
		}
		w.ring = w.ring[1:]
		if f.n > w.credit {
			w.ring = append(w.ring, q)
			misses++
			continue
		}
		misses = 0
		q.frames[0] = queued{}
		q.frames = q.frames[1:]
		w.credit -= f.n
		size += len(f.b)
		buf = append(buf, f.b)
		if len(q.frames) > 0 {
			w.ring = append(w.ring, q)
		} else {
			q.frames, q.inRing = nil, false
			if w.queues[q.id] == q {
				delete(w.queues, q.id)
			}
		}
	}
	if len(w.ring) == 0 {
		w.ring = nil
	}
	return buf
}

// batchMax bounds a Batch: small frames travel together, a full data frame
// and some control frames at most.
const batchMax = messages.MaxData + 16<<10

// Flush writes every writable frame with write, several small ones at a
// time as one Batch, until none is writable. write must not keep the frame.
func (w *Writer) Flush(write func(frame []byte) error) error {
	var frames [][]byte
	var batch []byte
	for {
		frames = w.Take(frames[:0], batchMax)
		if len(frames) == 0 {
			return nil
		}
		var err error
		if len(frames) == 1 {
			err = write(frames[0])
		} else {
			batch = messages.AppendBatch(batch[:0], frames)
			err = write(batch)
		}
		for _, f := range frames {
			Release(f)
		}
		clear(frames)
		if err != nil {
			return err
		}
		if cap(batch) > 2*batchMax {
			batch = nil
		}
	}
}
