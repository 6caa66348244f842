package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Across instances: what the harness reads from the proxies' --admin
// /metrics to show where a load went, and from the client's inspector to
// show that it captured.

// proxyMetrics returns the text of the proxy's admin /metrics.
func proxyMetrics(ctx context.Context, admin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return "", fmt.Errorf("GET %s/metrics: %w", admin, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s/metrics: %w", admin, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s/metrics: %s", admin, resp.Status)
	}
	return string(b), nil
}

// promSum adds up the samples of metric name in Prometheus's text format
// whose labels include every pair of match (nil: every sample). It reports
// whether any sample matched.
func promSum(text, name string, match map[string]string) (float64, bool, error) {
	var sum float64
	found := false
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels := map[string]string{}
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return 0, false, fmt.Errorf("metric line %q: no closing brace", line)
			}
			var err error
			if labels, err = parseLabels(rest[1:end]); err != nil {
				return 0, false, fmt.Errorf("metric line %q: %w", line, err)
			}
			rest = rest[end+1:]
		}
		matched := true
		for k, v := range match {
			if labels[k] != v {
				matched = false
				break
			}
		}
		if !matched {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false, fmt.Errorf("metric line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	return sum, found, nil
}

// parseLabels reads `a="x",b="y"` (values quoted, with \" and \\ escapes).
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return nil, fmt.Errorf("bad labels %q", s)
		}
		key := strings.TrimSpace(s[:eq])
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			val.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil, fmt.Errorf("bad labels %q: unterminated value", s)
		}
		out[key] = val.String()
		s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s[i+1:]), ","))
	}
	return out, nil
}

// connectedClients is keyhole_connected_clients on the proxy's /metrics.
func connectedClients(ctx context.Context, admin string) (float64, error) {
	text, err := proxyMetrics(ctx, admin)
	if err != nil {
		return 0, err
	}
	v, ok, err := promSum(text, "keyhole_connected_clients", nil)
	if err == nil && !ok {
		err = fmt.Errorf("%s/metrics: no keyhole_connected_clients", admin)
	}
	return v, err
}

// instanceCounts is what one instance's /metrics says at one moment.
type instanceCounts struct {
	ok, all  float64 // keyhole_requests_total: code 200, every code
	clients  float64 // keyhole_connected_clients
	pubErr   float64 // keyhole_bus_publish_errors_total
	dropped  float64 // keyhole_dropped_messages_total, every reason
	unrouted float64 // keyhole_bus_unrouted_messages_total (0 when absent)
}

func readCounts(ctx context.Context, admin string) (instanceCounts, error) {
	text, err := proxyMetrics(ctx, admin)
	if err != nil {
		return instanceCounts{}, err
	}
	var c instanceCounts
	for _, m := range []struct {
		name     string
		match    map[string]string
		v        *float64
		optional bool
	}{
		{"keyhole_requests_total", map[string]string{"code": "200"}, &c.ok, false},
		{"keyhole_requests_total", nil, &c.all, false},
		{"keyhole_connected_clients", nil, &c.clients, false},
		{"keyhole_bus_publish_errors_total", nil, &c.pubErr, true},
		{"keyhole_dropped_messages_total", nil, &c.dropped, true},
		{"keyhole_bus_unrouted_messages_total", nil, &c.unrouted, true},
	} {
		v, ok, err := promSum(text, m.name, m.match)
		if err != nil {
			return c, err
		}
		if !ok && !m.optional {
			return c, fmt.Errorf("%s/metrics: no %s", admin, m.name)
		}
		*m.v = v
	}
	return c, nil
}

// routeCheck reads the request counters of t's two instances around a load
// through the other one, to show that the load went through it and not
// straight to the holder.
type routeCheck struct {
	t              *tunnel
	holder, other  instanceCounts
	disabled       bool // no --admin: nothing to check
	err            error
	holderClients  float64
	otherClients   float64
	dHolder, dOthr float64 // requests answered during the load, by instance
}

func startRouteCheck(ctx context.Context, t *tunnel) *routeCheck {
	rc := &routeCheck{t: t}
	if t.other == nil || t.admin == "" || t.other.admin == "" {
		rc.disabled = true
		return rc
	}
	// The load before this one may have left requests to finish, and
	// count, on the holder.
	rc.holder, rc.err = settledCounts(ctx, t.admin, nil)
	if rc.err == nil {
		rc.other, rc.err = settledCounts(ctx, t.other.admin, nil)
	}
	return rc
}

// settledCounts reads an instance's counts until two reads countsSettle
// apart agree and done (nil: always) accepts them, or countsWait has
// passed: a request's status is counted once its handler returns, a moment
// after the caller has read the answer, and a request the caller gave up on
// may still be finishing.
func settledCounts(ctx context.Context, admin string, done func(instanceCounts) bool) (instanceCounts, error) {
	deadline := time.Now().Add(countsWait)
	last, err := readCounts(ctx, admin)
	for err == nil && time.Now().Before(deadline) {
		t := time.NewTimer(countsSettle)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, ctx.Err()
		case <-t.C:
		}
		var c instanceCounts
		if c, err = readCounts(ctx, admin); err != nil {
			break
		}
		if c == last && (done == nil || done(c)) {
			return c, nil
		}
		last = c
	}
	return last, err
}

// countsSettle and countsWait bound settledCounts.
const (
	countsSettle = 100 * time.Millisecond
	countsWait   = 3 * time.Second
)

// stop reads the counters again and returns a sentence on where the ops
// requests answered went, and whether that is wrong.
func (rc *routeCheck) stop(ctx context.Context, ops int64) (msg string, wrong bool) {
	if rc.disabled {
		return "", false
	}
	if rc.err != nil {
		return fmt.Sprintf("not checked: %v", rc.err), false
	}
	h1, err := settledCounts(ctx, rc.t.admin, nil)
	if err != nil {
		return fmt.Sprintf("not checked: %v", err), false
	}
	o1, err := settledCounts(ctx, rc.t.other.admin, func(c instanceCounts) bool { return c.ok-rc.other.ok >= float64(ops) })
	if err != nil {
		return fmt.Sprintf("not checked: %v", err), false
	}
	rc.dHolder, rc.dOthr = h1.all-rc.holder.all, o1.ok-rc.other.ok
	rc.holderClients, rc.otherClients = h1.clients, o1.clients
	wrong = rc.dHolder != 0 || rc.dOthr < float64(ops) || h1.clients != 1 || o1.clients != 0
	return fmt.Sprintf("the other instance answered %.0f requests with 200 (the load counted %d, besides its check and warm-up), the holder %.0f public requests; "+
		"keyhole_connected_clients %.0f on the holder, %.0f on the other", rc.dOthr, ops, rc.dHolder, h1.clients, o1.clients), wrong
}

// inspectorStatus is the part of the inspector's /api/status the harness
// checks.
type inspectorStatus struct {
	PublicURL string `json:"public_url"`
	Capture   struct {
		On        bool  `json:"on"`
		Used      int64 `json:"used"`
		Exchanges int   `json:"exchanges"`
	} `json:"capture"`
}

// inspectorTries is how many ports from the one it was given a client's
// inspector may be on: the command moves on to the next free one of the 9
// after it when its port is taken.
const inspectorTries = 10

// checkCapture asks the inspector of the client serving host, at addr or
// one of the ports after it, whether it captured what went through; it
// returns what it found, or why it is not right.
func checkCapture(ctx context.Context, addr, host string) (string, error) {
	ip, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", err
	}
	var first error
	for i := range inspectorTries {
		a := net.JoinHostPort(ip, strconv.Itoa(port+i))
		msg, err := captureAt(ctx, a, host)
		if err == nil {
			return msg, nil
		}
		if first == nil {
			first = err
		}
		if !errors.Is(err, errNotOurs) {
			break
		}
	}
	return "", first
}

// errNotOurs is an inspector, or no listener, at a port another client's
// inspector may have taken.
var errNotOurs = errors.New("not this client's inspector")

func captureAt(ctx context.Context, addr, host string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/status", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return "", fmt.Errorf("inspector %s: %w: %w", addr, errNotOurs, err)
	}
	defer resp.Body.Close()
	var st inspectorStatus
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("inspector %s: /api/status: %s", addr, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return "", fmt.Errorf("inspector %s: /api/status: %w", addr, err)
	}
	got, err := hostOf(st.PublicURL)
	switch {
	case err != nil || got != host:
		return "", fmt.Errorf("inspector %s belongs to %q, not to %s: %w", addr, st.PublicURL, host, errNotOurs)
	case !st.Capture.On || st.Capture.Exchanges == 0:
		return "", fmt.Errorf("inspector %s: capture on %v, %d exchanges kept", addr, st.Capture.On, st.Capture.Exchanges)
	}
	return fmt.Sprintf("%d exchanges kept in %.1f MB", st.Capture.Exchanges, float64(st.Capture.Used)/1e6), nil
}

// redisLogWatch counts the lines in which redis-server says it closed a
// client for its output buffer ("... scheduled to be closed ASAP for
// overcoming of output buffer limits."): the one sign of it that every
// Redis version gives.
type redisLogWatch struct {
	mu    sync.Mutex
	count int
	last  string
}

func (w *redisLogWatch) line(s string) {
	if !strings.Contains(s, "output buffer limits") {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.count++
	w.last = s
}

func (w *redisLogWatch) seen() (int, string) {
	if w == nil {
		return 0, ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count, w.last
}
