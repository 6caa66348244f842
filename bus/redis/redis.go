package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keyhole-tunnel/keyhole/bus"
)

// DefaultHealthCheckInterval is the default for
// [Options.HealthCheckInterval].
const DefaultHealthCheckInterval = 3 * time.Second

// Options configures a [Bus]. The zero value is ready to use.
type Options struct {
	// Logger receives connection-state changes (lost, re-established) and
	// dropped messages. Nil discards them.
	Logger *slog.Logger

	// OnReconnect, if set, is called after the pub/sub connection was lost
	// and a new one established; the subscriptions are renewed on the new
	// connection at the same time. It runs
	// on a goroutine of its own, never concurrently with itself, and several
	// reconnections in quick succession may be reported once. Close waits for
	// it to return, so it must not block for long.
	OnReconnect func()

	// HealthCheckInterval is how often the pub/sub connection is pinged.
	// If nothing (not even the reply to a ping) arrives on it for three
	// intervals, it is considered dead and dialled again. Zero means
	// DefaultHealthCheckInterval.
	HealthCheckInterval time.Duration
}

// Bus is a [bus.Bus], [bus.Registry] and [bus.Pinger] backed by Redis. Its
// methods are safe for concurrent use.
type Bus struct {
	client   *goredis.Client // commands: PUBLISH, registry, PING
	psClient *goredis.Client // owns the pub/sub connection only
	ps       *goredis.PubSub
	log      *slog.Logger
	interval time.Duration
	onRecon  func()

	refreshScript *goredis.Script
	releaseScript *goredis.Script

	// cmdMu serializes SUBSCRIBE and UNSUBSCRIBE commands together with the
	// topic-state change that each one stands for, so the order of commands
	// on the wire is the order of the state changes.
	cmdMu sync.Mutex
	// mu guards topics. It is held only briefly; the delivery goroutine
	// takes it for every message.
	mu     sync.Mutex
	topics map[string]*topicState

	closed      atomic.Bool
	connects    atomic.Int64 // pub/sub connections made so far
	done        chan struct{}
	reconnected chan struct{} // capacity 1: reconnections are coalesced
	wg          sync.WaitGroup
	dropped     atomic.Uint64
}

var (
	_ bus.Bus      = (*Bus)(nil)
	_ bus.Registry = (*Bus)(nil)
	_ bus.Pinger   = (*Bus)(nil)
)

// New connects to the Redis server named by rawURL and returns a bus over
// it. The URL has the form redis://[[user]:password@]host:port[/db], or
// rediss:// for TLS; see go-redis's ParseURL for query options. New fails if
// the server does not answer a PING within ctx.
func New(ctx context.Context, rawURL string, opts Options) (*Bus, error) {
	ro, err := goredis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis bus: parse url: %w", err)
	}
	// Maintenance notifications are a Redis Cloud feature; with the default
	// "auto" mode go-redis would probe for it on every connection and run
	// extra machinery for nothing on a self-hosted Redis.
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

	b := &Bus{
		log:         opts.Logger,
		interval:    opts.HealthCheckInterval,
		onRecon:     opts.OnReconnect,
		topics:      make(map[string]*topicState),
		done:        make(chan struct{}),
		reconnected: make(chan struct{}, 1),
		refreshScript: goredis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`),
		releaseScript: goredis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`),
	}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if b.interval <= 0 {
		b.interval = DefaultHealthCheckInterval
	}

	// Commands honour their context's deadline for network I/O too, not
	// only go-redis's read and write timeouts (5 s, each of up to four
	// tries): a caller that gives a public request 2 s for a registry
	// lookup gets its answer in 2 s even when Redis hangs.
	cro := *ro
	cro.ContextTimeoutEnabled = true
	b.client = goredis.NewClient(&cro)
	if err := b.client.Ping(ctx).Err(); err != nil {
		_ = b.client.Close()
		return nil, fmt.Errorf("redis bus: ping %s: %w", ro.Addr, err)
	}
	// The pub/sub connection gets a client of its own, used for nothing
	// else, so that its OnConnect hook sees exactly the pub/sub
	// connections. go-redis may replace that connection from any goroutine
	// that finds it broken (Receive, Subscribe, the health-check Ping), and
	// the hook is the one place that sees every replacement.
	pso := *ro
	pso.OnConnect = func(context.Context, *goredis.Conn) error {
		b.pubsubConnected()
		return nil
	}
	b.psClient = goredis.NewClient(&pso)
	// A PubSub without channels does not connect yet; the delivery
	// goroutine's first Receive dials it.
	b.ps = b.psClient.Subscribe(ctx)

	b.wg.Add(2)
	go b.deliver()
	go b.healthCheck()
	if b.onRecon != nil {
		b.wg.Add(1)
		go b.notifyReconnects()
	}
	return b, nil
}

// Publish implements [bus.Bus]. Delivery is at-most-once: Redis drops a
// message for a subscriber whose connection is down, and the count is the
// number of subscribed connections (one per Bus), not of handlers.
func (b *Bus) Publish(ctx context.Context, topic string, payload []byte) (int, error) {
	if b.closed.Load() {
		return 0, bus.ErrClosed
	}
	n, err := b.client.Publish(ctx, topic, payload).Result()
	if err != nil {
		return 0, fmt.Errorf("redis bus: publish: %w", err)
	}
	return int(n), nil
}

// Ping implements [bus.Pinger].
func (b *Bus) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis bus: ping: %w", err)
	}
	return nil
}

// Dropped reports how many received messages had no handler (they arrived
// for a topic after its last subscription ended).
func (b *Bus) Dropped() uint64 { return b.dropped.Load() }

// Close implements [bus.Bus]. It cancels every subscription, waits for the
// delivery goroutine (and a running OnReconnect) to return, and closes the
// connections. Calling it again does nothing.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed.Swap(true) {
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	close(b.done)
	// Closing the PubSub closes its connection, which ends the delivery
	// goroutine's blocked Receive.
	psErr := b.ps.Close()
	b.wg.Wait()
	err := errors.Join(psErr, b.psClient.Close(), b.client.Close())
	if err != nil {
		return fmt.Errorf("redis bus: close: %w", err)
	}
	return nil
}

// healthCheck pings the pub/sub connection so that a healthy connection
// always has traffic; deliver treats a long silence as a dead connection.
// A ping that cannot be written makes go-redis reconnect at once.
func (b *Bus) healthCheck() {
	defer b.wg.Done()
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.interval)
		if err := b.ps.Ping(ctx); err != nil && !b.closed.Load() {
			b.log.Debug("redis bus: pub/sub ping failed", "err", err)
		}
		cancel()
	}
}

// notifyReconnects runs OnReconnect outside the delivery goroutine, so a
// slow hook (which typically talks to Redis) never delays deliveries.
func (b *Bus) notifyReconnects() {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case <-b.reconnected:
		}
		b.onRecon()
	}
}
