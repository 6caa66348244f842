// Package redis implements [bus.Bus], [bus.Registry] and [bus.Pinger] over
// Redis, so several proxy instances can share hostnames and replies.
//
// Start with [New]:
//
//	b, err := redis.New(ctx, "redis://127.0.0.1:6379/0", redis.Options{})
//
// or, for a Redis Cluster, list some of its nodes:
//
//	b, err := redis.New(ctx, "redis+cluster://10.0.0.1:6379,10.0.0.2:6379/", redis.Options{})
//
// # Pub/sub
//
// On a single server, a [Bus] holds one pub/sub connection for all of its
// subscriptions and one delivery goroutine that reads it and calls the
// handlers (on a cluster, one of each per topic: see below). Subscribe returns
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
// # Redis Cluster
//
// With a redis+cluster:// or rediss+cluster:// URL the bus runs on a Redis
// Cluster (Redis 7.0 or later) through go-redis's ClusterClient; the
// registry, the instance directory, the cert cache and Ping share their
// code with the single-server mode, and only pub/sub differs:
//
//   - Pub/sub is sharded: Publish is an SPUBLISH and Subscribe an
//     SSUBSCRIBE, so a message goes to the one shard that owns its topic's
//     slot (a plain PUBLISH would be copied to every node of the cluster)
//     and a topic's subscribers listen on that shard's master.
//   - Each subscribed topic has its own pub/sub connection and delivery
//     goroutine; a go-redis sharded PubSub listens on the first channel's
//     shard only, so one connection cannot serve topics of several shards.
//     A proxy instance subscribes one topic, [bus.InstanceTopic].
//   - When the master of a topic's shard fails and a replica takes over,
//     when the slot moves to another shard, or when the connection breaks,
//     the subscription is renewed on the new owner without the caller doing
//     anything, and [Options.OnReconnect] runs once it is in force. Messages
//     published in between are lost, as ever with pub/sub. go-redis alone
//     does not manage this (it keeps dialling a crashed master until it
//     next reloads the cluster's layout, a minute later, and ignores the
//     SUNSUBSCRIBE of a slot that moved), so the bus has the layout reloaded
//     after every failed dial and command, and replaces a subscription that
//     Redis refused or dropped.
//   - A failover of another shard is not reported through OnReconnect.
//     Replication is asynchronous, so a failover can lose the last writes
//     of the failed master, registry entries among them: [Bus.Refresh]
//     then reports false, as it does for an entry that expired.
//   - The registry's keys spread over all shards; each operation touches
//     one key (the instance directory is one sorted set), so none needs
//     hash tags or cross-slot commands.
//   - Ping pings every master: it fails while a slot has no master that
//     answers, that is, from a master's crash until a replica has taken
//     over.
//
// This is the only package in the project that imports go-redis.
package redis
