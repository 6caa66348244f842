// Package inspect records what passes through a keyhole client and shows
// it: a local web page (a live list, details, replay, HAR export) and an
// HTTP API with the field names of ngrok's agent API, so that scripts
// written for ngrok's inspector at 127.0.0.1:4040 keep working.
//
// Start with [New]: the [Store] it returns keeps the exchanges in memory,
// bounded in bytes. Set it as client.Client.Inspect to capture a client's
// traffic, and serve [Store.Handler] (or call [Listen] and [Store.Serve])
// to see it. Nothing is stored on the proxy: bodies stay on the machine
// that runs the client.
//
// The page and the API are safe by default: they answer only requests
// whose Host is a loopback name or the configured address (which defeats
// DNS rebinding), state-changing calls must come from the page itself or
// from a non-browser client on this machine, and an address reachable
// beyond this machine needs a token. docs/INSPECTOR.md describes the API
// and how it differs from ngrok's.
package inspect
