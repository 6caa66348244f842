package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
)

// TestPoolKill9: two client processes share a key with --pool; the load
// is spread over both; one is killed with SIGKILL under load, and only
// requests it had in flight may fail: once the proxy has seen it die
// (its connection resets at once), every request goes to the other.
func TestPoolKill9(t *testing.T) {
	named := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	p := cmdtest.StartProxy(t, 0)
	key := filepath.Join(t.TempDir(), "shared.jwk")
	first := cmdtest.StartClient(t, p.Addr, key, named("first").URL, "--pool", "--inspect", "off")
	url := cmdtest.WaitURL(t, first, p.Port, 1, 30*time.Second)
	second := cmdtest.StartClient(t, p.Addr, key, named("second").URL, "--pool", "--inspect", "off")
	if u := cmdtest.WaitURL(t, second, p.Port, 1, 30*time.Second); u != url {
		t.Fatalf("second member registered %s, want the shared %s", u, url)
	}

	type result struct {
		at   time.Time
		body string // the member's name, or the status
	}
	const workers = 8
	load := func(ctx context.Context, max int) []result {
		var mu sync.Mutex
		var out []result
		var wg sync.WaitGroup
		hc := &http.Client{Timeout: 10 * time.Second}
		for range workers {
			wg.Go(func() {
				for ctx.Err() == nil {
					mu.Lock()
					if len(out) >= max {
						mu.Unlock()
						return
					}
					mu.Unlock()
					req, _ := http.NewRequest(http.MethodGet, "http://"+p.Addr+"/", nil)
					req.Host = url[len("http://"):]
					body := "error"
					if resp, err := hc.Do(req); err == nil {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						body = string(b)
						if resp.StatusCode != http.StatusOK {
							body = resp.Status
						}
					}
					mu.Lock()
					out = append(out, result{time.Now(), body})
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return out
	}

	counts := map[string]int{}
	before := load(context.Background(), 1000)
	for _, r := range before {
		counts[r.body]++
	}
	t.Logf("before the kill: %v", counts)
	for _, m := range []string{"first", "second"} {
		if share := float64(counts[m]) / float64(len(before)); share < 0.40 || share > 0.60 {
			t.Errorf("%s answered %.0f%% of %d requests, want 40-60%%: %v", m, 100*share, len(before), counts)
		}
	}

	// Under load, kill the second member without a word.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	killedAt := make(chan time.Time, 1)
	time.AfterFunc(time.Second, func() {
		second.Signal(syscall.SIGKILL)
		killedAt <- time.Now()
	})
	results := load(ctx, 100000)
	killed := <-killedAt
	failed, after := 0, map[string]int{}
	for _, r := range results {
		switch {
		case r.body != "first" && r.body != "second":
			failed++
			if r.at.Sub(killed) > time.Second {
				t.Errorf("a request failed %v after the kill: %s", r.at.Sub(killed), r.body)
			}
		case r.at.Sub(killed) > time.Second:
			after[r.body]++
		}
	}
	t.Logf("%d requests under load, %d failed (at most %d were in flight); a second after the kill: %v", len(results), failed, workers, after)
	if failed > workers {
		t.Errorf("%d requests failed, more than the %d that can have been in flight", failed, workers)
	}
	if after["second"] != 0 || after["first"] == 0 {
		t.Errorf("a second after the kill: %v, want every answer from the first member", after)
	}
}
