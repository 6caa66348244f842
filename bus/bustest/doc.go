// Package bustest is the conformance suite that every [bus.Bus] and
// [bus.Registry] implementation must pass.
//
// Call [Run] from the implementation's tests with a constructor that
// returns a fresh bus for each subtest (and closes it with t.Cleanup):
//
//	func TestConformance(t *testing.T) {
//		bustest.Run(t, func(t *testing.T) (bus.Bus, bus.Registry) {
//			b := bus.NewMemory()
//			t.Cleanup(func() { b.Close() })
//			return b, b
//		})
//	}
//
// Subtests run in parallel and use topic and registry names unique to the
// subtest, so one backend (for example one redis-server) can serve them all.
//
// Receiver counts are checked only against zero and "at least one": Memory
// counts subscriptions, while Redis counts subscribed connections (one per
// bus), so two subscriptions on one bus count 2 in memory and 1 in Redis.
// Implementations pin their exact counting in their own tests.
package bustest
