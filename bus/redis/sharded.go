package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyhole-tunnel/keyhole/bus"
)

// shard is the bus's subscription to one topic in cluster mode: an
// SSUBSCRIBE on a go-redis PubSub of its own, connected to the master that
// owns the topic's slot, and a goroutine that reads it.
//
// One PubSub per topic, rather than one for all: go-redis dials a sharded
// PubSub to the owner of its first channel's slot and sends every
// SSUBSCRIBE there, so the other channels of a shared one would be
// subscribed on the wrong node (or refused with MOVED or CROSSSLOT). The
// proxy subscribes one topic per instance, so this costs one connection.
type shard struct {
	b     *Bus
	topic string

	// Guarded by b.mu.
	subs      []*subscription // copied on write, as topicState.subs
	confirmed bool            // the SSUBSCRIBE is in force on the current connection
	waiters   []chan struct{} // closed when it is

	// mu guards ps, retired, sent and stop, and serializes SSUBSCRIBE and
	// SUNSUBSCRIBE with the replacement of ps, so that no SSUBSCRIBE goes
	// out once the shard is retired.
	mu      sync.Mutex
	ps      *goredis.PubSub
	retired bool // the last handler left or the bus closed
	sent    bool // an SSUBSCRIBE was issued on ps
	stop    chan struct{}

	done chan struct{} // closed when the reader has returned
}

// newShard creates the shard for topic and starts its reader. Called with
// b.mu held: creating a PubSub without channels does no I/O.
func (b *Bus) newShard(topic string) *shard {
	sh := &shard{
		b:     b,
		topic: topic,
		ps:    b.cluster.SSubscribe(context.Background()),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	b.wg.Add(1)
	go sh.run()
	return sh
}

// subscribeSharded is Subscribe in cluster mode.
func (b *Bus) subscribeSharded(ctx context.Context, topic string, h bus.Handler) (bus.Subscription, error) {
	s := &subscription{b: b, topic: topic, h: h}
	wait := make(chan struct{})
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil, bus.ErrClosed
	}
	sh := b.shards[topic]
	if sh == nil {
		sh = b.newShard(topic)
		b.shards[topic] = sh
	}
	s.sh = sh
	sh.subs = appendCopy(sh.subs, s)
	confirmed := sh.confirmed
	if !confirmed {
		sh.waiters = append(sh.waiters, wait)
	}
	b.mu.Unlock()
	if confirmed {
		return s, nil
	}
	select {
	case <-wait:
		return s, nil
	case <-ctx.Done():
		b.removeSharded(ctx, s)
		return nil, fmt.Errorf("redis bus: subscribe %q: %w", topic, ctx.Err())
	case <-b.done:
		return nil, bus.ErrClosed
	}
}

// removeSharded is remove in cluster mode, for a subscription already marked
// cancelled. When s was its shard's last handler, the shard is retired: the
// SUNSUBSCRIBE goes out and, within ctx, its confirmation is awaited, so that
// Publish no longer counts this bus once Unsubscribe has returned.
func (b *Bus) removeSharded(ctx context.Context, s *subscription) {
	sh := s.sh
	b.mu.Lock()
	sh.subs = removeCopy(sh.subs, s)
	// A closed bus has taken every shard out of the map and retires them
	// itself.
	last := len(sh.subs) == 0 && b.shards[s.topic] == sh
	if last {
		// A Subscribe from now on starts a new shard, with a connection of
		// its own, while this one winds down.
		delete(b.shards, s.topic)
	}
	b.mu.Unlock()
	if last {
		sh.retire(ctx)
	}
}

// retire ends the subscription: SUNSUBSCRIBE, wait (within ctx) until the
// reader has seen it confirmed, and close the connection.
func (sh *shard) retire(ctx context.Context) {
	sh.mu.Lock()
	if !sh.retired {
		sh.retired = true
		close(sh.stop)
	}
	ps := sh.ps
	var err error
	if sh.sent {
		// Detached from ctx for the reason commandContext gives.
		err = ps.SUnsubscribe(commandContext(ctx), sh.topic)
	}
	sent := sh.sent
	sh.mu.Unlock()
	if sent && err == nil {
		select {
		case <-sh.done:
		case <-ctx.Done():
		case <-sh.b.done:
		}
	} else if err != nil {
		sh.b.log.Debug("redis bus: sunsubscribe failed", "topic", sh.topic, "err", err)
	}
	// Ends the reader if the confirmation never came; closing the
	// connection drops the subscription in Redis as well.
	_ = ps.Close()
}

// closeShards retires every shard for Close, without waiting for
// confirmations: closing the connections ends the subscriptions.
func (b *Bus) closeShards() {
	b.mu.Lock()
	shards := b.shards
	b.shards = make(map[string]*shard)
	b.mu.Unlock()
	for _, sh := range shards {
		sh.mu.Lock()
		if !sh.retired {
			sh.retired = true
			close(sh.stop)
		}
		ps := sh.ps
		sh.mu.Unlock()
		_ = ps.Close()
	}
}

// pingShards pings every shard's connection, for the health check.
func (b *Bus) pingShards(ctx context.Context) {
	b.mu.Lock()
	shards := make([]*shard, 0, len(b.shards))
	for _, sh := range b.shards {
		shards = append(shards, sh)
	}
	b.mu.Unlock()
	for _, sh := range shards {
		sh.mu.Lock()
		ps, retired := sh.ps, sh.retired
		sh.mu.Unlock()
		if retired {
			continue
		}
		if err := ps.Ping(ctx); err != nil && !b.closed.Load() {
			b.log.Debug("redis bus: pub/sub ping failed", "topic", sh.topic, "err", err)
		}
	}
}

// subscribe issues the SSUBSCRIBE on the current PubSub, unless the shard is
// retired. A failure needs nothing more: go-redis keeps the channel and
// subscribes it when the reader's next Receive dials a connection.
func (sh *shard) subscribe() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.retired {
		return
	}
	sh.sent = true
	if err := sh.ps.SSubscribe(context.Background(), sh.topic); err != nil {
		sh.b.log.Debug("redis bus: ssubscribe failed", "topic", sh.topic, "err", err)
	}
}

// replace swaps the PubSub for a new one and subscribes on it. go-redis
// replaces a broken connection by itself, but not one on which Redis
// refused the SSUBSCRIBE (MOVED to another node, CLUSTERDOWN) or dropped it
// (the slot moved away): there the connection works and the topic is not
// subscribed.
func (sh *shard) replace() {
	sh.mu.Lock()
	if sh.retired {
		sh.mu.Unlock()
		return
	}
	old := sh.ps
	sh.ps = sh.b.cluster.SSubscribe(context.Background())
	sh.mu.Unlock()
	_ = old.Close()
	sh.subscribe()
}

func (sh *shard) pubsub() (ps *goredis.PubSub, retired bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.ps, sh.retired
}

// shardMaxBackoff caps the reader's backoff lower than a single server's
// maxBackoff: after a failover, each attempt is the next chance to find the
// new master (the layout reloaded after the previous failure), and the
// attempts end with the failover, which takes seconds.
const shardMaxBackoff = 250 * time.Millisecond

// run is the shard's reader: the only goroutine that receives on its
// PubSub, and the one that calls its handlers, in order.
//
// A topic lives on one shard, and go-redis's sharded PubSub dials that
// shard's master as its cached cluster layout names it. When the
// connection breaks, go-redis dials again (and resubscribes) on the next
// Receive or Ping, which fails while the master is down. run then has the
// layout reloaded after every failure, so that once a replica has taken
// over, the next attempt reaches it; go-redis alone would keep dialling the
// dead master until its periodic reload, a minute later.
func (sh *shard) run() {
	b := sh.b
	defer b.wg.Done()
	defer close(sh.done)
	sh.subscribe()
	backoff := minBackoff
	broken := false
	confirmedOnce := false
	for {
		ps, _ := sh.pubsub()
		// As in deliver: a context deadline makes go-redis treat a silent
		// connection as broken.
		ctx, cancel := context.WithTimeout(context.Background(), 3*b.interval)
		msg, err := ps.Receive(ctx)
		cancel()
		if _, retired := sh.pubsub(); retired {
			// Only the SUNSUBSCRIBE confirmation, or the end of the
			// connection, is awaited now.
			if sub, ok := msg.(*goredis.Subscription); err != nil || (ok && sub.Kind == "sunsubscribe") {
				_ = ps.Close()
				return
			}
			if m, ok := msg.(*goredis.Message); ok {
				b.dispatchShard(sh, m)
			}
			continue
		}
		if err != nil {
			if !broken {
				b.log.Warn("redis bus: pub/sub connection lost", "topic", sh.topic, "err", err)
				broken = true
			}
			b.confirmShard(sh, false)
			b.cluster.ReloadState(context.Background())
			var rerr goredis.Error
			if errors.As(err, &rerr) {
				sh.replace()
			}
			timer := time.NewTimer(backoff)
			select {
			case <-sh.stop:
			case <-timer.C:
			}
			timer.Stop()
			backoff = min(2*backoff, shardMaxBackoff)
			continue
		}
		backoff = minBackoff
		switch m := msg.(type) {
		case *goredis.Message:
			b.dispatchShard(sh, m)
		case *goredis.Subscription:
			switch m.Kind {
			case "ssubscribe":
				if broken {
					broken = false
					b.log.Info("redis bus: pub/sub connection re-established", "topic", sh.topic)
				}
				// Only the first confirmation answers the SSUBSCRIBE that
				// Subscribe asked for; a later one is go-redis's (or
				// replace's) renewal on a new connection.
				if confirmedOnce {
					b.signalReconnect()
				}
				confirmedOnce = true
				b.confirmShard(sh, true)
			case "sunsubscribe":
				// Not asked for: Redis dropped the subscription because the
				// slot left this node.
				b.log.Warn("redis bus: subscription dropped by Redis; subscribing again", "topic", sh.topic)
				broken = true
				b.confirmShard(sh, false)
				b.cluster.ReloadState(context.Background())
				sh.replace()
			}
		case *goredis.Pong:
		default:
			b.log.Debug("redis bus: unexpected pub/sub reply", "type", fmt.Sprintf("%T", msg))
		}
	}
}

// confirmShard records whether sh's subscription is in force, and releases
// the Subscribe calls waiting for it when it is.
func (b *Bus) confirmShard(sh *shard, confirmed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sh.confirmed = confirmed
	if confirmed {
		for _, w := range sh.waiters {
			close(w)
		}
		sh.waiters = nil
	}
}

func (b *Bus) dispatchShard(sh *shard, m *goredis.Message) {
	b.mu.Lock()
	subs := sh.subs
	b.mu.Unlock()
	if len(subs) == 0 || m.Channel != sh.topic {
		b.dropped.Add(1)
		b.log.Debug("redis bus: message for a topic without handlers", "topic", m.Channel)
		return
	}
	payload := []byte(m.Payload)
	for _, s := range subs {
		s.deliver(payload)
	}
}
