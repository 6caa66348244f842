package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a server whose port must be known before it starts (it appears in a
// configuration file). The port is released before FreePort returns, so
// the server binds it itself; until the test ends, no other FreePort, in
// this process or another, returns it.
//
// The port comes from below the kernel's ephemeral range where it can, so
// that no Listen on port 0 and no outgoing connection anywhere on the
// machine takes it in the moment between FreePort and the server's bind:
// with the test packages running side by side and thousands of connections
// made, that moment was long enough. A lock file per port, held until
// cleanup, keeps test processes from handing out the same one.
func FreePort(t testing.TB) int {
	t.Helper()
	if lo, hi, ok := reservedRange(); ok {
		for range 200 {
			port := lo + rand.IntN(hi-lo)
			unlock, ok := lockPort(port)
			if !ok {
				continue
			}
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				if err := l.Close(); err != nil {
					t.Fatalf("testenv: free port: %v", err)
				}
				t.Cleanup(unlock)
				return port
			}
			unlock()
		}
	}
	// No range to reserve from: any port the kernel has free.
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

// reservedRange is where FreePort picks from: the ports from 15000 up to
// the start of the ephemeral range, when that leaves a thousand or more.
func reservedRange() (lo, hi int, ok bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	ephemeral, err := strconv.Atoi(f[0])
	if err != nil || ephemeral-15000 < 1000 {
		return 0, 0, false
	}
	return 15000, ephemeral, true
}

// lockPort takes the machine-wide lock on port for test servers, or
// reports false when another holds it. The lock goes with the process.
// The lock files stay, empty: removing one would race with another
// process locking it.
func lockPort(port int) (unlock func(), ok bool) {
	dir := filepath.Join(os.TempDir(), "keyhole-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, false
	}
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprint(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
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
