package redis

import (
	"context"
	"errors"
	"fmt"
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

// Claim implements [bus.Registry]: SET with PX, replacing any holder.
func (b *Bus) Claim(ctx context.Context, name, holder string, ttl time.Duration) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return fmt.Errorf("redis bus: claim: %w", err)
	}
	if err := b.client.Set(ctx, regKey(name), holder, time.Duration(ms)*time.Millisecond).Err(); err != nil {
		return fmt.Errorf("redis bus: claim: %w", err)
	}
	return nil
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
		return "", fmt.Errorf("redis bus: lookup: %w", err)
	}
	return holder, nil
}
