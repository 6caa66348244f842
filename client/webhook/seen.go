package webhook

import (
	"container/heap"
	"crypto/sha256"
	"net/http"
	"sync"
	"time"
)

// seenSet remembers the signatures accepted, each until its time is up,
// and at most max of them.
type seenSet struct {
	mu  sync.Mutex
	max int
	at  map[[sha256.Size]byte]time.Time // signature → remembered until
	exp expiries                        // the same, soonest first; may hold stale entries
}

func newSeenSet(max int) *seenSet {
	return &seenSet{max: max, at: make(map[[sha256.Size]byte]time.Time)}
}

// add remembers mac until the given time, unless it is remembered already
// (a replay) or the set is full.
func (s *seenSet) add(mac [sha256.Size]byte, until, now time.Time) *Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	if _, ok := s.at[mac]; ok {
		return &Error{Status: http.StatusUnauthorized, Err: ErrReplayed}
	}
	if len(s.at) >= s.max {
		return &Error{Status: http.StatusServiceUnavailable, Err: ErrBusy, RetryAfter: max(s.exp[0].at.Sub(now), time.Second)}
	}
	s.at[mac] = until
	heap.Push(&s.exp, expiry{mac, until})
	if len(s.exp) > 2*s.max {
		// Forgotten entries linger in the heap until their time: drop
		// them so it stays within a small multiple of the set.
		s.exp = s.exp[:0]
		for k, t := range s.at {
			s.exp = append(s.exp, expiry{k, t})
		}
		heap.Init(&s.exp)
	}
	return nil
}

// forget drops mac, if it is still the entry remembered until then.
func (s *seenSet) forget(mac [sha256.Size]byte, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.at[mac]; ok && t.Equal(until) {
		delete(s.at, mac)
	}
}

// expire drops the entries whose time is up (remembered until t means
// refused up to and including t), and forgotten ones from the heap's top,
// so that the top is the live entry to expire next.
func (s *seenSet) expire(now time.Time) {
	for len(s.exp) > 0 {
		e := s.exp[0]
		t, live := s.at[e.mac]
		live = live && t.Equal(e.at)
		if live && !e.at.Before(now) {
			return
		}
		heap.Pop(&s.exp)
		if live {
			delete(s.at, e.mac)
		}
	}
}

type expiry struct {
	mac [sha256.Size]byte
	at  time.Time
}

// expiries is a min-heap of expiry by time.
type expiries []expiry

func (h expiries) Len() int           { return len(h) }
func (h expiries) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiries) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiries) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiries) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
