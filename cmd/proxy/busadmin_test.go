package main

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

func TestBadBusExits2WithoutThePassword(t *testing.T) {
	for _, tc := range []struct {
		name string
		bus  string
	}{
		{"unknown scheme", "memcached://:hunter2@127.0.0.1:11211"},
		{"no host", "redis://:hunter2@/0"},
		{"not a URL", "redis://:hunter2@[::1/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cmdtest.Run(t, cmdtest.ProxyPkg, []string{"--bus", tc.bus}, nil)
			if code != 2 {
				t.Errorf("exit code %d, want 2; stderr: %s", code, stderr)
			}
			if !strings.Contains(stderr, "--bus") || strings.Contains(stderr, "hunter2") {
				t.Errorf("stderr %q: want a reason naming --bus, without the password", stderr)
			}
		})
	}
}

// TestUnreachableRedisExits1 runs against a port where nothing listens,
// with each URL form the flag accepts: a cluster URL passes the flag check
// and fails only at connecting.
func TestUnreachableRedisExits1(t *testing.T) {
	port := strconv.Itoa(testenv.FreePort(t))
	for _, bus := range []string{
		"redis://:hunter2@127.0.0.1:" + port + "/0",
		"redis+cluster://:hunter2@127.0.0.1:" + port + ",127.0.0.1:" + port + "/",
	} {
		t.Run(strings.SplitN(bus, ":", 2)[0], func(t *testing.T) {
			start := time.Now()
			code, _, stderr := cmdtest.Run(t, cmdtest.ProxyPkg, []string{"--listen", "127.0.0.1:0", "--bus", bus}, nil)
			if code != 1 || !strings.Contains(stderr, "bus:") || strings.Contains(stderr, "hunter2") {
				t.Errorf("exit %d, stderr %q; want 1 and a bus error without the password", code, stderr)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("took %v to give up", d)
			}
		})
	}
}

func adminGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminListener: --admin serves health, readiness and metrics on its
// own address, and not on the public one.
func TestAdminListener(t *testing.T) {
	rs := testenv.Redis(t)
	admin := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	p := cmdtest.StartProxy(t, 0, "--admin", admin, "--bus", rs.URL())
	if code, _ := adminGet(t, admin, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	if code, body := adminGet(t, admin, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d %q", code, body)
	}
	code, body := adminGet(t, admin, "/metrics")
	for _, m := range []string{"keyhole_connected_clients 0", "keyhole_requests_total", "go_goroutines", "process_cpu_seconds_total", "keyhole_bus_unrouted_messages_total"} {
		if code != http.StatusOK || !strings.Contains(body, m) {
			t.Errorf("/metrics (%d) lacks %s", code, m)
		}
	}
	if code, _ := adminGet(t, p.Addr, "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the public listener: %d, want 404", code)
	}
	rs.Stop()
	if code, body := adminGet(t, admin, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "bus") {
		t.Errorf("/readyz with Redis stopped: %d %q, want 503 naming the bus", code, body)
	}
	rs.Start()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := cmdtest.Exit(t, p.Process, 20*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
}
