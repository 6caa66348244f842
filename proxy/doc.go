// Package proxy is the public side of keyhole as a library.
//
// Call [New] with a [Config] and serve the returned [Proxy] as an
// http.Handler: it answers public requests for tunnel hostnames, the
// control endpoint that clients connect to ([ControlPath]), and the landing
// page on the apex domain. Call [Proxy.Shutdown] to drain.
//
// Every public request reaches its client through a bus.Bus, even with the
// in-memory bus, so several instances sharing one bus can each serve any
// tunnel.
//
// For HTTPS, wrap the listener with [TLSConfig] and certificates from
// [LoadCertFiles] (a wildcard, reloaded by [CertReloader]) or from
// [Proxy.ACMEManager], whose host policy admits only the apex and the
// hostnames currently registered.
package proxy
