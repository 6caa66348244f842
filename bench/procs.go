package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a child gets after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// pollEvery is the period of every wait-for-state loop; each also has a
// deadline.
const pollEvery = 10 * time.Millisecond

// proc is a child process started by a [procSet].
type proc struct {
	name   string
	cmd    *exec.Cmd
	pid    int
	done   chan struct{} // closed once the process has exited
	err    error         // cmd.Wait's result, set before done is closed
	stderr *tailBuffer
}

// procSet starts child processes and stops every one of them, by PID, at
// the end.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
	pids  []int // every PID ever started, for the test
}

// start runs bin with args. Each line the child writes to stdout is passed
// to onLine (nil: discarded), in order, from one goroutine; the tail of
// stderr is kept for error messages.
func (s *procSet) start(name, bin string, args []string, onLine func(string)) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout = &lineWriter{fn: onLine}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), stderr: &tailBuffer{max: 64 << 10}}
	cmd.Stderr = p.stderr
	// Own process group: a Ctrl-C in the terminal reaches only the
	// harness, which then stops its children in order.
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.pid = cmd.Process.Pid
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.pids = append(s.pids, p.pid)
	s.mu.Unlock()
	return p, nil
}

// stopAll stops every process still running, newest first.
func (s *procSet) stopAll() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

// forget drops stopped processes from the set.
func (s *procSet) forget(ps ...*proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.procs[:0]
	for _, p := range s.procs {
		if !slices.Contains(ps, p) {
			kept = append(kept, p)
		}
	}
	clear(s.procs[len(kept):])
	s.procs = kept
}

// stop sends SIGTERM, then SIGKILL after stopGrace, and waits for the
// process to exit.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes a process that exited when it should not have.
func (p *proc) exitError() error {
	return fmt.Errorf("%s (pid %d) exited: %v\n%s", p.name, p.pid, p.err, indent(p.stderr.String(), 2048))
}

// rss returns the resident set size of the process, from /proc.
func (p *proc) rss() (int64, error) { return readRSS(p.pid) }

func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("read RSS: no VmRSS line for pid %d", pid)
}

// cpuTime returns the user plus system CPU time the process has used, all
// threads together, from /proc/PID/stat.
func (p *proc) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	// The command name, in parentheses, may hold spaces; fields are
	// counted after it. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	var f []string
	if i >= 0 {
		f = strings.Fields(string(b[i+1:]))
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("read CPU time: malformed /proc/%d/stat", p.pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read CPU time: %w", err)
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux the harness targets.
	return time.Duration(ticks) * (time.Second / 100), nil
}

// cpuMeter measures the CPU time that groups of processes use.
type cpuMeter struct {
	groups map[string][]*proc
	start  map[string]time.Duration
}

func startCPU(groups map[string][]*proc) *cpuMeter {
	m := &cpuMeter{groups: groups, start: map[string]time.Duration{}}
	for role, ps := range groups {
		m.start[role] = sumCPU(ps)
	}
	return m
}

// stop returns each group's CPU time since startCPU; a group whose time
// cannot be read is left out.
func (m *cpuMeter) stop() map[string]time.Duration {
	out := map[string]time.Duration{}
	for role, ps := range m.groups {
		if t0 := m.start[role]; t0 >= 0 {
			if t1 := sumCPU(ps); t1 >= 0 {
				out[role] = t1 - t0
			}
		}
	}
	return out
}

// sumCPU adds up the CPU time of ps, or returns -1.
func sumCPU(ps []*proc) time.Duration {
	var sum time.Duration
	for _, p := range ps {
		t, err := p.cpuTime()
		if err != nil {
			return -1
		}
		sum += t
	}
	return sum
}

// waitFor polls cond until it holds, any of procs exits, ctx ends or
// timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, procs []*proc, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("waiting for %s: %w", what, p.exitError())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: timed out after %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// waitTCP waits until addr accepts connections.
func waitTCP(ctx context.Context, addr string, p *proc, timeout time.Duration) error {
	return waitFor(ctx, timeout, p.name+" to listen on "+addr, []*proc{p}, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Callers that pass it to a child retry with another port if the child
// fails to listen.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// childEnv is the harness's environment without KEYHOLE_* variables, which
// the commands would take as flag values.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYHOLE_") {
			env = append(env, kv)
		}
	}
	return env
}

// buildCommands compiles cmd/proxy and cmd/client into dir.
func buildCommands(ctx context.Context, dir string) (proxyBin, clientBin string, err error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("build: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	const mod = "github.com/keyhole-tunnel/keyhole/"
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", dir+string(filepath.Separator), mod+"cmd/proxy", mod+"cmd/client")
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build (run the harness inside the keyhole module): %w\n%s", err, out)
	}
	return filepath.Join(dir, "proxy"), filepath.Join(dir, "client"), nil
}

// lineWriter splits what is written to it into lines.
type lineWriter struct {
	fn  func(string)
	buf []byte
}

// maxLine bounds a line; a longer one is cut.
const maxLine = 64 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	start := 0
	for {
		i := bytes.IndexByte(w.buf[start:], '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSuffix(string(w.buf[start:start+i]), "\r")
		start += i + 1
		if w.fn != nil {
			w.fn(line)
		}
	}
	n := copy(w.buf, w.buf[start:])
	w.buf = w.buf[:min(n, maxLine)]
	return len(p), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.b) > t.max {
		return string(t.b[len(t.b)-t.max:])
	}
	return string(t.b)
}

// indent returns the last n bytes of s, each line indented.
func indent(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString("    | ")
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}
