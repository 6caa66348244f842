package testenv

import (
	"net"
	"os"
	"os/exec"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before FreePort returns, so another process may take it;
// the server helpers retry with a new port when that happens.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	return port
}

// lookBinary finds a system program on PATH or in the given fallback
// locations (sbin directories are not always on a non-root PATH). When it is
// missing it skips the test, or fails it when CI is set.
func lookBinary(t testing.TB, name string, fallbacks ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range fallbacks {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("testenv: %s is not installed (run scripts/setup)", name)
	}
	t.Skipf("testenv: %s is not installed (run scripts/setup)", name)
	return ""
}
