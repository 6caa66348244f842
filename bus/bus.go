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

// Registry records which holder (an instance and connection) serves a
// hostname. Entries expire after their TTL unless refreshed, so a crashed
// instance's hostnames go offline by themselves.
type Registry interface {
	// Claim records holder for name, replacing any other holder: the newest
	// connection wins.
	Claim(ctx context.Context, name, holder string, ttl time.Duration) error
	// Refresh extends the entry's TTL if holder still owns name, and reports
	// whether it does.
	Refresh(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// Release deletes the entry if holder still owns name.
	Release(ctx context.Context, name, holder string) error
	// Lookup returns the current holder of name, or ErrNotFound.
	Lookup(ctx context.Context, name string) (string, error)
}

// Pinger is implemented by buses that depend on an external service and can
// report whether it is reachable. Readiness checks use it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// HostTopic is the topic read by the instance that holds hostname's client.
func HostTopic(hostname string) string { return "keyhole:host:" + hostname }

// InstanceTopic is the reply topic of one proxy instance.
func InstanceTopic(instance string) string { return "keyhole:inst:" + instance }
