package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpLoad is one closed-loop HTTP load: concurrency connections, each
// sending its next request as soon as the previous answer is read, for
// duration.
type httpLoad struct {
	addr        string   // 127.0.0.1:PORT to connect to
	hosts       []string // Host headers, used in turn; none: addr
	method      string
	path        string
	body        []byte
	concurrency int
	duration    time.Duration
	wantLen     int64 // expected response body length
}

// loadResult is what one load measured. ops are requests, or WebSocket
// round trips.
type loadResult struct {
	ops      int64
	errors   int64
	firstErr string
	elapsed  time.Duration
	p50, p99 time.Duration
	// cpu is the CPU time the tunnel's processes used during the load,
	// by role; see [target].
	cpu map[string]time.Duration
}

// cpuPerOp is role's CPU time per operation, in µs, or NaN.
func (r *loadResult) cpuPerOp(role string) float64 {
	t, ok := r.cpu[role]
	if !ok || r.ops == 0 {
		return math.NaN()
	}
	return us(t) / float64(r.ops)
}

func (r *loadResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// httpLoader runs HTTP loads: wrk, or the Go generator.
type httpLoader interface {
	name() string
	run(ctx context.Context, l httpLoad) (*loadResult, error)
}

// requestTimeout bounds one request of any load; a slower one is an error.
const requestTimeout = 10 * time.Second

// goLoader is the harness's own load generator.
type goLoader struct{}

func (goLoader) name() string { return "Go load generator (closed loop, keep-alive)" }

func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (goLoader) run(ctx context.Context, l httpLoad) (*loadResult, error) {
	hc := newHTTPClient(l.concurrency)
	defer hc.CloseIdleConnections()
	hosts := l.hosts
	if len(hosts) == 0 {
		hosts = []string{l.addr}
	}
	url := "http://" + l.addr + l.path
	type worker struct {
		hist      histogram
		ops, errs int64
		firstErr  string
	}
	workers := make([]worker, l.concurrency)
	start := time.Now()
	deadline := start.Add(l.duration)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &workers[i]
			// Worker i starts at host i, so the hosts are spread
			// evenly at any moment.
			for n := i; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				t0 := time.Now()
				err := doRequest(ctx, hc, l.method, url, hosts[n%len(hosts)], l.body, l.wantLen, nil)
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					continue
				}
				w.hist.record(time.Since(t0))
				w.ops++
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &loadResult{elapsed: time.Since(start)}
	var all histogram
	for i := range workers {
		w := &workers[i]
		r.ops += w.ops
		r.errors += w.errs
		if r.firstErr == "" {
			r.firstErr = w.firstErr
		}
		all.merge(&w.hist)
	}
	r.p50, r.p99 = all.quantile(0.50), all.quantile(0.99)
	return r, nil
}

// doRequest sends one request and reads the whole answer. It fails unless
// the status is 200 and the body has wantLen bytes (and equals want, when
// want is not nil).
func doRequest(ctx context.Context, hc *http.Client, method, url, host string, body []byte, wantLen int64, want []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Host = host
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if want != nil {
		got, err := io.ReadAll(io.LimitReader(resp.Body, int64(len(want))+1))
		if err != nil {
			return fmt.Errorf("%s %s (Host %s): read body: %w", method, url, host, err)
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
			return fmt.Errorf("%s %s (Host %s): status %d, body %d bytes %q, want 200 and %d bytes",
				method, url, host, resp.StatusCode, len(got), clip(got, 80), len(want))
		}
		return nil
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s (Host %s): read body: %w", method, url, host, err)
	}
	if resp.StatusCode != http.StatusOK || n != wantLen {
		return fmt.Errorf("%s %s (Host %s): status %d with %d bytes, want 200 with %d", method, url, host, resp.StatusCode, n, wantLen)
	}
	return nil
}

func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// probe checks, before a load, that the path answers exactly want through
// every one of the first few hosts.
func probe(ctx context.Context, l httpLoad, want []byte) error {
	hc := newHTTPClient(1)
	defer hc.CloseIdleConnections()
	hosts := l.hosts
	if len(hosts) == 0 {
		hosts = []string{l.addr}
	}
	for _, h := range hosts[:min(len(hosts), 3)] {
		if err := doRequest(ctx, hc, l.method, "http://"+l.addr+l.path, h, l.body, int64(len(want)), want); err != nil {
			return err
		}
	}
	return nil
}
