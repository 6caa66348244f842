package bus

import (
	"context"
	"sync"
	"time"
)

// Memory is an in-process [Bus] and [Registry] for a single proxy instance.
// Publish runs the handlers in the publisher's goroutine, which is why
// handlers must not block.
type Memory struct {
	mu     sync.RWMutex
	subs   map[string][]*memSub
	names  map[string]memEntry
	sets   map[string]map[string]time.Time // member expiries, by set
	closed bool
	now    func() time.Time
}

type memSub struct {
	m     *Memory
	topic string
	h     Handler
}

type memEntry struct {
	holder  string
	expires time.Time
}

// NewMemory returns an empty in-memory bus.
func NewMemory() *Memory {
	return &Memory{subs: make(map[string][]*memSub), names: make(map[string]memEntry), sets: make(map[string]map[string]time.Time), now: time.Now}
}

// Publish implements [Bus].
func (m *Memory) Publish(ctx context.Context, topic string, payload []byte) (int, error) {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return 0, ErrClosed
	}
	subs := m.subs[topic]
	m.mu.RUnlock()
	// subs is never mutated in place (Subscribe and Unsubscribe copy), so it
	// is safe to range over without the lock.
	for _, s := range subs {
		s.h(payload)
	}
	return len(subs), nil
}

// Subscribe implements [Bus].
func (m *Memory) Subscribe(ctx context.Context, topic string, h Handler) (Subscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	s := &memSub{m: m, topic: topic, h: h}
	old := m.subs[topic]
	subs := make([]*memSub, len(old), len(old)+1)
	copy(subs, old)
	m.subs[topic] = append(subs, s)
	return s, nil
}

func (s *memSub) Unsubscribe(ctx context.Context) error {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.subs[s.topic]
	subs := make([]*memSub, 0, len(old))
	for _, o := range old {
		if o != s {
			subs = append(subs, o)
		}
	}
	if len(subs) == 0 {
		delete(m.subs, s.topic)
	} else {
		m.subs[s.topic] = subs
	}
	return nil
}

// Close implements [Bus].
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.subs = make(map[string][]*memSub)
	return nil
}

// Claim implements [Registry].
func (m *Memory) Claim(ctx context.Context, name, holder string, ttl time.Duration) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", ErrClosed
	}
	var prev string
	if e, ok := m.names[name]; ok && !m.now().After(e.expires) {
		prev = e.holder
	}
	m.names[name] = memEntry{holder: holder, expires: m.now().Add(ttl)}
	return prev, nil
}

// ClaimOrdered implements [Registry].
func (m *Memory) ClaimOrdered(ctx context.Context, name, holder string, ttl time.Duration) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", false, ErrClosed
	}
	var cur string
	if e, ok := m.names[name]; ok && !m.now().After(e.expires) {
		cur = e.holder
	}
	if cur > holder {
		return cur, false, nil
	}
	m.names[name] = memEntry{holder: holder, expires: m.now().Add(ttl)}
	return cur, true, nil
}

// instancesSet is the set Heartbeat joins; no set name made by a caller
// begins with a NUL.
const instancesSet = "\x00instances"

// Join implements [Registry].
func (m *Memory) Join(ctx context.Context, set, member string, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	s := m.sets[set]
	if s == nil {
		s = make(map[string]time.Time)
		m.sets[set] = s
	}
	s[member] = m.now().Add(ttl)
	return nil
}

// Leave implements [Registry].
func (m *Memory) Leave(ctx context.Context, set, member string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	delete(m.sets[set], member)
	if len(m.sets[set]) == 0 {
		delete(m.sets, set)
	}
	return nil
}

// Members implements [Registry].
func (m *Memory) Members(ctx context.Context, set string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var out []string
	now := m.now()
	for id, exp := range m.sets[set] {
		if now.After(exp) {
			delete(m.sets[set], id)
			continue
		}
		out = append(out, id)
	}
	return out, nil
}

// Heartbeat implements [Registry].
func (m *Memory) Heartbeat(ctx context.Context, instance string, ttl time.Duration) error {
	return m.Join(ctx, instancesSet, instance, ttl)
}

// Instances implements [Registry].
func (m *Memory) Instances(ctx context.Context) ([]string, error) {
	return m.Members(ctx, instancesSet)
}

// Refresh implements [Registry].
func (m *Memory) Refresh(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, ErrClosed
	}
	e, ok := m.names[name]
	if !ok || e.holder != holder || m.now().After(e.expires) {
		return false, nil
	}
	m.names[name] = memEntry{holder: holder, expires: m.now().Add(ttl)}
	return true, nil
}

// Release implements [Registry].
func (m *Memory) Release(ctx context.Context, name, holder string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.names[name]; ok && e.holder == holder {
		delete(m.names, name)
	}
	return nil
}

// Lookup implements [Registry].
func (m *Memory) Lookup(ctx context.Context, name string) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return "", ErrClosed
	}
	e, ok := m.names[name]
	if !ok || m.now().After(e.expires) {
		return "", ErrNotFound
	}
	return e.holder, nil
}
