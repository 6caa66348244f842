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

// ClaimOrdered implements [bus.Registry]: compare and set in one script.
func (b *Bus) ClaimOrdered(ctx context.Context, name, holder string, ttl time.Duration) (string, bool, error) {
	if b.closed.Load() {
		return "", false, bus.ErrClosed
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return "", false, fmt.Errorf("redis bus: claim: %w", err)
	}
	res, err := b.claimOrderedScript.Run(ctx, b.client, []string{regKey(name)}, holder, ms).Slice()
	if err != nil {
		b.failed(err)
		return "", false, fmt.Errorf("redis bus: claim: %w", err)
	}
	won, _ := res[0].(int64)
	cur, _ := res[1].(string)
	return cur, won == 1, nil
}

// setKey is the Redis key of a set: a sorted set of members scored by
// when their stay expires (unix milliseconds).
func setKey(set string) string { return "keyhole:set:" + set }

// instancesKey is the set of live instances.
const instancesKey = "keyhole:instances"

// Join implements [bus.Registry]: ZADD with the expiry as the score, and
// the key kept alive as long as its longest stay (one script), so that a
// set everyone left without a word goes too.
func (b *Bus) Join(ctx context.Context, set, member string, ttl time.Duration) error {
	return b.join(ctx, setKey(set), member, ttl)
}

func (b *Bus) join(ctx context.Context, key, member string, ttl time.Duration) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return fmt.Errorf("redis bus: join: %w", err)
	}
	exp := time.Now().UnixMilli() + ms
	if err := b.joinScript.Run(ctx, b.client, []string{key}, exp, member).Err(); err != nil {
		b.failed(err)
		return fmt.Errorf("redis bus: join: %w", err)
	}
	return nil
}

// Leave implements [bus.Registry].
func (b *Bus) Leave(ctx context.Context, set, member string) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if err := b.client.ZRem(ctx, setKey(set), member).Err(); err != nil {
		b.failed(err)
		return fmt.Errorf("redis bus: leave: %w", err)
	}
	return nil
}

// Members implements [bus.Registry]: the members whose expiry has not
// passed; the expired ones are removed on the way.
func (b *Bus) Members(ctx context.Context, set string) ([]string, error) {
	return b.members(ctx, setKey(set))
}

func (b *Bus) members(ctx context.Context, key string) ([]string, error) {
	if b.closed.Load() {
		return nil, bus.ErrClosed
	}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	pipe := b.client.TxPipeline()
	pipe.ZRemRangeByScore(ctx, key, "-inf", "("+now)
	live := pipe.ZRangeByScore(ctx, key, &goredis.ZRangeBy{Min: now, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		b.failed(err)
		return nil, fmt.Errorf("redis bus: members: %w", err)
	}
	return live.Val(), nil
}

// Heartbeat implements [bus.Registry].
func (b *Bus) Heartbeat(ctx context.Context, instance string, ttl time.Duration) error {
	return b.join(ctx, instancesKey, instance, ttl)
}

// Instances implements [bus.Registry].
func (b *Bus) Instances(ctx context.Context) ([]string, error) {
	return b.members(ctx, instancesKey)
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
