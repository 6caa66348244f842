package redis_test

import (
	"context"
	"log"

	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/bus/redis"
)

// ExampleBus_CertCache shares ACME certificates between proxy instances
// through the Redis they already share (the proxy package's ACMEManager
// takes the cache the same way). It needs a running redis-server, so it is
// compiled but not run.
func ExampleBus_CertCache() {
	ctx := context.Background()
	b, err := redis.New(ctx, "redis://127.0.0.1:6379/0", redis.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      b.CertCache(""), // every instance sees every certificate
		HostPolicy: autocert.HostWhitelist("tunnel.example.com"),
	}
	_ = m.TLSConfig() // serve it on :443
}
