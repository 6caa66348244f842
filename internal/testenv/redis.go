package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// readyTimeout bounds how long a server may take to accept connections.
const readyTimeout = 15 * time.Second

// errExitedEarly marks a server that exited before it was ready, usually
// because another process took its port between FreePort and bind.
var errExitedEarly = errors.New("exited before it was ready")

// RedisServer is a redis-server started by [Redis] or [RedisWithArgs]. It
// keeps nothing on disk, so a restart starts empty.
type RedisServer struct {
	// Addr is "127.0.0.1:PORT".
	Addr string

	t    testing.TB
	bin  string
	args []string

	mu   sync.Mutex
	proc *Process
}

// Redis starts a redis-server on a free port of 127.0.0.1 and waits until it
// answers PING. Cleanup stops it.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	return RedisWithArgs(t)
}

// RedisWithArgs is [Redis] with extra redis-server arguments appended, for
// example "--requirepass", "secret".
func RedisWithArgs(t testing.TB, extra ...string) *RedisServer {
	t.Helper()
	bin := lookBinary(t, "redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server")
	dir := t.TempDir()
	var lastErr error
	for range 3 {
		port := FreePort(t)
		s := &RedisServer{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			t:    t,
			bin:  bin,
			args: append([]string{
				"--port", strconv.Itoa(port),
				"--bind", "127.0.0.1",
				"--save", "",
				"--appendonly", "no",
				"--dir", dir,
			}, extra...),
		}
		err := s.start()
		if err == nil {
			return s
		}
		lastErr = err
		if !errors.Is(err, errExitedEarly) {
			break
		}
	}
	t.Fatalf("testenv: %v", lastErr)
	return nil
}

// URL returns "redis://127.0.0.1:PORT/0".
func (s *RedisServer) URL() string { return "redis://" + s.Addr + "/0" }

// PID returns the process ID of the running server, or 0 when stopped.
func (s *RedisServer) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.PID()
}

// Stop sends SIGTERM to the server and waits until it has exited (SIGKILL
// after 5 s). Stopping a stopped server does nothing.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.stop(stopGrace)
	}
}

// Start starts a stopped server again on the same port and waits until it
// answers PING. Starting a running server does nothing.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("testenv: %v", err)
	}
}

func (s *RedisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	p, err := startProcess(s.t, s.bin, s.args, nil)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	ready := func(ctx context.Context) bool { return redisAnswers(ctx, s.Addr) }
	if err := waitReady(p, ready); err != nil {
		p.stop(stopGrace)
		return fmt.Errorf("redis-server on %s: %w\n%s", s.Addr, err, tail(p.Stdout()+"\n"+p.Stderr(), 4096))
	}
	s.proc = p
	return nil
}

// redisAnswers reports whether a Redis server at addr answers PING. A
// password-protected server answering NOAUTH is up as well.
func redisAnswers(ctx context.Context, addr string) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false
	}
	return strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH")
}

// waitReady polls ready until it reports true, the process exits, or
// readyTimeout passes.
func waitReady(p *Process, ready func(ctx context.Context) bool) error {
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		ok := ready(ctx)
		cancel()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", readyTimeout)
		}
		select {
		case <-p.Done():
			return errExitedEarly
		case <-tick.C:
		}
	}
}
