// Package limiter holds keyhole's per-connection limits: a request rate
// ([Rate]) and byte sizes ([ParseSize], [Size]).
//
// Every client connection gets its own [Rate]; it lives with the connection,
// so it counts requests and WebSocket messages arriving from every proxy
// instance.
package limiter
