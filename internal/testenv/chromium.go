package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Chromium returns the path of the Chromium binary (/usr/bin/chromium, or
// chromium on PATH). When it is missing the test is skipped, or failed when
// the environment variable CI is set.
func Chromium(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/usr/bin/chromium"); err == nil && !fi.IsDir() {
		return "/usr/bin/chromium"
	}
	return lookBinary(t, "chromium")
}

// ChromiumDumpDOM loads url in a headless Chromium with a fresh profile, lets
// the page's scripts run for budget of virtual time, and returns the
// serialized DOM that Chromium prints. Chromium and every helper process it
// started are killed when ctx ends; without a deadline on ctx, the run is
// limited to budget plus one minute.
func ChromiumDumpDOM(ctx context.Context, t testing.TB, url string, budget time.Duration) (string, error) {
	t.Helper()
	bin := Chromium(t)
	profile, err := os.MkdirTemp("", "testenv-chromium-")
	if err != nil {
		return "", fmt.Errorf("chromium: %w", err)
	}
	// Not t.TempDir: a helper process still writing into the profile while
	// it dies would make TempDir's own cleanup fail the test.
	defer os.RemoveAll(profile)

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, budget+time.Minute)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, bin,
		"--headless",
		"--no-sandbox",
		"--disable-gpu",
		"--disable-quic",
		"--no-first-run",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-crash-reporter",
		"--user-data-dir="+profile,
		"--virtual-time-budget="+strconv.FormatInt(budget.Milliseconds(), 10),
		"--dump-dom",
		url,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// Chromium forks renderer, GPU and crash-handler processes; its own
	// process group lets one kill reach all of them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("chromium dump-dom %s: %w\n%s", url, err, tail(stderr.String(), 4096))
	}
	return stdout.String(), nil
}
