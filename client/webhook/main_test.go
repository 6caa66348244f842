package webhook_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// Verifier starts none, and must not start to.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
