package redis_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/bus/redis"
)

// ExampleNew connects to Redis, listens on an instance's reply topic, and
// re-announces a hostname whenever the connection to Redis comes back. It
// needs a running redis-server, so it is compiled but not run.
func ExampleNew() {
	ctx := context.Background()
	const host, holder = "abc.tunnel.example", "instance-1/conn-7"

	var b *redis.Bus
	b, err := redis.New(ctx, "redis://:secret@127.0.0.1:6379/0", redis.Options{
		Logger: slog.Default(),
		OnReconnect: func() {
			// A restarted Redis has forgotten the registry.
			if _, err := b.Claim(context.Background(), host, holder, 30*time.Second); err != nil {
				slog.Error("re-announce", "host", host, "err", err)
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	sub, err := b.Subscribe(ctx, bus.InstanceTopic("instance-1"), func(payload []byte) {
		// Hand payload to a bounded queue; never block here.
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Unsubscribe(ctx)

	if _, err := b.Claim(ctx, host, holder, 30*time.Second); err != nil {
		fmt.Println(err)
	}
}
