package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
)

// A key added to the proxy's --deny-file while its client is connected is
// cut off on SIGHUP: the client is refused when it reconnects, exits 1 and
// says why.
func TestDenyFileCutsOffConnectedClient(t *testing.T) {
	local := origin(t)
	deny := filepath.Join(t.TempDir(), "deny.txt")
	if err := os.WriteFile(deny, []byte("# no one yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	px := cmdtest.StartProxy(t, 0, "--deny-file", deny)
	c := cmdtest.StartClient(t, px.Addr, filepath.Join(t.TempDir(), "client.jwk"), local.URL)
	url := cmdtest.WaitURL(t, c, px.Port, 1, 20*time.Second)
	if status, _ := cmdtest.Do(t, px.Addr, "GET", url, "/", ""); status != 200 {
		t.Fatalf("before the deny: %d", status)
	}
	host := strings.TrimPrefix(url, "http://")
	if err := os.WriteFile(deny, []byte(host+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := px.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if code := cmdtest.Exit(t, c, 20*time.Second); code != 1 {
		t.Fatalf("client exit code %d, want 1", code)
	}
	lines := cmdtest.StderrLines(c)
	if last := lines[len(lines)-1]; !strings.Contains(last, "not allowed") {
		t.Errorf("last stderr line %q should say the key is not allowed", last)
	}
	if status, _ := cmdtest.Do(t, px.Addr, "GET", url, "/", ""); status != 502 {
		t.Errorf("denied tunnel answered %d, want 502", status)
	}
}
