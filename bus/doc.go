// Package bus carries opaque payloads between proxy instances.
//
// Start with [NewMemory] for a single proxy; bus/redis provides the same
// interfaces over Redis for several proxies. Every public request travels
// over a [Bus] even in memory mode, so both behave alike.
//
// Two topic kinds are used (see [HostTopic] and [InstanceTopic]): one per
// connected hostname, read by the instance that holds that client's
// websocket, and one per proxy instance, used for replies. Requests name
// their reply-to instance, so nothing ever subscribes per request.
//
// Delivery is at-most-once. Publish reports how many subscribers received
// the payload, so a caller that reached nobody can answer at once instead of
// waiting for a timeout.
package bus
