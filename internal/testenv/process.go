package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Output limits: a noisy server under load must not grow the test's memory
// without bound. The oldest output is dropped first.
const (
	maxStdoutLines = 100_000
	maxStderrBytes = 1 << 20
	// logTail is how much of each stream a failing test logs.
	logTail = 16 << 10
)

// stopGrace is how long cleanup waits after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// Process is a program started by [StartProcess]. Its stdout is kept line by
// line for [Process.WaitLine]; its stderr is kept in a buffer and logged,
// with the tail of stdout, when the test fails.
type Process struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	pid  int

	// done is closed once the process has exited and its output is drained.
	done    chan struct{}
	waitErr error

	mu      sync.Mutex
	lines   []string
	dropped int // lines dropped from the front of lines
	partial []byte
	eof     bool
	changed chan struct{} // closed and replaced whenever lines or eof change
	stderr  []byte
}

// StartProcess starts the program name with args. env adds to the test
// process's environment (later entries win); nil inherits it unchanged. The
// program runs in its own process group, with stdin from /dev/null.
//
// Cleanup sends SIGTERM, waits up to 5 s, then sends SIGKILL; afterwards it
// kills whatever is left in the process group (children the program did not
// reap), so nothing outlives the test.
func StartProcess(t testing.TB, name string, args []string, env []string) *Process {
	t.Helper()
	p, err := startProcess(t, name, args, env)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

func startProcess(t testing.TB, name string, args []string, env []string) (*Process, error) {
	p := &Process{
		t:       t,
		name:    name,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	cmd := exec.Command(name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout = stdoutWriter{p}
	cmd.Stderr = stderrWriter{p}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A grandchild that inherited stdout would otherwise keep Wait from
	// returning after the program itself exited.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	p.pid = cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if len(p.partial) > 0 {
			p.appendLine(string(p.partial))
			p.partial = nil
		}
		p.eof = true
		p.waitErr = err
		p.notify()
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	return p, nil
}

// PID returns the process ID, which is also its process group ID.
func (p *Process) PID() int { return p.pid }

// Signal sends sig to the process (not its group). It returns
// os.ErrProcessDone once the process has exited.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process and everything in its process group.
func (p *Process) Kill() error {
	if p.exited() {
		p.killGroup()
		return nil
	}
	if err := syscall.Kill(-p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	return nil
}

// Wait waits until the process has exited and returns its exit code, which
// is -1 when a signal ended it. err is non-nil only when ctx ends first or
// the process could not be waited for; a non-zero exit is not an error.
func (p *Process) Wait(ctx context.Context) (exitCode int, err error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for %s: %w", p.name, ctx.Err())
	}
	var exitErr *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &exitErr) && !errors.Is(p.waitErr, exec.ErrWaitDelay) {
		return -1, fmt.Errorf("wait for %s: %w", p.name, p.waitErr)
	}
	return p.cmd.ProcessState.ExitCode(), nil
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitLine returns the first line of stdout, from the start of the output,
// for which match reports true. It waits for more output until ctx ends or
// the process closes stdout. Calling it twice with the same match returns
// the same line.
func (p *Process) WaitLine(ctx context.Context, match func(line string) bool) (string, error) {
	next := 0 // absolute line number
	for {
		p.mu.Lock()
		if next < p.dropped {
			next = p.dropped
		}
		fresh := p.lines[next-p.dropped:]
		next += len(fresh)
		eof, changed := p.eof, p.changed
		p.mu.Unlock()

		// fresh is never modified in place (only appended to or re-sliced),
		// so it can be read without the lock, and match may call back into p.
		for _, l := range fresh {
			if match(l) {
				return l, nil
			}
		}
		if eof {
			return "", fmt.Errorf("wait for line from %s: output ended without a match", p.name)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", fmt.Errorf("wait for line from %s: %w", p.name, ctx.Err())
		}
	}
}

// Stdout returns the stdout lines seen so far (at most the last 100000),
// joined with newlines.
func (p *Process) Stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Stderr returns the stderr output seen so far (at most the last 1 MiB).
func (p *Process) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.stderr)
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then kills. It returns once the
// process has exited.
func (p *Process) stop(grace time.Duration) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-t.C:
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			<-p.done
		}
		t.Stop()
	}
	p.killGroup()
}

// killGroup kills processes left in the group after the leader exited. The
// group ID cannot name an unrelated process while any member is alive, and
// ESRCH just means there is nothing left.
func (p *Process) killGroup() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
}

func (p *Process) cleanup() {
	p.stop(stopGrace)
	if p.t.Failed() {
		p.t.Logf("testenv: %s (pid %d) stderr:\n%s", p.name, p.pid, tail(p.Stderr(), logTail))
		p.t.Logf("testenv: %s (pid %d) stdout:\n%s", p.name, p.pid, tail(p.Stdout(), logTail))
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// appendLine and notify are called with p.mu held.
func (p *Process) appendLine(l string) {
	p.lines = append(p.lines, strings.TrimSuffix(l, "\r"))
	if len(p.lines) > maxStdoutLines {
		drop := len(p.lines) - maxStdoutLines
		// Copy rather than re-slice so the dropped lines can be collected;
		// slices already handed to WaitLine keep their own backing array.
		p.lines = append([]string(nil), p.lines[drop:]...)
		p.dropped += drop
	}
}

func (p *Process) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

type stdoutWriter struct{ p *Process }

func (w stdoutWriter) Write(b []byte) (int, error) {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.appendLine(string(p.partial[:i]))
		p.partial = p.partial[i+1:]
		added = true
	}
	if added {
		// Move the remainder so partial does not pin a growing array.
		p.partial = append([]byte(nil), p.partial...)
		p.notify()
	}
	return len(b), nil
}

type stderrWriter struct{ p *Process }

func (w stderrWriter) Write(b []byte) (int, error) {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stderr = append(p.stderr, b...)
	if len(p.stderr) > maxStderrBytes {
		p.stderr = append([]byte(nil), p.stderr[len(p.stderr)-maxStderrBytes:]...)
	}
	return len(b), nil
}
