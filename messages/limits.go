package messages

import (
	"strings"
	"unicode/utf8"
)

// Paths of the proxy's control endpoint, on any host that is not a tunnel
// hostname.
const (
	// ControlPath is where clients of this protocol version connect.
	ControlPath = "/_keyhole/v2/connect"
	// LegacyControlPath is where version 1 clients connect. The proxy
	// answers there only to refuse them with a reason that says to
	// upgrade, which a version 1 client prints before it exits.
	LegacyControlPath = "/_keyhole/v1/connect"
)

// Limits of the protocol. docs/PROTOCOL.md section 11 explains each.
const (
	// MaxFrame is the largest frame, Batch included, either side accepts:
	// the websocket read limit of a registered connection. The 500 KB cap
	// of version 1 stays as the cap on any single frame.
	MaxFrame = 500 * 1000
	// MaxData is the most a sender puts in one Data or WSMessage frame, so
	// that a big body never delays another stream by more than a frame.
	MaxData = 64 << 10
	// MaxHead is the largest head frame (HTTPRequest, HTTPResponse,
	// WSRequest, WSResponse, Trailer), encoded. The proxy answers a
	// public request whose head would not fit with 431 and never sends
	// it; a client answers a response whose head would not fit with Error
	// code 4.
	MaxHead = 64 << 10
	// MaxPreRegistration bounds the first message a client sends, its
	// RegistrationRequest; a larger one is refused with a reason.
	MaxPreRegistration = 4 * MaxJWS
	// MaxHandshakeRead is the client's read limit before registration.
	MaxHandshakeRead = 64 << 10

	// InitialWindow is the credit each side has for a stream's data when
	// the stream opens, unless the head says otherwise: the client may send
	// this much of a WebSocket's messages, the proxy this much of a request
	// body or WebSocket messages, before the first Credit.
	InitialWindow = 256 << 10
	// InitialConnWindow is the credit each side has for the whole
	// connection's data when it registers.
	InitialConnWindow = 1 << 20

	// MaxNames is the most friendly names one registration may ask for.
	MaxNames = 16

	// MaxBasicAuthUsers is the most users a registration's [Protection]
	// may let in with basic auth; MaxBasicAuthUserLen bounds a user name,
	// in bytes.
	MaxBasicAuthUsers   = 16
	MaxBasicAuthUserLen = 64
	// MaxBasicAuthPassword is bcrypt's limit on a password, in bytes: it
	// ignores what comes after, so the client refuses longer ones.
	MaxBasicAuthPassword = 72
	// MinBcryptCost and MaxBcryptCost bound the cost of a basic auth hash.
	// The proxy runs one comparison per new visitor credential: at cost 12
	// that is a third of a second of a core (the clients' cost, 10, a
	// twelfth), 13 would double it, and a hostile client must not make
	// every visitor's request that dear.
	MinBcryptCost = 4
	MaxBcryptCost = 12
	// MaxIPRules is the most prefixes in each of a [Protection]'s allow
	// and deny lists.
	MaxIPRules = 64

	// MaxCloseReason is the longest close reason a WebSocket close frame
	// can carry (RFC 6455 section 5.5).
	MaxCloseReason = 123
)

// Close codes of the client connection besides RFC 6455's.
const (
	// CloseReplaced closes a connection whose key registered again on a
	// newer connection. The client must not reconnect.
	CloseReplaced uint16 = 4000
)

// WSHandshakeHeaders are the upgrade handshake's own headers; each leg of
// the tunnel negotiates its own, so neither side passes them on.
var WSHandshakeHeaders = []string{
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions",
	"Sec-Websocket-Protocol", "Sec-Websocket-Accept",
}

// CloseReason makes s fit a WebSocket close frame: invalid UTF-8 becomes
// U+FFFD, and the text is cut at a character boundary to at most
// [MaxCloseReason] bytes. Receivers apply it to every reason they pass on.
func CloseReason(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	for len(s) > MaxCloseReason {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// ValidResponseStatus reports whether an HTTPResponse may carry status:
// 200 to 599. Informational answers are the proxy's own business.
func ValidResponseStatus(status uint16) bool { return status >= 200 && status <= 599 }

// ValidUpgradeStatus reports whether a WSResponse may carry status: 101
// for an accepted upgrade, or a refusal from 200 to 599.
func ValidUpgradeStatus(status uint16) bool { return status == 101 || ValidResponseStatus(status) }
