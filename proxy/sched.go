package proxy

import (
	"sync"
	"time"

	"github.com/coder/websocket"
)

// scheduler drives the timed duties of one instance's client connections
// (clientConn.tick) from one goroutine, instead of a ticker and a goroutine
// per connection. Every connection is visited once per half ping
// interval, as its own ticker did. The visits are spread: the connections
// are dealt into slots, and each tick visits one slot, so that ten
// thousand connections do not all queue their pings (and start their
// writers) at the same instant.
type scheduler struct {
	p     *Proxy
	every time.Duration // between ticks; len(slots) ticks make half a ping interval
	quit  chan struct{}

	mu    sync.Mutex
	slots [][]*clientConn
	next  int // the slot the next tick visits
	n     int
}

// Bounds on the ticks: no faster than minTick, and no more than maxSlots
// of them per half ping interval (64 for the default 10 s ping).
const (
	minTick  = 50 * time.Millisecond
	maxSlots = 64
)

// schedulers holds each instance's scheduler while it has connections.
// A field of Proxy would do as well; the scheduler exists only while it
// has something to do, so that an idle process keeps no goroutine for it.
var schedulers = struct {
	sync.Mutex
	m map[*Proxy]*scheduler
}{m: map[*Proxy]*scheduler{}}

// scheduleConn adds c to p's scheduler, starting it if c is the first
// connection, and returns it for remove.
func (p *Proxy) scheduleConn(c *clientConn) *scheduler {
	schedulers.Lock()
	s := schedulers.m[p]
	if s == nil {
		s = newScheduler(p)
		schedulers.m[p] = s
		go s.run()
	}
	s.add(c)
	schedulers.Unlock()
	if p.ctx.Err() != nil {
		// The scheduler closes what it holds when the instance stops; c
		// may have come after that.
		c.requestClose(websocket.StatusGoingAway, "proxy shutting down")
	}
	return s
}

func newScheduler(p *Proxy) *scheduler {
	half := p.cfg.Ping / 2
	slots := min(max(int(half/minTick), 1), maxSlots)
	return &scheduler{
		p:     p,
		every: half / time.Duration(slots),
		quit:  make(chan struct{}),
		slots: make([][]*clientConn, slots),
	}
}

// add puts c in the slot visited last of all, so that its first visit
// comes half a ping interval from now, as a ticker's first tick would.
// Caller holds schedulers.
func (s *scheduler) add(c *clientConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot := (s.next + len(s.slots) - 1) % len(s.slots)
	c.sched, c.slot, c.idx = s, slot, len(s.slots[slot])
	c.lastRefresh = time.Now()
	s.slots[slot] = append(s.slots[slot], c)
	s.n++
}

// remove takes c out; the scheduler stops when it was the last one.
func (s *scheduler) remove(c *clientConn) {
	schedulers.Lock()
	defer schedulers.Unlock()
	s.mu.Lock()
	slot := s.slots[c.slot]
	last := len(slot) - 1
	moved := slot[last]
	slot[c.idx], moved.idx = moved, c.idx
	slot[last] = nil
	s.slots[c.slot] = slot[:last]
	s.n--
	empty := s.n == 0
	s.mu.Unlock()
	if empty && schedulers.m[s.p] == s {
		delete(schedulers.m, s.p)
		close(s.quit)
	}
}

func (s *scheduler) run() {
	t := time.NewTicker(s.every)
	defer t.Stop()
	var batch []*clientConn
	for {
		select {
		case <-s.quit:
			return
		case <-s.p.ctx.Done():
			// Every connection closes: the instance is stopping.
			s.mu.Lock()
			batch = batch[:0]
			for _, slot := range s.slots {
				batch = append(batch, slot...)
			}
			s.mu.Unlock()
			for _, c := range batch {
				c.requestClose(websocket.StatusGoingAway, "proxy shutting down")
			}
			return
		case <-t.C:
		}
		s.mu.Lock()
		batch = append(batch[:0], s.slots[s.next]...)
		s.next = (s.next + 1) % len(s.slots)
		s.mu.Unlock()
		now := time.Now()
		for _, c := range batch {
			c.tick(now)
		}
		clear(batch)
		batch = batch[:0]
		if cap(batch) > 4096 {
			batch = nil
		}
	}
}
