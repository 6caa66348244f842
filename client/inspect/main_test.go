package inspect_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: replays
// and event streams must end with their store, handler or client.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
