// Package client is the keyhole client as a library: it keeps one
// outbound websocket to a proxy and serves the public traffic that arrives
// on it, either by forwarding to a local URL or by calling an http.Handler
// in-process with no local port.
//
// Start with [Client] and [Client.Run]; get a key with [LoadOrCreateKey].
// Run reconnects by itself, with exponential backoff and jitter, and keeps
// the same hostname, which is derived from the key.
package client
