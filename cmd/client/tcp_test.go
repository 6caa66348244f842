package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// hostnamePattern matches the line client tcp prints when it registers
// with a proxy on localhost.
var hostnamePattern = regexp.MustCompile(`^[a-z2-7]{52}\.localhost$`)

// startTCPClient starts "client tcp" publishing target and returns it with
// the hostname it printed.
func startTCPClient(t *testing.T, proxyAddr, target string, args ...string) (*testenv.Process, string) {
	t.Helper()
	key := filepath.Join(t.TempDir(), "client.jwk")
	a := append([]string{"tcp", "--proxy", "ws://" + proxyAddr, "--key", key}, args...)
	p := testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg), append(a, target), cmdtest.Env())
	host := firstLine(t, p)
	if !hostnamePattern.MatchString(host) {
		t.Fatalf("client tcp printed %q, want the tunnel's hostname", host)
	}
	return p, host
}

// startConnect starts "client connect" for host with env added, and
// returns it with the address it listens on.
func startConnect(t *testing.T, proxyAddr, host string, env []string, args ...string) (*testenv.Process, string) {
	t.Helper()
	a := append([]string{"connect", "--proxy", "ws://" + proxyAddr, "--listen", "127.0.0.1:0"}, args...)
	p := testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg), append(a, host), cmdtest.Env(env...))
	addr := firstLine(t, p)
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("client connect printed %q, want the address it listens on", addr)
	}
	return p, addr
}

func firstLine(t *testing.T, p *testenv.Process) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	line, err := p.WaitLine(ctx, func(string) bool { return true })
	if err != nil {
		t.Fatalf("stdout: %v; stderr:\n%s", err, p.Stderr())
	}
	return line
}

// A real program through the tunnel: redis-cli, through client connect,
// to a real redis-server published with client tcp.
func TestTCPRedisThroughTunnel(t *testing.T) {
	cliBin, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli is not installed")
	}
	redis := testenv.Redis(t)
	_, redisPort, _ := net.SplitHostPort(redis.Addr)
	proxy := cmdtest.StartProxy(t, 0)
	_, host := startTCPClient(t, proxy.Addr, redisPort)
	_, addr := startConnect(t, proxy.Addr, host, nil)
	lhost, lport, _ := net.SplitHostPort(addr)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "PONG"},
		{[]string{"SET", "greeting", "hello through the tunnel"}, "OK"},
		{[]string{"GET", "greeting"}, "hello through the tunnel"},
		{[]string{"INCRBY", "counter", "41"}, "41"},
		{[]string{"INCR", "counter"}, "42"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, cliBin, append([]string{"-h", lhost, "-p", lport}, tc.args...)...).CombinedOutput()
		cancel()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Fatalf("redis-cli %s: %q, %v; want %q", strings.Join(tc.args, " "), got, err, tc.want)
		}
	}
	// What went through the tunnel reached the real server.
	c, err := net.Dial("tcp", redis.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET greeting\r\n")
	b := make([]byte, 64)
	n, _ := c.Read(b)
	if got := string(b[:n]); got != "$24\r\nhello through the tunnel\r\n" {
		t.Fatalf("redis-server has %q", got)
	}
}

// exchange sends msg through the connect process at addr, half-closes,
// and returns what came back before the end.
func exchange(t *testing.T, addr, msg string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, msg)
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

// The visitor token: given with --token or KEYHOLE_VISITOR_TOKEN it lets
// the connection through; missing or wrong, the connection is closed and
// client connect logs the tunnel's reason. KEYHOLE_TOKEN, the proxy's
// token, is never sent as one. No process logs a token.
func TestTCPVisitorTokenCommands(t *testing.T) {
	const token = "visitor-s3cret"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(bytes.ToUpper(b))
			}()
		}
	}()
	proxy := cmdtest.StartProxy(t, 0)
	pub, host := startTCPClient(t, proxy.Addr, ln.Addr().String(), "--visitor-token", token)
	for _, tc := range []struct {
		name   string
		env    []string
		args   []string
		reason string // "" for through
	}{
		{"flag", nil, []string{"--token", token}, ""},
		{"environment", []string{"KEYHOLE_VISITOR_TOKEN=" + token}, nil, ""},
		{"missing", nil, nil, "this tunnel requires a visitor token"},
		{"proxy token variable", []string{"KEYHOLE_TOKEN=" + token}, nil, "this tunnel requires a visitor token"},
		{"wrong", nil, []string{"--token", "not-" + token}, "wrong visitor token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, addr := startConnect(t, proxy.Addr, host, tc.env, tc.args...)
			got, err := exchange(t, addr, "hello")
			if tc.reason == "" {
				if err != nil || got != "HELLO" {
					t.Fatalf("through the tunnel: %q, %v", got, err)
				}
				return
			}
			if got != "" {
				t.Fatalf("a refused connection carried %q", got)
			}
			cmdtest.WaitStderr(t, conn, 10*time.Second, "connection refused by the tunnel", tc.reason)
			if s := conn.Stderr(); strings.Contains(s, token) {
				t.Fatalf("client connect logged the token:\n%s", s)
			}
		})
	}
	if s := pub.Stderr(); strings.Contains(s, token) || !strings.Contains(s, "tcp stream refused") {
		t.Fatalf("client tcp's log shows the token, or no refusal:\n%s", s)
	}
}

// The subcommands' command lines: what each takes and refuses, and that
// their help shows their own flags.
func TestTCPCommandLines(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in the usage error
	}{
		{"tcp without target", []string{"tcp"}, "expected exactly one TARGET"},
		{"tcp with a URL", []string{"tcp", "http://127.0.0.1:80"}, "want a port or host:port"},
		{"tcp with a bad port", []string{"tcp", "70000"}, "want a port or host:port"},
		{"tcp with a bad remote port", []string{"tcp", "--remote-port", "-1", "22"}, "invalid --remote-port"},
		{"tcp with an HTTP-only flag", []string{"tcp", "--webhook", "github=env:X", "22"}, "flag provided but not defined: -webhook"},
		{"connect without --listen", []string{"connect", "h.localhost"}, "--listen ADDR is required"},
		{"connect without hostname", []string{"connect", "--listen", "127.0.0.1:0"}, "expected exactly one HOSTNAME"},
		{"connect with a bad proxy", []string{"connect", "--proxy", "ftp://x", "--listen", "127.0.0.1:0", "h.localhost"}, "invalid --proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, noEnv, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q) = %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		sub        string
		want, omit []string
	}{
		{"tcp", []string{"Usage: client tcp [flags] TARGET", "--visitor-token", "--remote-port", "--proxy", "--key", "[KEYHOLE_VISITOR_TOKEN]"}, []string{"--webhook", "--inspect", "--host-header", "--basic-auth"}},
		{"connect", []string{"Usage: client connect [flags] --listen ADDR HOSTNAME", "--listen", "--token", "[KEYHOLE_VISITOR_TOKEN]"}, []string{"[KEYHOLE_TOKEN]", "--key", "--webhook"}},
	} {
		t.Run("help "+tc.sub, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{tc.sub, "--help"}, noEnv, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("run returned %v, want flag.ErrHelp", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("help lacks %q", w)
				}
			}
			for _, o := range tc.omit {
				if strings.Contains(stdout.String(), o) {
					t.Errorf("help shows %q", o)
				}
			}
		})
	}
	if got, err := parseTCPTarget("5432"); err != nil || got != "127.0.0.1:5432" {
		t.Errorf("parseTCPTarget(5432) = %q, %v", got, err)
	}
	if got, err := parseTCPTarget("db.internal:" + strconv.Itoa(6379)); err != nil || got != "db.internal:6379" {
		t.Errorf("parseTCPTarget(db.internal:6379) = %q, %v", got, err)
	}
}
