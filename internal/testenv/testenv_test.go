package testenv_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

func TestProcess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		script   string
		wantLine string
		wantCode int
		stderr   string
	}{
		{name: "echo", script: "echo hello; echo world", wantLine: "world"},
		{name: "exit code", script: "echo before; exit 7", wantLine: "before", wantCode: 7},
		{name: "no final newline", script: "printf 'a\\npartial'", wantLine: "partial"},
		{name: "crlf", script: "printf 'dos\\r\\n'", wantLine: "dos"},
		{name: "stderr", script: "echo oops >&2; echo done", wantLine: "done", stderr: "oops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p := testenv.StartProcess(t, "sh", []string{"-c", tt.script}, nil)
			got, err := p.WaitLine(ctx, func(l string) bool { return l == tt.wantLine })
			if err != nil {
				t.Fatalf("WaitLine: %v (stdout %q)", err, p.Stdout())
			}
			if got != tt.wantLine {
				t.Fatalf("WaitLine = %q, want %q", got, tt.wantLine)
			}
			code, err := p.Wait(ctx)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d", code, tt.wantCode)
			}
			if !strings.Contains(p.Stderr(), tt.stderr) {
				t.Fatalf("stderr %q does not contain %q", p.Stderr(), tt.stderr)
			}
		})
	}
}

func TestProcessWaitLineEndsWithOutput(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := testenv.StartProcess(t, "sh", []string{"-c", "echo one"}, nil)
	if _, err := p.WaitLine(ctx, func(l string) bool { return l == "two" }); err == nil {
		t.Fatal("WaitLine matched a line that was never printed")
	}
	if ctx.Err() != nil {
		t.Fatal("WaitLine waited for the deadline instead of noticing the end of output")
	}
}

func TestProcessKill(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The background sleep shares the process group and stdout; Kill must
	// end both, or Wait would hang on the pipe.
	p := testenv.StartProcess(t, "sh", []string{"-c", "sleep 1000 & echo up; wait"}, nil)
	if _, err := p.WaitLine(ctx, func(l string) bool { return l == "up" }); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code != -1 {
		t.Fatalf("exit code after SIGKILL = %d, want -1", code)
	}
}

func TestBuildAndSignal(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := testenv.Build(t, "./testdata/hello")
	if again := testenv.Build(t, "./testdata/hello"); again != bin {
		t.Fatalf("second Build = %q, want cached %q", again, bin)
	}
	p := testenv.StartProcess(t, bin, []string{"a", "b"}, []string{"HELLO_GREETING=hi"})
	if _, err := p.WaitLine(ctx, func(l string) bool { return l == "ready" }); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"args: a b", "env: hi"} {
		if _, err := p.WaitLine(ctx, func(l string) bool { return l == want }); err != nil {
			t.Fatalf("line %q: %v", want, err)
		}
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	if !strings.Contains(p.Stdout(), "bye") {
		t.Fatalf("stdout %q lacks bye", p.Stdout())
	}
	if !strings.Contains(p.Stderr(), "hello on stderr") {
		t.Fatalf("stderr %q", p.Stderr())
	}
	if p.Signal(syscall.SIGTERM) == nil {
		t.Fatal("Signal after exit succeeded")
	}
}

// redisCmd sends one inline command over a fresh connection and returns the
// first reply line.
func redisCmd(t *testing.T, addr string, cmds ...string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "dial error: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	rd := bufio.NewReader(c)
	var line string
	for _, cmd := range cmds {
		if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
			return "write error: " + err.Error()
		}
		line, err = rd.ReadString('\n')
		if err != nil {
			return "read error: " + err.Error()
		}
	}
	return strings.TrimSpace(line)
}

func TestRedisRestart(t *testing.T) {
	t.Parallel()
	r := testenv.Redis(t)
	if !strings.HasPrefix(r.URL(), "redis://127.0.0.1:") || !strings.HasSuffix(r.URL(), "/0") {
		t.Fatalf("URL = %q", r.URL())
	}
	if got := redisCmd(t, r.Addr, "SET k v", "GET k"); got != "$1" {
		t.Fatalf("GET k = %q", got)
	}
	pid := r.PID()

	r.Stop()
	if r.PID() != 0 {
		t.Fatal("PID after Stop is not 0")
	}
	if got := redisCmd(t, r.Addr, "PING"); got == "+PONG" {
		t.Fatal("redis still answers after Stop")
	}

	r.Start()
	if got := redisCmd(t, r.Addr, "PING"); got != "+PONG" {
		t.Fatalf("PING after restart = %q", got)
	}
	if r.PID() == pid {
		t.Fatal("restart kept the old PID")
	}
	// Nothing is persisted, so a restart starts empty.
	if got := redisCmd(t, r.Addr, "GET k"); got != "$-1" {
		t.Fatalf("GET k after restart = %q, want nil", got)
	}
}

func TestRedisWithArgs(t *testing.T) {
	t.Parallel()
	r := testenv.RedisWithArgs(t, "--requirepass", "s3cret")
	if got := redisCmd(t, r.Addr, "PING"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("PING without AUTH = %q", got)
	}
	if got := redisCmd(t, r.Addr, "AUTH s3cret", "PING"); got != "+PONG" {
		t.Fatalf("PING after AUTH = %q", got)
	}
}

func TestNginx(t *testing.T) {
	t.Parallel()
	// The upstream echoes the body length, which proves nginx could buffer a
	// body larger than client_body_buffer_size into its temp directory.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d", n)
	}))
	defer up.Close()

	port := testenv.FreePort(t)
	conf := fmt.Sprintf(`
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:%d;
        location = /static { return 200 "static ok"; }
        location /up/ { proxy_pass %s; }
    }
}
`, port, up.URL)
	n := testenv.Nginx(t, conf, port)

	tests := []struct {
		name, method, path string
		body               []byte
		want               string
	}{
		{name: "return", method: http.MethodGet, path: "/static", want: "static ok"},
		{name: "buffered body", method: http.MethodPost, path: "/up/x", body: bytes.Repeat([]byte("z"), 200<<10), want: "got 204800"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://"+n.Addr+tt.path, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(b) != tt.want {
				t.Fatalf("%s %s = %d %q, want 200 %q", tt.method, tt.path, resp.StatusCode, b, tt.want)
			}
		})
	}
}

func TestChromiumDumpDOM(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<!doctype html><html><body><p id="p">static text</p>
<script>
setTimeout(function () {
  document.getElementById("p").textContent = "changed by " + "script";
}, 50);
</script></body></html>`)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dom, err := testenv.ChromiumDumpDOM(ctx, t, srv.URL, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dom, "changed by script") || strings.Contains(dom, "static text") {
		t.Fatalf("DOM does not show the script's change:\n%s", dom)
	}
}

func TestChromiumDumpDOMContext(t *testing.T) {
	t.Parallel()
	// A server that never answers: only the context can end the run.
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := testenv.ChromiumDumpDOM(ctx, t, srv.URL, time.Minute)
	if err == nil {
		t.Fatal("ChromiumDumpDOM succeeded against a server that never answers")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("ChromiumDumpDOM returned %s after its context ended", d)
	}
}
