package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// builds caches [Build] results for the life of the test binary.
//
// This is the one piece of package-level mutable state in the project, and
// it is deliberate: a binary built for one test is reused by the next, which
// is the whole point of the cache, and a test binary is a single process.
// Each package path is built once (sync.Once per entry), so parallel tests
// asking for different packages build concurrently.
var builds = struct {
	mu      sync.Mutex
	dir     string
	entries map[string]*buildEntry
}{entries: make(map[string]*buildEntry)}

type buildEntry struct {
	once sync.Once
	path string
	err  error
}

// Build compiles the main package pkg (an import path such as
// "github.com/keyhole-tunnel/keyhole/cmd/proxy", or a relative path such as
// "./testdata/hello") and returns the path of the binary. It uses -race when
// the test binary does. Each package is built once per test binary run.
//
// Under go test the binaries go into go test's own work directory, which go
// test removes when it finishes; a test binary run by hand leaves them in a
// keyhole-testenv-build-* directory under the system temp directory.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.mu.Lock()
	e, ok := builds.entries[pkg]
	if !ok {
		e = &buildEntry{}
		builds.entries[pkg] = e
	}
	builds.mu.Unlock()
	e.once.Do(func() { e.path, e.err = build(pkg) })
	if e.err != nil {
		t.Fatalf("testenv: %v", e.err)
	}
	return e.path
}

func build(pkg string) (string, error) {
	dir, err := buildDir()
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	sum := sha256.Sum256([]byte(pkg))
	out := filepath.Join(dir, hex.EncodeToString(sum[:6]), path.Base(filepath.ToSlash(pkg)))
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

func buildDir() (string, error) {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		return builds.dir, nil
	}
	exe, err := os.Executable()
	if err == nil && strings.Contains(exe, string(filepath.Separator)+"go-build") {
		builds.dir = filepath.Join(filepath.Dir(exe), "testenv-build")
	} else {
		d, err := os.MkdirTemp("", "keyhole-testenv-build-")
		if err != nil {
			return "", err
		}
		builds.dir = d
	}
	return builds.dir, nil
}
