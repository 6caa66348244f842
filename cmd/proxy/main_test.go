package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
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
	if len(names) < 10 {
		t.Fatalf("only %d flags: %v", len(names), names)
	}
	check := func(t *testing.T, help string) {
		t.Helper()
		for _, n := range names {
			if !strings.Contains(help, "\n  --"+n+" ") && !strings.Contains(help, "\n  --"+n+"\n") {
				t.Errorf("help does not list --%s", n)
			}
			if !strings.Contains(help, "["+cli.EnvName(n)+"]") {
				t.Errorf("help does not name %s", cli.EnvName(n))
			}
		}
	}
	for _, arg := range []string{"--help", "-h"} {
		t.Run("run "+arg, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{arg}, noEnv, &stdout, &stderr)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("run returned %v, want flag.ErrHelp", err)
			}
			if stderr.Len() != 0 {
				t.Errorf("help wrote to stderr: %q", stderr.String())
			}
			check(t, stdout.String())
		})
	}
	t.Run("binary", func(t *testing.T) {
		code, stdout, stderr := cmdtest.Run(t, cmdtest.ProxyPkg, []string{"--help"}, nil)
		if code != 0 {
			t.Fatalf("proxy --help exited %d; stderr: %s", code, stderr)
		}
		if !strings.HasPrefix(stdout, "Usage: proxy") {
			t.Errorf("help starts %q", stdout[:min(len(stdout), 40)])
		}
		check(t, "\n"+stdout+"\n")
	})
}

func TestBadFlagsExit2WithOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"size with a bad unit", []string{"--max-body", "12XB"}, nil, `"12XB"`},
		{"size over the limit", []string{"--max-body", "2GiB"}, nil, "at most 1GiB"},
		{"bad duration", []string{"--timeout", "nope"}, nil, `"nope"`},
		{"unknown flag", []string{"--bogus"}, nil, "bogus"},
		{"missing value", []string{"--listen"}, nil, "listen"},
		{"argument", []string{"serve"}, nil, `unexpected argument "serve"`},
		{"bad listen address", []string{"--listen", "nope"}, nil, `--listen "nope"`},
		{"bad log level", []string{"--log-level", "loud"}, nil, `"loud"`},
		{"bad CIDR", []string{"--trusted-proxies", "10.0.0.0/8,10.1.2.300"}, nil, `"10.1.2.300"`},
		{"bad domain", []string{"--domain", "a/b"}, nil, `"a/b"`},
		{"public URL on another domain", []string{"--public-url", "https://example.com"}, nil, "example.com"},
		{"bad environment", nil, []string{"KEYHOLE_TIMEOUT=soon"}, `"soon" for KEYHOLE_TIMEOUT`},
		{"bad size in environment", nil, []string{"KEYHOLE_MAX_BODY=lots"}, `"lots" for KEYHOLE_MAX_BODY`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cmdtest.Run(t, cmdtest.ProxyPkg, tc.args, tc.env)
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
			if !strings.HasPrefix(lines[0], "proxy: ") || !strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "--help") {
				t.Errorf("stderr %q, want \"proxy: \", %q and a pointer to --help", lines[0], tc.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's writes and the test's
// reads.
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

// offlineTunnel is a well-formed hostname that no client holds: a request
// to it gets 413 for a body over --max-body (checked first, without
// contacting anyone) and 502 otherwise.
var offlineTunnel = strings.Repeat("a", 52) + ".localhost"

// post sends a body of n bytes to the offline tunnel through addr.
func post(t *testing.T, addr string, n int) int {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(strings.Repeat("x", n)))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = offlineTunnel
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestEnvironmentAndFlags(t *testing.T) {
	envPort, flagPort := testenv.FreePort(t), testenv.FreePort(t)
	env := map[string]string{
		"KEYHOLE_LISTEN":   "127.0.0.1:" + strconv.Itoa(envPort),
		"KEYHOLE_MAX_BODY": "10B",
	}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name    string
		args    []string
		port    int
		maxBody int
	}{
		{"environment", nil, envPort, 10},
		{"flags win", []string{"--listen", "127.0.0.1:" + strconv.Itoa(flagPort), "--max-body", "20B"}, flagPort, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr syncBuffer
			done := make(chan error, 1)
			go func() { done <- run(ctx, tc.args, getenv, &stdout, &stderr) }()
			addr := "127.0.0.1:" + strconv.Itoa(tc.port)
			waitListening(t, addr, done)
			if got := post(t, addr, tc.maxBody); got != http.StatusBadGateway {
				t.Errorf("body of %d bytes (the limit): %d, want 502 (passed the limit, tunnel offline)", tc.maxBody, got)
			}
			if got := post(t, addr, tc.maxBody+1); got != http.StatusRequestEntityTooLarge {
				t.Errorf("body of %d bytes (limit+1): %d, want 413", tc.maxBody+1, got)
			}
			if tc.port == flagPort {
				if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(envPort)); err == nil {
					c.Close()
					t.Error("proxy also listens on KEYHOLE_LISTEN although --listen was given")
				}
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("run returned %v after cancel, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("run did not return within 10s of cancel")
			}
			if stdout.String() != "" {
				t.Errorf("proxy wrote to stdout: %q", stdout.String())
			}
			if !strings.Contains(stderr.String(), "addr="+addr) {
				t.Errorf("log does not name the listen address %s:\n%s", addr, stderr.String())
			}
		})
	}
}

// waitListening waits until addr accepts connections, failing early if run
// returns.
func waitListening(t *testing.T, addr string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s within 10s", addr)
		}
	}
}

func TestSignalsStopPromptly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			port := testenv.FreePort(t)
			// The listen address comes from the environment here, which
			// checks that main passes the real environment to run.
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			p := testenv.StartProcess(t, testenv.Build(t, cmdtest.ProxyPkg), nil, cmdtest.Env("KEYHOLE_LISTEN="+addr))
			cmdtest.WaitHTTP(t, p, addr)
			if got := post(t, addr, 1); got != http.StatusBadGateway {
				t.Fatalf("offline tunnel: %d, want 502", got)
			}
			start := time.Now()
			if err := p.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := cmdtest.Exit(t, p, 5*time.Second); code != 0 {
				t.Fatalf("exit code %d after %v, want 0; stderr:\n%s", code, sig, p.Stderr())
			}
			t.Logf("exited %v after %v", sig, time.Since(start).Round(time.Millisecond))
			if !strings.Contains(p.Stderr(), "msg=stopped") {
				t.Errorf("no \"stopped\" line; stderr:\n%s", p.Stderr())
			}
		})
	}
}
