// Package messages defines keyhole's wire protocol: every message exchanged
// between proxy and client, their binary framing, the signed registration
// and the derivation of a client's hostname from its key.
//
// Start with [Decode] and [Append]: every websocket message carries one
// frame, or a [Batch] of several, and a frame is
//
//	version (1 byte) | type (1 byte) | payload
//
// docs/PROTOCOL.md is the full specification. Every HTTP body and WebSocket
// is a stream: a head ([HTTPRequest], [WSRequest] and their answers), then
// [Data] or [WSMessage] frames under [Credit], then an end or a reset
// ([Error]). Bodies are raw bytes, never base64; headers keep every value in
// order.
//
// Registration: the proxy sends a [Challenge]; the client answers with a
// [RegistrationRequest] made by [SignRegistration]; the proxy checks it with
// [VerifyRegistration] and replies with a [RegistrationResponse] naming the
// hostname from [Hostname].
package messages
