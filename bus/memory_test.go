package bus_test

import (
	"context"
	"testing"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/bus/bustest"
)

func TestMemoryConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T) (bus.Bus, bus.Registry) {
		m := bus.NewMemory()
		t.Cleanup(func() { m.Close() })
		return m, m
	})
}

// TestMemoryReceiverCount pins the in-memory count: every subscription
// counts, even two on one topic (Redis counts connections instead).
func TestMemoryReceiverCount(t *testing.T) {
	ctx := context.Background()
	m := bus.NewMemory()
	defer m.Close()
	nop := func([]byte) {}
	var subs []bus.Subscription
	for want := range 3 {
		n, err := m.Publish(ctx, "t", nil)
		if err != nil || n != want {
			t.Fatalf("Publish with %d subscriptions = %d, %v", want, n, err)
		}
		s, err := m.Subscribe(ctx, "t", nop)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	for i, s := range subs {
		if err := s.Unsubscribe(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := m.Publish(ctx, "t", nil); n != len(subs)-i-1 {
			t.Fatalf("Publish after %d unsubscribes = %d", i+1, n)
		}
	}
}
