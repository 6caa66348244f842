package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsHotPathAllocs: recording a request, a publish or a drop
// allocates nothing, whatever the status, once that status has been seen;
// and with metrics off the calls are free.
func TestMetricsHotPathAllocs(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.request(207, time.Millisecond) // first use of a status resolves its child
	for name, f := range map[string]func(){
		"request 200":     func() { m.request(200, 3*time.Millisecond) },
		"request 207":     func() { m.request(207, 3*time.Millisecond) },
		"request 502":     func() { m.request(502, 0) },
		"publish error":   func() { m.published(0, errTest) },
		"no receivers":    func() { m.published(0, nil) },
		"drop":            func() { m.drop(dropClientQueue) },
		"client gauge":    func() { m.clientConnected(1) },
		"metrics off":     func() { (*metrics)(nil).request(200, time.Millisecond) },
		"metrics off pub": func() { (*metrics)(nil).published(1, nil) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
}

var errTest = testError("test")

type testError string

func (e testError) Error() string { return string(e) }
