package wsclose

import (
	"errors"
	"fmt"
	"testing"

	"github.com/coder/websocket"
)

func TestSendable(t *testing.T) {
	for in, want := range map[uint16]websocket.StatusCode{
		1000: 1000, 1001: 1001, 1009: 1009, 4001: 4001, 4999: 4999,
		1005: 1001, 1006: 1001, 1015: 1001, 0: 1001, 999: 1001, 5000: 1001,
	} {
		if got := Sendable(in); got != want {
			t.Errorf("Sendable(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestFromReadError(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   websocket.StatusCode
		reason string
	}{
		{fmt.Errorf("read: %w", websocket.CloseError{Code: 4002, Reason: "done"}), 4002, "done"},
		{fmt.Errorf("read: %w", websocket.ErrMessageTooBig), websocket.StatusMessageTooBig, "message too big"},
		{errors.New("EOF"), 1014, "gone"},
	} {
		code, reason := FromReadError(tc.err, 1014, "gone")
		if code != tc.code || reason != tc.reason {
			t.Errorf("%v: got %d %q, want %d %q", tc.err, code, reason, tc.code, tc.reason)
		}
	}
}
