package stream_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// PumpWebSocket, SendBody and waiter a test starts must have returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
