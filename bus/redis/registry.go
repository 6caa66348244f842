package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyhole-tunnel/keyhole/bus"
)

// regKey is the Redis key of a registry entry.
func regKey(name string) string { return "keyhole:reg:" + name }

// ttlMillis converts a TTL for PX and PEXPIRE, which need a positive count
// of milliseconds.
func ttlMillis(ttl time.Duration) (int64, error) {
	ms := ttl.Milliseconds()
	if ms <= 0 {
		return 0, fmt.Errorf("ttl %s is below one millisecond", ttl)
	}
	return ms, nil
}

// Claim implements [bus.Registry]: SET with PX and GET (Redis 6.2 and
// later), replacing any holder and returning it.
func (b *Bus) Claim(ctx context.Context, name, holder string, ttl time.Duration) (string, error) {
	if b.closed.Load() {
		return "", bus.ErrClosed
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return "", fmt.Errorf("redis bus: claim: %w", err)
	}
	prev, err := b.client.SetArgs(ctx, regKey(name), holder, goredis.SetArgs{TTL: time.Duration(ms) * time.Millisecond, Get: true}).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	if err != nil {
		b.failed(err)
		return "", fmt.Errorf("redis bus: claim: %w", err)
	}
	return prev, nil
}

// instancesKey is the sorted set of live instances, scored by when their
// last heartbeat expires (unix milliseconds).
const instancesKey = "keyhole:instances"

// Heartbeat implements [bus.Registry]: ZADD with the expiry as the score.
func (b *Bus) Heartbeat(ctx context.Context, instance string, ttl time.Duration) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	exp := time.Now().Add(ttl).UnixMilli()
	if err := b.client.ZAdd(ctx, instancesKey, goredis.Z{Score: float64(exp), Member: instance}).Err(); err != nil {
		b.failed(err)
		return fmt.Errorf("redis bus: heartbeat: %w", err)
	}
	return nil
}

// Instances implements [bus.Registry]: the members whose expiry has not
// passed; the expired ones are removed on the way.
func (b *Bus) Instances(ctx context.Context) ([]string, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	pipe := b.client.TxPipeline()
	pipe.ZRemRangeByScore(ctx, instancesKey, "-inf", "("+now)
	live := pipe.ZRangeByScore(ctx, instancesKey, &goredis.ZRangeBy{Min: now, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		b.failed(err)
		return nil, fmt.Errorf("redis bus: instances: %w", err)
	}
	return live.Val(), nil
}

// Refresh implements [bus.Registry]: PEXPIRE, only if holder still holds
// name, checked and done in one script.
func (b *Bus) Refresh(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if b.closed.Load() {
		return false, bus.ErrClosed
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return false, fmt.Errorf("redis bus: refresh: %w", err)
	}
	n, err := b.refreshScript.Run(ctx, b.client, []string{regKey(name)}, holder, ms).Int()
	if err != nil {
		b.failed(err)
		return false, fmt.Errorf("redis bus: refresh: %w", err)
	}
	return n == 1, nil
}

// Release implements [bus.Registry]: DEL, only if holder still holds name.
func (b *Bus) Release(ctx context.Context, name, holder string) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if err := b.releaseScript.Run(ctx, b.client, []string{regKey(name)}, holder).Err(); err != nil {
		b.failed(err)
		return fmt.Errorf("redis bus: release: %w", err)
	}
	return nil
}

// Lookup implements [bus.Registry].
func (b *Bus) Lookup(ctx context.Context, name string) (string, error) {
	if b.closed.Load() {
		return "", bus.ErrClosed
	}
	holder, err := b.client.Get(ctx, regKey(name)).Result()
	if errors.Is(err, goredis.Nil) {
		return "", bus.ErrNotFound
	}
	if err != nil {
		b.failed(err)
		return "", fmt.Errorf("redis bus: lookup: %w", err)
	}
	return holder, nil
}
