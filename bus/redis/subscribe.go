package redis

import (
	"context"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyhole-tunnel/keyhole/bus"
)

// topicState is what the bus knows about one topic. Guarded by Bus.mu.
type topicState struct {
	// subs is copied on write, so the delivery goroutine can range over a
	// snapshot without holding the lock.
	subs []*subscription
	// confirmed is true once Redis has confirmed the subscription on the
	// current connection.
	confirmed bool
	// waiters are closed when the subscription is confirmed.
	waiters []chan struct{}
	// unsubs holds one channel per UNSUBSCRIBE whose confirmation has not
	// arrived, oldest first; each is closed by its confirmation. While any
	// is pending, a subscribe confirmation answers an older SUBSCRIBE that
	// the pending UNSUBSCRIBE undoes, so it confirms nothing.
	unsubs []chan struct{}
}

type subscription struct {
	b     *Bus
	topic string
	h     bus.Handler
	sh    *shard // cluster mode: the shard it was added to

	// mu is held while h runs, so Unsubscribe can wait out a delivery in
	// progress and guarantee that h is not called after it returns.
	mu        sync.Mutex
	cancelled bool
}

// Subscribe implements [bus.Bus]. It returns once Redis has confirmed the
// subscription, or when ctx ends. Handlers run on the bus's single delivery
// goroutine (in cluster mode: one per topic, so handlers of different topics
// may run at the same time) and must not block; in particular a handler must
// not call Unsubscribe on its own subscription.
func (b *Bus) Subscribe(ctx context.Context, topic string, h bus.Handler) (bus.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("redis bus: subscribe %q: %w", topic, err)
	}
	if b.cluster != nil {
		return b.subscribeSharded(ctx, topic, h)
	}
	s := &subscription{b: b, topic: topic, h: h}
	wait := make(chan struct{})

	b.cmdMu.Lock()
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		b.cmdMu.Unlock()
		return nil, bus.ErrClosed
	}
	ts := b.topics[topic]
	if ts == nil {
		ts = &topicState{}
		b.topics[topic] = ts
	}
	// Redis knows the topic already when it has a subscription or one on the
	// way; a new SUBSCRIBE is needed only when the last handler left (or
	// never was).
	needCmd := len(ts.subs) == 0
	ts.subs = appendCopy(ts.subs, s)
	confirmed := ts.confirmed && !needCmd
	if !confirmed {
		ts.waiters = append(ts.waiters, wait)
	}
	b.mu.Unlock()
	var err error
	if needCmd {
		err = b.ps.Subscribe(commandContext(ctx), topic)
	}
	b.cmdMu.Unlock()

	if err != nil {
		b.remove(ctx, s)
		return nil, fmt.Errorf("redis bus: subscribe %q: %w", topic, err)
	}
	if confirmed {
		return s, nil
	}
	select {
	case <-wait:
		return s, nil
	case <-ctx.Done():
		b.remove(ctx, s)
		return nil, fmt.Errorf("redis bus: subscribe %q: %w", topic, ctx.Err())
	case <-b.done:
		return nil, bus.ErrClosed
	}
}

// Unsubscribe implements [bus.Subscription]. Once it returns, the handler is
// not called again, and if it was the bus's last handler for the topic,
// Redis has confirmed the UNSUBSCRIBE (unless ctx ended first, which only
// cuts the wait short). It must not be called from the handler itself, which
// would wait for itself forever. It always returns nil: the handler is gone
// locally whatever Redis says.
func (s *subscription) Unsubscribe(ctx context.Context) error {
	s.b.remove(ctx, s)
	return nil
}

// remove cancels s and, when it was the topic's last handler, tells Redis
// and waits (within ctx) for the confirmation, so that Publish no longer
// counts this bus once Unsubscribe has returned. A failed UNSUBSCRIBE is only
// logged: go-redis has already dropped the topic from the set it renews on
// reconnection, and a message that still arrives finds no handler.
func (b *Bus) remove(ctx context.Context, s *subscription) {
	s.mu.Lock()
	already := s.cancelled
	s.cancelled = true
	s.mu.Unlock()
	if already {
		return
	}
	if s.sh != nil {
		b.removeSharded(ctx, s)
		return
	}

	b.cmdMu.Lock()
	b.mu.Lock()
	ts := b.topics[s.topic]
	var confirmed chan struct{}
	if ts != nil {
		ts.subs = removeCopy(ts.subs, s)
		if len(ts.subs) == 0 && !b.closed.Load() {
			ts.confirmed = false
			confirmed = make(chan struct{})
			ts.unsubs = append(ts.unsubs, confirmed)
		}
	}
	b.mu.Unlock()
	var err error
	if confirmed != nil {
		err = b.ps.Unsubscribe(commandContext(ctx), s.topic)
	}
	b.cmdMu.Unlock()

	if confirmed == nil {
		return
	}
	if err != nil {
		// The command did not go out (go-redis is replacing the connection,
		// and the new one will not carry the topic), so no confirmation
		// will come for it.
		b.log.Debug("redis bus: unsubscribe failed", "topic", s.topic, "err", err)
		b.dropUnsub(s.topic, confirmed)
		return
	}
	select {
	case <-confirmed:
	case <-ctx.Done():
	case <-b.done:
	}
}

// dropUnsub forgets a pending UNSUBSCRIBE that was never sent.
func (b *Bus) dropUnsub(topic string, u chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts := b.topics[topic]
	if ts == nil {
		return
	}
	for i, o := range ts.unsubs {
		if o == u {
			close(u)
			ts.unsubs = append(ts.unsubs[:i:i], ts.unsubs[i+1:]...)
			break
		}
	}
	if len(ts.unsubs) == 0 && len(ts.subs) == 0 {
		delete(b.topics, topic)
	}
}

// commandContext detaches a (UN)SUBSCRIBE from the caller's deadline. The
// pub/sub connection is shared by every subscription, and go-redis drops and
// redials it when a command on it fails, even when it failed only because the
// caller's context had expired. go-redis bounds the write by its own write
// (and dial) timeout instead.
func commandContext(ctx context.Context) context.Context {
	return context.WithoutCancel(ctx)
}

func appendCopy(subs []*subscription, s *subscription) []*subscription {
	out := make([]*subscription, len(subs), len(subs)+1)
	copy(out, subs)
	return append(out, s)
}

func removeCopy(subs []*subscription, s *subscription) []*subscription {
	out := make([]*subscription, 0, len(subs))
	for _, o := range subs {
		if o != s {
			out = append(out, o)
		}
	}
	return out
}

// Reconnection backoff of the delivery goroutine while Redis is unreachable.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// deliver is the delivery goroutine: the only reader of the pub/sub
// connection.
//
// go-redis's PubSub reconnects by itself: when a read or write on the
// connection fails it closes it and dials again, re-sending SUBSCRIBE for
// every channel it has been asked to keep. Receive returns the error that
// triggered this (or, while Redis is unreachable, the dial error), and
// deliver backs off before reading again.
func (b *Bus) deliver() {
	defer b.wg.Done()
	backoff := minBackoff
	broken := false
	for {
		// A read deadline from the context, rather than Receive's timeout
		// argument, makes go-redis treat silence as a broken connection and
		// redial (it tolerates a timeout passed as an argument). With the
		// health-check pings a live connection is never silent this long.
		ctx, cancel := context.WithTimeout(context.Background(), 3*b.interval)
		msg, err := b.ps.Receive(ctx)
		cancel()
		if err != nil {
			if b.closed.Load() {
				return
			}
			if !broken {
				b.log.Warn("redis bus: pub/sub connection lost", "err", err)
				broken = true
			}
			// Until a new connection has confirmed them, the
			// subscriptions are not in force.
			b.resetConnState()
			timer := time.NewTimer(backoff)
			select {
			case <-b.done:
				timer.Stop()
				return
			case <-timer.C:
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		if broken {
			broken = false
			b.log.Info("redis bus: pub/sub connection re-established")
		}
		switch m := msg.(type) {
		case *goredis.Message:
			b.dispatch(m)
		case *goredis.Subscription:
			b.confirm(m)
		case *goredis.Pong:
		default:
			b.log.Debug("redis bus: unexpected pub/sub reply", "type", fmt.Sprintf("%T", msg))
		}
	}
}

// pubsubConnected runs (from go-redis's OnConnect hook) whenever a pub/sub
// connection has been dialled, before go-redis renews the subscriptions on
// it. Every connection after the first is a reconnection.
func (b *Bus) pubsubConnected() {
	b.resetConnState()
	if b.connects.Add(1) > 1 {
		b.signalReconnect()
	}
}

// signalReconnect has OnReconnect called, once for any number of signals
// that arrive before it runs.
func (b *Bus) signalReconnect() {
	select {
	case b.reconnected <- struct{}{}:
	default:
	}
}

// resetConnState forgets what the old connection had confirmed. go-redis
// renews the subscriptions on the new connection, and their confirmations
// mark the topics confirmed again. UNSUBSCRIBE commands sent on the old
// connection will never be confirmed, but they took effect all the same:
// their topics are not renewed.
func (b *Bus) resetConnState() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, ts := range b.topics {
		ts.confirmed = false
		for _, u := range ts.unsubs {
			close(u)
		}
		ts.unsubs = nil
		if len(ts.subs) == 0 {
			delete(b.topics, name)
		}
	}
}

func (b *Bus) confirm(m *goredis.Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts := b.topics[m.Channel]
	if ts == nil {
		return
	}
	switch m.Kind {
	case "subscribe":
		if len(ts.unsubs) > 0 || len(ts.subs) == 0 {
			return
		}
		ts.confirmed = true
		for _, w := range ts.waiters {
			close(w)
		}
		ts.waiters = nil
	case "unsubscribe":
		if len(ts.unsubs) > 0 {
			close(ts.unsubs[0])
			ts.unsubs = ts.unsubs[1:]
		}
		if len(ts.unsubs) == 0 && len(ts.subs) == 0 {
			delete(b.topics, m.Channel)
		}
	}
}

func (b *Bus) dispatch(m *goredis.Message) {
	b.mu.Lock()
	var subs []*subscription
	if ts := b.topics[m.Channel]; ts != nil {
		subs = ts.subs
	}
	b.mu.Unlock()
	if len(subs) == 0 {
		b.dropped.Add(1)
		b.log.Debug("redis bus: message for a topic without handlers", "topic", m.Channel)
		return
	}
	// One copy shared by every handler; handlers treat it as read-only.
	payload := []byte(m.Payload)
	for _, s := range subs {
		s.deliver(payload)
	}
}

func (s *subscription) deliver(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cancelled {
		s.h(p)
	}
}
