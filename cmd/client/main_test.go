package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

func noEnv(string) string { return "" }

func TestHelpNamesEveryFlag(t *testing.T) {
	fs, _ := newFlags()
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) < 6 {
		t.Fatalf("only %d flags: %v", len(names), names)
	}
	check := func(t *testing.T, help string) {
		t.Helper()
		if !strings.HasPrefix(help, "Usage: client [flags] TARGET") {
			t.Errorf("help starts %q", help[:min(len(help), 40)])
		}
		for _, n := range names {
			if !strings.Contains(help, "\n  --"+n+" ") && !strings.Contains(help, "\n  --"+n+"\n") {
				t.Errorf("help does not list --%s", n)
			}
			if !strings.Contains(help, "["+cli.EnvName(n)+"]") {
				t.Errorf("help does not name %s", cli.EnvName(n))
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, noEnv, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run returned %v, want flag.ErrHelp", err)
	}
	if stderr.Len() != 0 {
		t.Errorf("help wrote to stderr: %q", stderr.String())
	}
	check(t, stdout.String())

	code, out, errOut := cmdtest.Run(t, cmdtest.ClientPkg, []string{"-h"}, nil)
	if code != 0 || errOut != "" {
		t.Fatalf("client -h: exit %d, stderr %q", code, errOut)
	}
	check(t, out+"\n")
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"3000", "http://127.0.0.1:3000"},
		{"1", "http://127.0.0.1:1"},
		{"65535", "http://127.0.0.1:65535"},
		{"localhost:3000", "http://localhost:3000"},
		{"[::1]:3000", "http://[::1]:3000"},
		{"http://localhost:3000/app", "http://localhost:3000/app"},
		{"https://internal.example:8443", "https://internal.example:8443"},
		{"h2c://127.0.0.1:50051", "h2c://127.0.0.1:50051"},
	} {
		u, err := parseTarget(tc.in)
		if err != nil || u.String() != tc.want {
			t.Errorf("parseTarget(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		}
	}
	for _, in := range []string{"0", "99999", "-1", "localhost", "ftp://h:21", "http://", "http:///path", "h2c://", ""} {
		if u, err := parseTarget(in); err == nil {
			t.Errorf("parseTarget(%q) = %v, want an error", in, u)
		}
	}
}

func TestBadArgumentsExit2WithOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no target", nil, nil, "exactly one TARGET"},
		{"two targets", []string{"3000", "3001"}, nil, "exactly one TARGET"},
		{"port out of range", []string{"99999"}, nil, "99999"},
		{"not a target", []string{"localhost"}, nil, `"localhost"`},
		{"ftp target", []string{"ftp://h:21"}, nil, `"ftp://h:21"`},
		{"unknown flag", []string{"--bogus", "3000"}, nil, "bogus"},
		{"flag after target", []string{"3000", "--key"}, nil, "exactly one TARGET"},
		{"bad proxy URL", []string{"--proxy", "ftp://h", "3000"}, nil, `--proxy "ftp://h"`},
		{"bad log level", []string{"--log-level", "loud", "3000"}, nil, `"loud"`},
		{"zero max concurrent", []string{"--max-concurrent", "0", "3000"}, nil, "--max-concurrent 0"},
		{"bad proxy in environment", []string{"3000"}, []string{"KEYHOLE_PROXY=tcp://h:1"}, `"tcp://h:1"`},
		{"inspector beyond loopback without a token", []string{"--inspect", "0.0.0.0:4040", "3000"}, nil, "--inspect-token"},
		{"inspector on all interfaces without a token", []string{"--inspect", ":4040", "3000"}, nil, "--inspect-token"},
		{"bad inspector address", []string{"--inspect", "4040", "3000"}, nil, `--inspect "4040"`},
		{"bad inspector buffer", []string{"--inspect-buffer", "lots", "3000"}, nil, `"lots"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cmdtest.Run(t, cmdtest.ClientPkg, tc.args, tc.env)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Fatalf("stderr has %d lines, want one reason:\n%s", len(lines), stderr)
			}
			if !strings.HasPrefix(lines[0], "client: ") || !strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "--help") {
				t.Errorf("stderr %q, want \"client: \", %q and a pointer to --help", lines[0], tc.want)
			}
		})
	}
}

func TestBadKeyFileExit1(t *testing.T) {
	key := filepath.Join(t.TempDir(), "client.jwk")
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := cmdtest.Run(t, cmdtest.ClientPkg, []string{"--key", key, "3000"}, nil)
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	if want := "client: key file " + key + " is not a JWK"; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	if b, _ := os.ReadFile(key); string(b) != "not a key" {
		t.Errorf("key file overwritten: %q", b)
	}
}

// origin is a local web service for the client to publish.
func origin(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+string(b))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPublishLogAndReconnect(t *testing.T) {
	local := origin(t)
	px := cmdtest.StartProxy(t, 0)
	key := filepath.Join(t.TempDir(), "client.jwk")
	c := cmdtest.StartClient(t, px.Addr, key, local.URL)
	url1 := cmdtest.WaitURL(t, c, px.Port, 1, 20*time.Second)

	status, body := cmdtest.Do(t, px.Addr, "GET", url1, "/some/path?q=1", "")
	if status != 200 || body != "GET /some/path?q=1 " {
		t.Fatalf("GET through the tunnel: %d %q", status, body)
	}
	line := cmdtest.WaitStderr(t, c, 5*time.Second, "msg=request", "method=GET", "path=/some/path ", "status=200", "duration=")
	t.Logf("request line: %s", line)
	status, _ = cmdtest.Do(t, px.Addr, "POST", url1, "/missing", "x")
	if status != 404 {
		t.Fatalf("POST /missing: %d, want the local service's 404", status)
	}
	cmdtest.WaitStderr(t, c, 5*time.Second, "msg=request", "method=POST", "path=/missing", "status=404")
	n := 0
	for _, l := range cmdtest.StderrLines(c) {
		if strings.Contains(l, "msg=request") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d request lines for 2 requests; stderr:\n%s", n, c.Stderr())
	}

	// Restart the proxy on the same port: the client registers again, with
	// the same URL, and prints it again.
	if err := px.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := cmdtest.Exit(t, px.Process, 10*time.Second); code != 0 {
		t.Fatalf("proxy exit code %d", code)
	}
	px2 := cmdtest.StartProxy(t, px.Port)
	url2 := cmdtest.WaitURL(t, c, px.Port, 2, 20*time.Second)
	if url2 != url1 {
		t.Fatalf("second registration printed %s, first %s", url2, url1)
	}
	if status, body := cmdtest.Do(t, px2.Addr, "GET", url2, "/again", ""); status != 200 || body != "GET /again " {
		t.Fatalf("after the restart: %d %q", status, body)
	}
	if out := c.Stdout(); out != url1+"\n"+url1 {
		t.Errorf("stdout is %q, want exactly the URL twice", out)
	}
}

func TestSignalsStopBothPromptly(t *testing.T) {
	local := origin(t)
	for _, tc := range []struct {
		sig         syscall.Signal
		proxyFirst  bool
		defaultPath bool
	}{
		// The client stops while connected, then the proxy.
		{syscall.SIGINT, false, false},
		// The proxy stops first; the client is reconnecting when told to
		// stop. The key lives at the default path under the config
		// directory.
		{syscall.SIGTERM, true, true},
	} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			key := filepath.Join(dir, "client.jwk")
			px := cmdtest.StartProxy(t, 0)
			var c *testenv.Process
			if tc.defaultPath {
				key = filepath.Join(dir, "config", "keyhole", "client.jwk")
				c = testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg),
					[]string{"--proxy", "ws://" + px.Addr, local.URL},
					cmdtest.Env("HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config")))
			} else {
				c = cmdtest.StartClient(t, px.Addr, key, local.URL)
			}
			url1 := cmdtest.WaitURL(t, c, px.Port, 1, 20*time.Second)

			stop := func(name string, p *testenv.Process) {
				t.Helper()
				start := time.Now()
				if err := p.Signal(tc.sig); err != nil {
					t.Fatal(err)
				}
				if code := cmdtest.Exit(t, p, 5*time.Second); code != 0 {
					t.Fatalf("%s exited %d after %v; stderr:\n%s", name, code, tc.sig, p.Stderr())
				}
				t.Logf("%s exited after %v", name, time.Since(start).Round(time.Millisecond))
			}
			if tc.proxyFirst {
				stop("proxy", px.Process)
				cmdtest.WaitStderr(t, c, 5*time.Second, "reconnecting")
				stop("client", c)
			} else {
				stop("client", c)
				stop("proxy", px.Process)
			}

			fi, err := os.Stat(key)
			if err != nil {
				t.Fatalf("key file: %v", err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("key file mode %v, want 0600", m)
			}
			// The kept key gives the same URL to the next client process.
			px2 := cmdtest.StartProxy(t, px.Port)
			c2 := cmdtest.StartClient(t, px2.Addr, key, local.URL)
			if url2 := cmdtest.WaitURL(t, c2, px.Port, 1, 20*time.Second); url2 != url1 {
				t.Errorf("restarted client got %s, first %s", url2, url1)
			}
		})
	}
}

func TestRegistrationRefusedExit1(t *testing.T) {
	local := origin(t)
	px := cmdtest.StartProxy(t, 0, "--token", "s3cret")
	key := filepath.Join(t.TempDir(), "client.jwk")
	c := cmdtest.StartClient(t, px.Addr, key, local.URL)
	if code := cmdtest.Exit(t, c, 20*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if out := c.Stdout(); out != "" {
		t.Errorf("stdout %q, want nothing: the client never registered", out)
	}
	lines := cmdtest.StderrLines(c)
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "client: proxy refused registration: ") || !strings.Contains(last, "token") {
		t.Errorf("last stderr line %q should give the proxy's reason", last)
	}

	// The token from the environment is accepted.
	c2 := testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg),
		[]string{"--proxy", "ws://" + px.Addr, "--key", key, local.URL}, cmdtest.Env("KEYHOLE_TOKEN=s3cret"))
	cmdtest.WaitURL(t, c2, px.Port, 1, 20*time.Second)
}
