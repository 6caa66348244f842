package bus

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by [Registry.Lookup] when no holder is recorded.
var ErrNotFound = errors.New("bus: not found")

// ErrClosed is returned by operations on a closed bus.
var ErrClosed = errors.New("bus: closed")

// Handler receives one payload. It is called from the bus's delivery
// goroutine, in publish order for a given publisher and topic, and must not
// block: hand the payload to a bounded queue and return. The payload is
// read-only and valid only until the handler returns (the in-memory bus
// passes the publisher's own bytes, which the publisher reuses): a handler
// that keeps any of it copies it.
type Handler func(payload []byte)

// Bus is a publish/subscribe transport of []byte payloads.
type Bus interface {
	// Publish delivers payload to every current subscriber of topic and
	// reports how many there were. The caller may reuse payload once
	// Publish has returned. Delivery is at-most-once: a positive count means the
	// transport accepted the message, not that a handler ran.
	Publish(ctx context.Context, topic string, payload []byte) (receivers int, err error)
	// Subscribe calls h for every payload published to topic until the
	// subscription is cancelled. It returns only once the subscription is
	// confirmed, so a publish that starts after Subscribe returns reaches h.
	Subscribe(ctx context.Context, topic string, h Handler) (Subscription, error)
	// Close releases the bus and cancels every subscription.
	Close() error
}

// Subscription is one active subscription.
type Subscription interface {
	// Unsubscribe stops delivery. After it returns, h is not called again.
	Unsubscribe(ctx context.Context) error
}

// Message is one payload for one topic, for [Batcher].
type Message struct {
	Topic   string
	Payload []byte
}

// Batcher is implemented by buses that can publish several messages in one
// round trip. Messages to one topic keep their order, and each gets its
// receiver count in receivers, as Publish would report it; err is the first
// failure, after which the remaining counts are zero.
type Batcher interface {
	PublishBatch(ctx context.Context, msgs []Message) (receivers []int, err error)
}

// Registry records which holder (an instance and connection) serves a
// hostname, and which instances are alive. Entries expire after their TTL
// unless refreshed, so a crashed instance's hostnames go offline by
// themselves, and the instance leaves the list.
type Registry interface {
	// Claim records holder for name, replacing any other holder: the newest
	// connection wins. It returns the holder it replaced, or "".
	Claim(ctx context.Context, name, holder string, ttl time.Duration) (previous string, err error)
	// ClaimOrdered records holder for name unless the entry's current
	// holder sorts after it, byte by byte: of two claims, the greater
	// holder wins, whichever came first. It returns the holder it replaced
	// or found ("" if none) and whether holder owns name now; claiming
	// again as the current holder extends the TTL.
	ClaimOrdered(ctx context.Context, name, holder string, ttl time.Duration) (current string, won bool, err error)
	// Refresh extends the entry's TTL if holder still owns name, and reports
	// whether it does.
	Refresh(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// Release deletes the entry if holder still owns name.
	Release(ctx context.Context, name, holder string) error
	// Lookup returns the current holder of name, or ErrNotFound.
	Lookup(ctx context.Context, name string) (string, error)
	// Join adds member to the set named set for ttl, or extends its stay.
	// Members of a set expire one by one.
	Join(ctx context.Context, set, member string, ttl time.Duration) error
	// Leave removes member from set.
	Leave(ctx context.Context, set, member string) error
	// Members returns the members of set whose stay has not expired, in
	// no particular order.
	Members(ctx context.Context, set string) ([]string, error)
	// Heartbeat records that instance is alive for ttl more: it is Join on
	// the set of instances.
	Heartbeat(ctx context.Context, instance string, ttl time.Duration) error
	// Instances returns the instances whose last heartbeat has not
	// expired, in no particular order.
	Instances(ctx context.Context) ([]string, error)
}

// Pinger is implemented by buses that depend on an external service and can
// report whether it is reachable. Readiness checks use it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// InstanceTopic is the one topic an instance subscribes to: frames for the
// client connections it holds and for the visitor streams it serves both
// reach it there.
func InstanceTopic(instance string) string { return "keyhole:inst:" + instance }
