package client_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// MaxConcurrent requests run at once; one more is answered 503 at once,
// without reaching the handler, and the held ones still complete.
func TestMaxConcurrentEdge(t *testing.T) {
	const limit = 2
	env := tunneltest.StartProxy(t, proxy.Config{Timeout: 20 * time.Second})
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.Write([]byte("done"))
	})
	tun := env.Connect(&client.Client{Handler: h, MaxConcurrent: limit})

	results := make(chan int, limit)
	for range limit {
		go func() {
			resp, err := env.HTTP.Get(tun.URL + "/held")
			if err != nil {
				results <- 0
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("request did not reach the handler")
		}
	}
	start := time.Now()
	if status, _ := env.Get(t, tun.URL+"/one-more"); status != http.StatusServiceUnavailable {
		t.Fatalf("request %d: status %d, want 503", limit+1, status)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("503 took %v", took)
	}
	select {
	case <-entered:
		t.Fatal("the refused request reached the handler")
	default:
	}
	close(release)
	for range limit {
		if status := <-results; status != 200 {
			t.Fatalf("held request: %d", status)
		}
	}
}
