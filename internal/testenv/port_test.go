package testenv

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePort: the ports handed out are bindable, come from below the
// ephemeral range where there is one, and are never handed out twice
// while a test holds them, even to another process (the lock is
// machine-wide, so a second lock on a held port fails here too).
func TestFreePort(t *testing.T) {
	lo, hi, reserved := reservedRange()
	seen := make(map[int]bool)
	for range 50 {
		port := FreePort(t)
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		if reserved && (port < lo || port >= hi) {
			t.Fatalf("port %d outside [%d, %d)", port, lo, hi)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		l.Close()
		if !reserved {
			continue
		}
		if unlock, ok := lockPort(port); ok {
			unlock()
			t.Fatalf("port %d: a second lock was granted while the test holds it", port)
		}
	}
	if !reserved {
		t.Skip("no room below the ephemeral range on this machine: ports come from the kernel")
	}
}
