// Package wsclose carries WebSocket close codes across the tunnel, where
// one leg's close becomes the other leg's.
package wsclose

import (
	"errors"

	"github.com/coder/websocket"
)

// FromReadError turns the error that ended a leg's reads into the close
// code and reason to pass to the other leg. A peer that vanished without a
// close frame is reported as gone, with the code and reason given.
func FromReadError(err error, gone websocket.StatusCode, goneReason string) (websocket.StatusCode, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return websocket.StatusMessageTooBig, "message too big"
	}
	return gone, goneReason
}

// Sendable maps a close code received from the other leg to one that may
// be sent on the wire: 1005, 1006 and 1015 only describe what a peer
// observed, and codes outside 1000–4999 are invalid.
func Sendable(code uint16) websocket.StatusCode {
	switch c := websocket.StatusCode(code); {
	case c == websocket.StatusNoStatusRcvd || c == websocket.StatusAbnormalClosure || c == websocket.StatusTLSHandshake,
		code < 1000 || code >= 5000:
		return websocket.StatusGoingAway
	default:
		return c
	}
}
