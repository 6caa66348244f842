// Package redis implements [bus.Bus], [bus.Registry] and [bus.Pinger] over
// Redis, so several proxy instances can share hostnames and replies.
//
// Start with [New]:
//
//	b, err := redis.New(ctx, "redis://127.0.0.1:6379/0", redis.Options{})
//
// # Pub/sub
//
// A [Bus] holds one pub/sub connection for all of its subscriptions and one
// delivery goroutine that reads it and calls the handlers. Subscribe returns
// only after Redis has confirmed the SUBSCRIBE, so a publish that starts
// after Subscribe returns reaches the handler.
//
// Delivery is at-most-once, as Redis pub/sub is: a message published while
// the pub/sub connection is down is lost. When the connection comes back,
// every subscription is renewed without the caller doing anything, and
// [Options.OnReconnect] runs so the caller can re-announce what Redis may
// have forgotten (a restarted Redis has lost the registry too).
//
// Publish reports the receiver count that Redis reports: the number of
// subscribed connections, one per Bus, however many handlers each Bus has
// for the topic.
//
// # Registry
//
// A registry entry is the key "keyhole:reg:<name>" holding the holder's ID,
// with a TTL. Claim overwrites; Refresh and Release compare the holder and
// act in one Lua script, so a holder that lost the name cannot extend or
// delete its successor's entry.
//
// This is the only package in the project that imports go-redis.
package redis
