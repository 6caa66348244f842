// Package cmdtest runs the keyhole commands as built binaries for the
// commands' tests: a proxy process, client processes, and requests through
// the proxy to a tunnel's public URL.
//
// Start with [StartProxy] and [StartClient]; read the client's public URL
// with [WaitURL].
package cmdtest

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// Import paths of the commands.
const (
	ProxyPkg  = "github.com/keyhole-tunnel/keyhole/cmd/proxy"
	ClientPkg = "github.com/keyhole-tunnel/keyhole/cmd/client"
)

// Env returns the environment additions for a command under test: every
// KEYHOLE_ variable of the test's own environment is blanked (an empty
// value counts as unset), so a developer's settings cannot change the
// outcome, and then extra is applied.
func Env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "KEYHOLE_") {
			env = append(env, k+"=")
		}
	}
	// A -race binary sleeps a second before exiting, to let reports
	// flush; the tests wait for exits often enough to notice.
	env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return append(env, extra...)
}

// Proxy is a proxy process listening on 127.0.0.1:Port.
type Proxy struct {
	*testenv.Process
	Port int
	Addr string
}

// StartProxy starts the proxy command on 127.0.0.1:port with args and
// waits until it answers HTTP. A port of 0 picks a free one.
func StartProxy(t *testing.T, port int, args ...string) *Proxy {
	t.Helper()
	if port == 0 {
		port = testenv.FreePort(t)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	bin := testenv.Build(t, ProxyPkg)
	p := testenv.StartProcess(t, bin, append([]string{"--listen", addr}, args...), Env())
	WaitHTTP(t, p, addr)
	return &Proxy{Process: p, Port: port, Addr: addr}
}

// WaitHTTP waits until something answers HTTP at addr, failing the test if
// p exits first or 20 s pass (a -race build starts slowly on a busy
// machine).
func WaitHTTP(t *testing.T, p *testenv.Process, addr string) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("process exited before serving %s; stderr:\n%s", addr, p.Stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing answered on %s within 20s", addr)
		}
	}
}

// StartClient starts the client command against the proxy at proxyAddr,
// with the key file key, args, and target last.
func StartClient(t *testing.T, proxyAddr, key, target string, args ...string) *testenv.Process {
	t.Helper()
	bin := testenv.Build(t, ClientPkg)
	a := []string{"--proxy", "ws://" + proxyAddr}
	if key != "" {
		a = append(a, "--key", key)
	}
	a = append(append(a, args...), target)
	return testenv.StartProcess(t, bin, a, Env())
}

// URLPattern matches the line a client prints when it registers with a
// proxy on port, and nothing else.
func URLPattern(port int) *regexp.Regexp {
	return regexp.MustCompile(`^http://[a-z2-7]{52}\.localhost:` + strconv.Itoa(port) + `$`)
}

// WaitURL waits for the n-th line (from 1) of p's stdout and checks that it
// is a public URL for a proxy on port.
func WaitURL(t *testing.T, p *testenv.Process, port, n int, within time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	i := 0
	line, err := p.WaitLine(ctx, func(string) bool { i++; return i == n })
	if err != nil {
		t.Fatalf("stdout line %d: %v; stderr:\n%s", n, err, p.Stderr())
	}
	if !URLPattern(port).MatchString(line) {
		t.Fatalf("stdout line %d is %q, want http://<52 base32 characters>.localhost:%d", n, line, port)
	}
	return line
}

// StderrLines returns p's stderr so far, split into lines.
func StderrLines(p *testenv.Process) []string {
	s := strings.TrimSuffix(p.Stderr(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// WaitStderr polls p's stderr until a line contains every one of parts and
// returns that line.
func WaitStderr(t *testing.T, p *testenv.Process, within time.Duration, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, l := range StderrLines(p) {
			if containsAll(l, parts) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stderr line with %q within %v; stderr:\n%s", parts, within, p.Stderr())
		}
		time.Sleep(10 * time.Millisecond) // polling, with the deadline above
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// Do sends a request for publicURL+path to the proxy at proxyAddr, with the
// tunnel's host in the Host header as a browser would send it, and returns
// the status and body.
func Do(t *testing.T, proxyAddr, method, publicURL, path, body string) (int, string) {
	t.Helper()
	u, err := url.Parse(publicURL)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, "http://"+proxyAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = u.Host
	req.Close = true
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Exit waits up to within for p to exit and returns its exit code.
func Exit(t *testing.T, p *testenv.Process, within time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	code, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, p.Stderr())
	}
	return code
}

// Run runs the binary of pkg with args and env to completion (at most 20
// s) and returns its exit code, stdout and stderr.
func Run(t *testing.T, pkg string, args, env []string) (code int, stdout, stderr string) {
	t.Helper()
	p := testenv.StartProcess(t, testenv.Build(t, pkg), args, Env(env...))
	code = Exit(t, p, 20*time.Second)
	return code, p.Stdout(), p.Stderr()
}
