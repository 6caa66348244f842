package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// These tests are inside the package so that they can run one poll of
// Watch at a time (reloadIfChanged) and see that nothing happened, which a
// test from outside could only guess by waiting.

// logBuffer collects a logger's lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// recorder is an Apply that keeps what it was given, refusing contents
// that start with "bad".
type recorder struct {
	mu      sync.Mutex
	applied []string
	seen    chan string
}

func newRecorder() *recorder { return &recorder{seen: make(chan string, 16)} }

func (r *recorder) apply(c [][]byte) error {
	s := string(c[0])
	if strings.HasPrefix(s, "bad") {
		return errorString("refused " + s)
	}
	r.mu.Lock()
	r.applied = append(r.applied, s)
	r.mu.Unlock()
	r.seen <- s
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied)
}

type errorString string

func (e errorString) Error() string { return string(e) }

func TestReloadWatchDetectsChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	writeFile(t, path, "one")
	rec := newRecorder()
	r, err := NewFileReloader(ReloadFiles{Name: "test files", Paths: []string{path}, Apply: rec.apply})
	if err != nil {
		t.Fatal(err)
	}
	if got := <-rec.seen; got != "one" {
		t.Fatalf("first apply got %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Watch(ctx, 5*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	for _, content := range []string{"two", "three"} {
		writeFile(t, path, content)
		select {
		case got := <-rec.seen:
			if got != content {
				t.Fatalf("applied %q, want %q", got, content)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("change to %q not applied within 5s", content)
		}
	}
}

func TestReloadTouchDoesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	writeFile(t, path, "same")
	rec := newRecorder()
	var logs logBuffer
	r, err := NewFileReloader(ReloadFiles{Name: "test files", Paths: []string{path}, Apply: rec.apply, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	// Rewritten with the same bytes and a new modification time.
	writeFile(t, path, "same")
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	r.reloadIfChanged()
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := rec.count(); n != 1 {
		t.Errorf("applied %d times, want once (at start)", n)
	}
	if n := logs.count("test files reloaded"); n != 0 {
		t.Errorf("logged %d reloads for an unchanged file", n)
	}
	// A real change is applied by one poll, and logged.
	writeFile(t, path, "changed")
	r.reloadIfChanged()
	if n := rec.count(); n != 2 {
		t.Errorf("after a change: applied %d times, want 2", n)
	}
	if n := logs.count("test files reloaded"); n != 1 {
		t.Errorf("logged %d reloads, want 1", n)
	}
}

func TestReloadBadFileKeepsOld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	writeFile(t, path, "good")
	rec := newRecorder()
	var logs logBuffer
	r, err := NewFileReloader(ReloadFiles{Name: "test files", Paths: []string{path}, Apply: rec.apply, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		spoil func()
	}{
		{"refused content", func() { writeFile(t, path, "bad one") }},
		{"missing file", func() { os.Remove(path) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := logs.count("cannot be used")
			tc.spoil()
			r.reloadIfChanged()
			r.reloadIfChanged() // the same problem again: not logged again
			if n := logs.count("cannot be used") - before; n != 1 {
				t.Errorf("warned %d times over two polls, want once", n)
			}
			// On demand, the problem is reported every time.
			if err := r.Reload(); err == nil || !strings.HasPrefix(err.Error(), "test files") {
				t.Errorf("Reload: %v, want an error naming the files", err)
			}
			if n := logs.count("not reloaded"); n == 0 {
				t.Error("Reload logged no warning")
			}
			if n := rec.count(); n != 1 {
				t.Errorf("applied %d times, want only the first good file", n)
			}
			writeFile(t, path, "good")
		})
	}
	// Fixed: the next change is applied.
	writeFile(t, path, "good again")
	r.reloadIfChanged()
	if n := rec.count(); n != 2 {
		t.Errorf("fixed file: applied %d times, want 2", n)
	}
}

func TestReloadNewFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	writeFile(t, bad, "bad from the start")
	for _, tc := range []struct {
		name string
		cfg  ReloadFiles
		want string
	}{
		{"refused", ReloadFiles{Name: "test files", Paths: []string{bad}, Apply: newRecorder().apply}, "test files: refused"},
		{"missing", ReloadFiles{Name: "test files", Paths: []string{filepath.Join(dir, "none")}, Apply: newRecorder().apply}, "no such file"},
		{"no Apply", ReloadFiles{Paths: []string{bad}}, "Apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFileReloader(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestReloadTokenKeys(t *testing.T) {
	a, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	write := func(keys ...*jose.JSONWebKey) {
		set := jose.JSONWebKeySet{}
		for _, k := range keys {
			set.Keys = append(set.Keys, k.Public())
		}
		data, _ := json.Marshal(set)
		writeFile(t, path, string(data))
	}
	write(a)
	var logs logBuffer
	keys := new(TokenKeys)
	r, err := keys.Reloader(path, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	tokA, err := IssueToken(a, TokenSpec{Audience: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	valid := func() error { _, err := keys.Verify(tokA, "localhost", "", time.Time{}); return err }
	if err := valid(); err != nil {
		t.Fatalf("token of the loaded key: %v", err)
	}
	for _, bad := range []string{"{", `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"x"}]}`, string(mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{*b}}))} {
		writeFile(t, path, bad)
		if err := r.Reload(); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("bad set %.30q: Reload returned %v, want an error naming the file", bad, err)
		}
		r.reloadIfChanged()
		if err := valid(); err != nil {
			t.Errorf("after bad set %.30q, the old key's token: %v", bad, err)
		}
	}
	if n := logs.count("token keys changed but cannot be used"); n != 3 {
		t.Errorf("%d warnings from polls for 3 bad files, want 3", n)
	}
	write(b)
	r.reloadIfChanged()
	if err := valid(); err == nil {
		t.Error("key A removed from the file, its token still accepted")
	}
	if n := logs.count("token keys reloaded"); n != 1 {
		t.Errorf("%d reload lines, want 1", n)
	}
	if _, err := keys.Reloader("", nil); err == nil {
		t.Error("Reloader without a file accepted")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReloadAccessLists(t *testing.T) {
	a, b := strings.Repeat("a", 52), strings.Repeat("b", 52)
	dir := t.TempDir()
	allow, deny := filepath.Join(dir, "allow"), filepath.Join(dir, "deny")
	writeFile(t, allow, a+"\n"+b+".localhost # and b, by hostname\n")
	writeFile(t, deny, "")
	var cur *Access
	r, err := AccessReloader(allow, deny, func(x *Access) { cur = x }, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string, wantA, wantB bool) {
		t.Helper()
		if got := cur.Permits(a); got != wantA {
			t.Errorf("%s: a permitted %v, want %v", step, got, wantA)
		}
		if got := cur.Permits(b); got != wantB {
			t.Errorf("%s: b permitted %v, want %v", step, got, wantB)
		}
	}
	check("start", true, true)
	writeFile(t, deny, b+"\n")
	r.reloadIfChanged()
	check("b denied", true, false)
	writeFile(t, allow, "not a label\n")
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), allow) {
		t.Errorf("bad allow list: %v, want an error naming the file and line 1", err)
	}
	check("bad allow list, old rules", true, false)
	writeFile(t, allow, "")
	r.reloadIfChanged()
	check("allow list emptied: any key not denied", true, false)

	t.Run("one file", func(t *testing.T) {
		acc, err := LoadAccess("", deny)
		if err != nil {
			t.Fatal(err)
		}
		if acc.Permits(b) || !acc.Permits(a) {
			t.Errorf("deny list only: a %v, b %v; want true, false", acc.Permits(a), acc.Permits(b))
		}
	})
	t.Run("no file", func(t *testing.T) {
		if _, err := LoadAccess("", ""); err == nil {
			t.Error("no files accepted")
		}
	})
}
