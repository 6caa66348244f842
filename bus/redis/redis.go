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
	//
	// In cluster mode each topic has a connection of its own, to the shard
	// that owns the topic's slot, and OnReconnect is called once a topic's
	// subscription is in force again on a new connection: after that
	// shard's master failed and a replica took over, after the slot moved
	// to another shard, or after the connection broke. It is called after
	// the renewed subscription is confirmed, so a re-announcement it makes
	// is heard.
	OnReconnect func()

	// HealthCheckInterval is how often the pub/sub connection (in cluster
	// mode: each topic's) is pinged.
	// If nothing (not even the reply to a ping) arrives on it for three
	// intervals, it is considered dead and dialled again. Zero means
	// DefaultHealthCheckInterval.
	HealthCheckInterval time.Duration
}

// Bus is a [bus.Bus], [bus.Registry] and [bus.Pinger] backed by Redis, a
// single server or a Redis Cluster. Its methods are safe for concurrent use.
type Bus struct {
	// client runs every command but the pub/sub ones: PUBLISH or SPUBLISH,
	// the registry, the cert cache, PING. It is a *goredis.Client or, in
	// cluster mode, the *goredis.ClusterClient that cluster also holds.
	client   goredis.UniversalClient
	cluster  *goredis.ClusterClient // nil on a single server
	psClient *goredis.Client        // single server: owns the pub/sub connection only
	ps       *goredis.PubSub        // single server: the one pub/sub connection
	log      *slog.Logger
	interval time.Duration
	onRecon  func()

	refreshScript *goredis.Script
	releaseScript *goredis.Script
	// claimOrderedScript sets the key unless its value sorts after the
	// new one.
	claimOrderedScript *goredis.Script
	// joinScript adds a member to a set and makes the key expire with
	// the set's longest stay.
	joinScript *goredis.Script

	// cmdMu serializes SUBSCRIBE and UNSUBSCRIBE commands together with the
	// topic-state change that each one stands for, so the order of commands
	// on the wire is the order of the state changes. Single server only.
	cmdMu sync.Mutex
	// mu guards topics and shards. It is held only briefly; the delivery
	// goroutines take it for every message.
	mu     sync.Mutex
	topics map[string]*topicState // single server
	shards map[string]*shard      // cluster: one sharded subscription per topic

	closed      atomic.Bool
	connects    atomic.Int64 // pub/sub connections made so far
	done        chan struct{}
	reconnected chan struct{} // capacity 1: reconnections are coalesced
	wg          sync.WaitGroup
	dropped     atomic.Uint64
}

var (
	_ bus.Bus      = (*Bus)(nil)
	_ bus.Batcher  = (*Bus)(nil)
	_ bus.Registry = (*Bus)(nil)
	_ bus.Pinger   = (*Bus)(nil)
)

// New connects to the Redis server or Redis Cluster named by rawURL and
// returns a bus over it. New fails if Redis does not answer a PING within
// ctx (in cluster mode: every master).
//
// A single server is named redis://[[user]:password@]host:port[/db], or
// rediss:// for TLS; see go-redis's ParseURL for query options.
//
// A Redis Cluster is named
// redis+cluster://[[user]:password@]host:port[,host:port...][/], or
// rediss+cluster:// for TLS. The nodes listed are only where the bus starts:
// it learns the others from the cluster. A cluster has no databases, so the
// path is empty or "/". The query takes go-redis's ParseClusterURL options
// (dial_timeout=3s, ...). With TLS every node's certificate must be valid
// for the first host's name, the name go-redis verifies on all of them.
func New(ctx context.Context, rawURL string, opts Options) (*Bus, error) {
	b := &Bus{
		log:         opts.Logger,
		interval:    opts.HealthCheckInterval,
		onRecon:     opts.OnReconnect,
		topics:      make(map[string]*topicState),
		shards:      make(map[string]*shard),
		done:        make(chan struct{}),
		reconnected: make(chan struct{}, 1),
		refreshScript: goredis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`),
		// Byte order, not Lua's < on strings, which collates by the
		// server's locale.
		claimOrderedScript: goredis.NewScript(`
local cur = redis.call("GET", KEYS[1])
if cur then
	local a, b = cur, ARGV[1]
	local n = math.min(#a, #b)
	local greater = #a > #b
	for i = 1, n do
		local x, y = string.byte(a, i), string.byte(b, i)
		if x ~= y then
			greater = x > y
			break
		end
	end
	if greater then
		return {0, cur}
	end
else
	cur = ""
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return {1, cur}`),
		joinScript: goredis.NewScript(`
redis.call("ZADD", KEYS[1], ARGV[1], ARGV[2])
local last = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
return redis.call("PEXPIREAT", KEYS[1], last[2])`),
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
	var err error
	if isClusterURL(rawURL) {
		err = b.connectCluster(ctx, rawURL)
	} else {
		err = b.connectServer(ctx, rawURL)
	}
	if err != nil {
		return nil, err
	}

	b.wg.Add(1)
	go b.healthCheck()
	if b.onRecon != nil {
		b.wg.Add(1)
		go b.notifyReconnects()
	}
	return b, nil
}

// connectServer connects to a single Redis server.
func (b *Bus) connectServer(ctx context.Context, rawURL string) error {
	ro, err := goredis.ParseURL(rawURL)
	if err != nil {
		return fmt.Errorf("redis bus: parse url: %w", err)
	}
	// Maintenance notifications are a Redis Cloud feature; with the default
	// "auto" mode go-redis would probe for it on every connection and run
	// extra machinery for nothing on a self-hosted Redis.
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	// No CLIENT SETINFO at connect: it only labels the connection, it is
	// unknown before Redis 7.2, and a least-privilege ACL user (see
	// deploy/README.md) would have it refused into the ACL log on every
	// connection.
	ro.DisableIdentity = true

	// Commands honour their context's deadline for network I/O too, not
	// only go-redis's read and write timeouts (5 s, each of up to four
	// tries): a caller that gives a public request 2 s for a registry
	// lookup gets its answer in 2 s even when Redis hangs.
	cro := *ro
	cro.ContextTimeoutEnabled = true
	client := goredis.NewClient(&cro)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return fmt.Errorf("redis bus: ping %s: %w", ro.Addr, err)
	}
	b.client = client
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
	b.wg.Add(1)
	go b.deliver()
	return nil
}

// Publish implements [bus.Bus]. Delivery is at-most-once: Redis drops a
// message for a subscriber whose connection is down, and the count is the
// number of subscribed connections (one per Bus), not of handlers.
//
// In cluster mode the message is an SPUBLISH, which goes to the shard that
// owns the topic's slot only, where every Bus subscribed to the topic
// listens: the count is the same as on a single server.
func (b *Bus) Publish(ctx context.Context, topic string, payload []byte) (int, error) {
	if b.closed.Load() {
		return 0, bus.ErrClosed
	}
	n, err := b.publish(ctx, b.client, topic, payload).Result()
	if err != nil {
		b.failed(err)
		return 0, fmt.Errorf("redis bus: publish: %w", err)
	}
	return int(n), nil
}

// publish queues PUBLISH, or SPUBLISH in cluster mode, on c.
func (b *Bus) publish(ctx context.Context, c goredis.Cmdable, topic string, payload []byte) *goredis.IntCmd {
	if b.cluster != nil {
		return c.SPublish(ctx, topic, payload)
	}
	return c.Publish(ctx, topic, payload)
}

// PublishBatch implements [bus.Batcher]: the PUBLISHes go in one pipeline,
// one round trip, in order. In cluster mode the pipeline is split by shard,
// one round trip to each at the same time, and a topic's messages all go to
// its one shard in order; a failure on one shard does not stop the others,
// so messages after the first failed one may have been delivered although
// their counts are reported as zero.
func (b *Bus) PublishBatch(ctx context.Context, msgs []bus.Message) ([]int, error) {
	n := make([]int, len(msgs))
	if b.closed.Load() {
		return n, bus.ErrClosed
	}
	cmds := make([]*goredis.IntCmd, len(msgs))
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, m := range msgs {
			cmds[i] = b.publish(ctx, p, m.Topic, m.Payload)
		}
		return nil
	})
	for i, c := range cmds {
		if c.Err() != nil {
			if err == nil {
				err = c.Err()
			}
			break
		}
		n[i] = int(c.Val())
	}
	if err != nil {
		b.failed(err)
		return n, fmt.Errorf("redis bus: publish: %w", err)
	}
	return n, nil
}

// Ping implements [bus.Pinger]. In cluster mode it reloads the cluster's
// layout and pings every master, so it fails while any slot has no master
// that answers (until a replica has taken over from a failed one), which is
// when some hostnames or instance topics cannot be served.
func (b *Bus) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if err := b.ping(ctx); err != nil {
		b.failed(err)
		return fmt.Errorf("redis bus: ping: %w", err)
	}
	return nil
}

func (b *Bus) ping(ctx context.Context) error {
	if b.cluster == nil {
		return b.client.Ping(ctx).Err()
	}
	return b.cluster.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		if err := c.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("%s: %w", c.Options().Addr, err)
		}
		return nil
	})
}

// failed is told of every failed command. In cluster mode it has go-redis
// reload the cluster's layout (asynchronously, coalesced): go-redis does so
// by itself on a MOVED redirect, but not when the node it sends to is gone
// or hangs, so after a master crashed it would keep sending that slot's
// commands to the dead node, for up to a minute, after a replica had taken
// over. reloadOnDialError covers a failed dial as it happens; this covers
// the rest, such as a master that stopped answering on an open connection.
func (b *Bus) failed(err error) {
	if b.cluster != nil && !errors.Is(err, goredis.Nil) {
		b.cluster.ReloadState(context.Background())
	}
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
	var psErr error
	if b.cluster != nil {
		b.closeShards()
	} else {
		// Closing the PubSub closes its connection, which ends the delivery
		// goroutine's blocked Receive.
		psErr = b.ps.Close()
	}
	b.wg.Wait()
	err := psErr
	if b.psClient != nil {
		err = errors.Join(err, b.psClient.Close())
	}
	err = errors.Join(err, b.client.Close())
	if err != nil {
		return fmt.Errorf("redis bus: close: %w", err)
	}
	return nil
}

// healthCheck pings the pub/sub connections so that a healthy connection
// always has traffic; the delivery goroutines treat a long silence as a dead
// connection.
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
		if b.cluster != nil {
			b.pingShards(ctx)
		} else if err := b.ps.Ping(ctx); err != nil && !b.closed.Load() {
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
