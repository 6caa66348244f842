package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--listen", "127.0.0.1:0"}, &stdout, &stderr) }()
	var base string
	tunneltest.Eventually(t, 10*time.Second, "the URL on stdout", func() bool {
		base, _, _ = strings.Cut(stdout.String(), "\n")
		return strings.HasSuffix(stdout.String(), "\n")
	})
	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+$`).MatchString(base) {
		t.Fatalf("stdout %q, want one URL line", stdout.String())
	}
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "Served through keyhole") {
		t.Fatalf("%d %.80q", resp.StatusCode, b)
	}
	// An open echo must not keep run from returning.
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancel")
	}
	if err := run(context.Background(), []string{"extra"}, io.Discard, io.Discard); err == nil {
		t.Error("run accepted an argument")
	}
}

// TestScript runs the README's quick start, scripts/demo, end to end: it
// builds the commands, prints the URL to open, serves the page and the
// echo through a real proxy and client, and on SIGINT stops everything.
func TestScript(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	for _, bin := range []string{"bash", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not on PATH", bin)
		}
	}
	script, err := filepath.Abs("../../scripts/demo")
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := testenv.StartProcess(t, script, nil, []string{"KEYHOLE_DEMO_PORT=" + strconv.Itoa(port)})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	line, err := p.WaitLine(ctx, func(l string) bool { return strings.Contains(l, "Open: ") })
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, p.Stderr())
	}
	url := strings.TrimSpace(line[strings.Index(line, "Open: ")+len("Open: "):])
	if !regexp.MustCompile(`^http://[a-z2-7]{52}\.localhost:` + strconv.Itoa(port) + `$`).MatchString(url) {
		t.Fatalf("Open line %q", line)
	}

	hc := tunneltest.DialingClient(addr)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "Served through keyhole") {
		t.Fatalf("page: %d %.80q", resp.StatusCode, b)
	}
	// The echo, as the page's script uses it: same origin as the page.
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws", &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: http.Header{"Origin": {url}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "ping" {
		t.Fatalf("echo: %q %v", msg, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	// The client logs the request on the terminal.
	requestLine := regexp.MustCompile(`msg=request req=[0-9a-f]{32} method=GET path=/ status=200`)
	tunneltest.Eventually(t, 5*time.Second, "the client's request line on stderr", func() bool {
		return requestLine.MatchString(p.Stderr())
	})
	work := regexp.MustCompile(`key=(\S+)/client\.jwk`).FindStringSubmatch(p.Stderr())

	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("after SIGINT: exit %d, %v; stderr:\n%s", code, err, p.Stderr())
	}
	// Nothing the script started is left: its process group is empty.
	tunneltest.Eventually(t, 2*time.Second, "an empty process group", func() bool {
		return errors.Is(syscall.Kill(-p.PID(), 0), syscall.ESRCH)
	})
	if work == nil {
		t.Fatal("client log does not name the key file")
	}
	if _, err := os.Stat(work[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("work directory %s left behind", work[1])
	}
}
