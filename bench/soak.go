package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// S10, the soak across instances: for --s10-duration, a mix of small and
// large requests through a proxy instance that does not hold the tunnel,
// every answer checked byte for byte, while the harness watches Redis for
// a subscriber it disconnects (issue 10: "no message lost under load").

// soakKind is one kind of request in the mix.
type soakKind struct {
	name    string
	workers int    // closed-loop workers, each with its own connection
	method  string // GET /rand, or POST /echo
	size    int64
}

// soakKinds is the mix: mostly small GETs, 400 KiB both ways, and a couple
// of multi-megabyte downloads in flight all the time.
func soakKinds(quick bool) []soakKind {
	big := int64(8 << 20)
	if quick {
		big = 2 << 20
	}
	return []soakKind{
		{"GET 1 KiB", 8, "GET", smallSize},
		{"GET 400 KiB", 3, "GET", largeSize},
		{"POST 400 KiB (echoed)", 3, "POST", largeSize},
		{fmt.Sprintf("GET %d MiB", big>>20), 2, "GET", big},
	}
}

// soakSampleEvery is the period of the CLIENT LIST samples taken during the
// soak.
const soakSampleEvery = 100 * time.Millisecond

// soakCounts is what one kind's requests came to.
type soakCounts struct {
	requests, ok, wrong, errs int64
	status                    map[int]int64 // answers other than 200, by status
	down, up                  int64         // payload bytes read and sent
	hist                      histogram
	examples                  []string // the first few failures
}

func (c *soakCounts) failed() int64 {
	n := c.wrong + c.errs
	for _, v := range c.status {
		n += v
	}
	return n
}

func (c *soakCounts) add(o *soakCounts) {
	c.requests += o.requests
	c.ok += o.ok
	c.wrong += o.wrong
	c.errs += o.errs
	c.down += o.down
	c.up += o.up
	if c.status == nil {
		c.status = map[int]int64{}
	}
	for k, v := range o.status {
		c.status[k] += v
	}
	c.hist.merge(&o.hist)
	for _, e := range o.examples {
		if len(c.examples) < 3 {
			c.examples = append(c.examples, e)
		}
	}
}

// clientEntry is one line of CLIENT LIST.
type clientEntry struct {
	id              int64
	addr            string
	flags           string
	sub, psub, ssub int64
	oll, omem       int64
	cmd             string
}

// subscriber reports whether the connection is in pub/sub mode.
func (e clientEntry) subscriber() bool {
	return e.sub > 0 || e.psub > 0 || e.ssub > 0 || strings.Contains(e.flags, "P")
}

// parseClientList reads CLIENT LIST's reply: one connection a line, as
// space-separated key=value fields.
func parseClientList(s string) ([]clientEntry, error) {
	var out []clientEntry
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var e clientEntry
		var errs []error
		num := func(v string) int64 {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				errs = append(errs, err)
			}
			return n
		}
		haveID := false
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "id":
				e.id, haveID = num(v), true
			case "addr":
				e.addr = v
			case "flags":
				e.flags = v
			case "sub":
				e.sub = num(v)
			case "psub":
				e.psub = num(v)
			case "ssub":
				e.ssub = num(v)
			case "oll":
				e.oll = num(v)
			case "omem":
				e.omem = num(v)
			case "cmd":
				e.cmd = v
			}
		}
		if !haveID {
			errs = append(errs, errors.New("no id"))
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("CLIENT LIST line %q: %w", line, errors.Join(errs...))
		}
		out = append(out, e)
	}
	return out, nil
}

// subscribers are the pub/sub connections of a CLIENT LIST, by id.
func subscribers(list []clientEntry) map[int64]clientEntry {
	out := map[int64]clientEntry{}
	for _, e := range list {
		if e.subscriber() {
			out[e.id] = e
		}
	}
	return out
}

// soakRedis is what Redis said before, during and after the soak.
type soakRedis struct {
	version string
	limit   string // client-output-buffer-limit's pubsub class
	// before and after are the subscriber connections; ours are the two
	// that the soak's proxies opened.
	before, after map[int64]clientEntry
	ours          []int64
	// gone are subscriber ids present before and missing later, with when
	// they were first missed ("after" for the final list).
	gone map[int64]string
	// peakOmem and peakOll are the largest output buffer of any
	// subscriber connection in the samples, and whose it was.
	peakOmem, peakOll int64
	peakID            int64
	samples           int
	sampleErr         string
	// INFO stats, before and after; obl is
	// client_output_buffer_limit_disconnections, absent before Redis 7.2
	// (haveOBL false).
	conns0, conns1 int64
	obl0, obl1     int64
	haveOBL        bool
	// logLines counts redis-server's log lines about a client closed for
	// its output buffer during the soak; lastLog is the last one.
	logLines int
	lastLog  string
}

// disconnected reports whether Redis was seen to drop a subscriber, and
// how.
func (r *soakRedis) disconnected() []string {
	var why []string
	for _, id := range slices.Sorted(maps.Keys(r.gone)) {
		why = append(why, fmt.Sprintf("subscriber connection id %d (%s) gone %s", id, r.before[id].addr, r.gone[id]))
	}
	if r.haveOBL && r.obl1 != r.obl0 {
		why = append(why, fmt.Sprintf("client_output_buffer_limit_disconnections rose from %d to %d", r.obl0, r.obl1))
	}
	if r.logLines > 0 {
		why = append(why, fmt.Sprintf("redis-server logged %d client(s) closed for their output buffer; last: %q", r.logLines, r.lastLog))
	}
	return why
}

// soakResult is S10's outcome.
type soakResult struct {
	duration time.Duration // from the first request to the last answer
	kinds    []soakKind
	counts   []*soakCounts // by kind
	redis    soakRedis
	// holderDelta and otherDelta are the instances' /metrics changes;
	// haveMetrics is false without --admin.
	holder0, holder1, other0, other1 instanceCounts
	haveMetrics                      bool
	problems                         []string // why the soak failed, if it did
}

func (s *soakResult) total() *soakCounts {
	t := &soakCounts{}
	for _, c := range s.counts {
		t.add(c)
	}
	return t
}

func (s *soakResult) ok() bool { return len(s.problems) == 0 }

// summary is the targets table's cell.
func (s *soakResult) summary() string {
	t := s.total()
	subs := "no subscriber disconnected"
	if len(s.redis.disconnected()) > 0 {
		subs = "a subscriber was disconnected"
	}
	return fmt.Sprintf("%d requests in %v, %d failed; %s", t.requests, s.duration.Round(100*time.Millisecond), t.failed(), subs)
}

// s10 runs the soak once, after the rounds, on fresh proxies on the
// tunnels' Redis: the holder with one client, and the other instance that
// the load goes to.
func (h *harness) s10(ctx context.Context) error {
	if h.redis == "" {
		h.rep.note("S10 not run: it needs the Redis bus (redis-server on PATH, --redis not false).")
		return nil
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(h.redis, "redis://"), "/0")
	node := newNodeClient(addr)
	defer node.Close()
	res := &soakResult{kinds: soakKinds(h.o.quick)}
	rd := &res.redis
	if info, err := node.Info(ctx, "server").Result(); err == nil {
		rd.version = parseInfo(info)["redis_version"]
	}
	if v, err := node.ConfigGet(ctx, "client-output-buffer-limit").Result(); err == nil {
		rd.limit = pubsubLimit(v["client-output-buffer-limit"])
	}
	list := func() (map[int64]clientEntry, error) {
		s, err := node.ClientList(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("CLIENT LIST: %w", err)
		}
		l, err := parseClientList(s)
		if err != nil {
			return nil, err
		}
		return subscribers(l), nil
	}
	earlier, err := list()
	if err != nil {
		return h.soakFailed(res, err)
	}

	var procs []*proc
	defer func() {
		for _, p := range slices.Backward(procs) {
			p.stop()
		}
		h.procs.forget(procs...)
	}()
	holder, err := h.startInstance(ctx, "S10 proxy (holder)", h.redis, "--max-body", "0")
	if err != nil {
		return err
	}
	procs = append(procs, holder.proxy)
	other, err := h.startInstance(ctx, "S10 proxy (other instance)", h.redis, "--max-body", "0")
	if err != nil {
		return err
	}
	procs = append(procs, other.proxy)
	c, host, _, err := h.startClientWith(ctx, "S10 client", holder.addr, true)
	if err != nil {
		return err
	}
	procs = append(procs, c)
	h.logf("S10: holder proxy on %s (pid %d) with client pid %d, other instance on %s (pid %d)", holder.addr, holder.proxy.pid, c.pid, other.addr, other.proxy.pid)
	if err := waitRouted(ctx, other, host); err != nil {
		return h.soakFailed(res, fmt.Errorf("the other instance: %w", err))
	}
	// The two new proxies' subscriptions: one connection each.
	var why string
	err = waitFor(ctx, 10*time.Second, "the S10 proxies' subscriptions in CLIENT LIST", []*proc{holder.proxy, other.proxy}, func() bool {
		now, err := list()
		if err != nil {
			why = err.Error()
			return false
		}
		rd.ours = rd.ours[:0]
		for id := range now {
			if _, ok := earlier[id]; !ok {
				rd.ours = append(rd.ours, id)
			}
		}
		rd.before = now
		why = fmt.Sprintf("%d new subscriber connections", len(rd.ours))
		return len(rd.ours) >= 2
	})
	if err != nil {
		return h.soakFailed(res, fmt.Errorf("%w: %s", err, why))
	}
	slices.Sort(rd.ours)

	if holder.admin != "" && other.admin != "" {
		res.haveMetrics = true
		if res.holder0, err = readCounts(ctx, holder.admin); err == nil {
			res.other0, err = readCounts(ctx, other.admin)
		}
		if err != nil {
			return h.soakFailed(res, err)
		}
		if res.holder0.clients != 1 || res.other0.clients != 0 {
			return h.soakFailed(res, fmt.Errorf("keyhole_connected_clients is %v on the holder and %v on the other instance, want 1 and 0", res.holder0.clients, res.other0.clients))
		}
	}
	stats := func() (map[string]string, error) {
		s, err := node.Info(ctx, "stats").Result()
		if err != nil {
			return nil, fmt.Errorf("INFO stats: %w", err)
		}
		return parseInfo(s), nil
	}
	st0, err := stats()
	if err != nil {
		return h.soakFailed(res, err)
	}
	rd.conns0, _ = strconv.ParseInt(st0["total_connections_received"], 10, 64)
	if v, ok := st0["client_output_buffer_limit_disconnections"]; ok {
		rd.haveOBL = true
		rd.obl0, _ = strconv.ParseInt(v, 10, 64)
	}
	log0, _ := h.redisLog.seen()

	// Watch the subscribers while the load runs.
	rd.gone = map[int64]string{}
	start := time.Now()
	quit, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(soakSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			now, err := list()
			if err != nil {
				if rd.sampleErr == "" {
					rd.sampleErr = err.Error()
				}
				continue
			}
			rd.samples++
			for id := range rd.before {
				if _, ok := now[id]; !ok {
					if _, seen := rd.gone[id]; !seen {
						rd.gone[id] = fmt.Sprintf("%.1f s into the soak", time.Since(start).Seconds())
					}
				}
			}
			for id, e := range now {
				if e.omem > rd.peakOmem {
					rd.peakOmem, rd.peakID = e.omem, id
				}
				rd.peakOll = max(rd.peakOll, e.oll)
			}
		}
	}()
	h.logf("S10: soak through the other instance for %v", h.o.s10Duration)
	tgt := target{mode: modeRedisOther, addr: other.addr, host: host}
	res.counts, err = h.soakLoad(ctx, tgt, res.kinds, h.o.s10Duration)
	res.duration = time.Since(start)
	close(quit)
	<-sampled
	if err != nil {
		return err // the run was interrupted
	}

	if rd.after, err = list(); err != nil {
		return h.soakFailed(res, err)
	}
	for id := range rd.before {
		if _, ok := rd.after[id]; !ok {
			if _, seen := rd.gone[id]; !seen {
				rd.gone[id] = "after the soak"
			}
		}
	}
	st1, err := stats()
	if err != nil {
		return h.soakFailed(res, err)
	}
	rd.conns1, _ = strconv.ParseInt(st1["total_connections_received"], 10, 64)
	if rd.haveOBL {
		rd.obl1, _ = strconv.ParseInt(st1["client_output_buffer_limit_disconnections"], 10, 64)
	}
	log1, last := h.redisLog.seen()
	rd.logLines, rd.lastLog = log1-log0, last
	tot := res.total()
	if res.haveMetrics {
		if res.holder1, err = settledCounts(ctx, holder.admin, nil); err == nil {
			res.other1, err = settledCounts(ctx, other.admin, func(c instanceCounts) bool { return c.ok-res.other0.ok >= float64(tot.ok) })
		}
		if err != nil {
			return h.soakFailed(res, err)
		}
	}

	// Judge.
	if n := tot.failed(); n > 0 {
		res.problems = append(res.problems, fmt.Sprintf("%d of %d responses were not exact (first: %s)", n, tot.requests, strings.Join(tot.examples, "; ")))
	}
	for i, k := range res.kinds {
		if res.counts[i].requests == 0 {
			res.problems = append(res.problems, fmt.Sprintf("no %s request completed", k.name))
		}
	}
	res.problems = append(res.problems, rd.disconnected()...)
	if rd.samples == 0 {
		res.problems = append(res.problems, "CLIENT LIST was never sampled during the soak: "+rd.sampleErr)
	}
	if res.haveMetrics {
		if d := res.holder1.all - res.holder0.all; d != 0 {
			res.problems = append(res.problems, fmt.Sprintf("the holder answered %.0f public requests itself: the load did not all go through the other instance", d))
		}
		if d := res.other1.ok - res.other0.ok; d < float64(tot.ok) {
			res.problems = append(res.problems, fmt.Sprintf("the other instance counted %.0f answers with 200, fewer than the %d the soak read", d, tot.ok))
		}
		if res.holder1.clients != 1 {
			res.problems = append(res.problems, fmt.Sprintf("the holder has %.0f clients connected after the soak, want 1", res.holder1.clients))
		}
	}
	if c.exited() || holder.proxy.exited() || other.proxy.exited() {
		res.problems = append(res.problems, firstExited(c, holder.proxy, other.proxy).exitError().Error())
	}
	h.rep.soak = res
	for _, p := range res.problems {
		h.rep.fail("S10: %s", p)
	}
	h.logf("S10: %s", res.summary())
	return nil
}

// soakFailed records a soak that could not run as a checked failure; only
// a canceled run is an error.
func (h *harness) soakFailed(res *soakResult, err error) error {
	if ctx := err; errors.Is(ctx, context.Canceled) || errors.Is(ctx, context.DeadlineExceeded) {
		return err
	}
	res.problems = append(res.problems, err.Error())
	h.rep.soak = res
	h.rep.fail("S10: %v", err)
	h.logf("S10: %v", err)
	return nil
}

// pubsubLimit picks the pubsub class out of client-output-buffer-limit's
// value ("normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608
// 60"), as "hard 33554432 B, soft 8388608 B for 60 s".
func pubsubLimit(v string) string {
	f := strings.Fields(v)
	for i := 0; i+3 < len(f); i += 4 {
		if f[i] == "pubsub" {
			return fmt.Sprintf("pubsub class: hard limit %s B, soft %s B for %s s", f[i+1], f[i+2], f[i+3])
		}
	}
	return v
}

// soakLoad runs the kinds' workers against t until the duration has passed
// and every request in flight has its answer (each bounded by its
// timeout). The error is only for a canceled run.
func (h *harness) soakLoad(ctx context.Context, t target, kinds []soakKind, d time.Duration) ([]*soakCounts, error) {
	var seedBase [8]byte
	rand.Read(seedBase[:])
	var seq atomic.Uint64
	seq.Store(binary.LittleEndian.Uint64(seedBase[:]))
	deadline := time.Now().Add(d)
	out := make([]*soakCounts, len(kinds))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, k := range kinds {
		out[i] = &soakCounts{status: map[int]int64{}}
		for range k.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &soakCounts{status: map[int]int64{}}
				soakWorker(ctx, t, k, deadline, &seq, c)
				mu.Lock()
				out[i].add(c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return out, ctx.Err()
}

// soakWorker sends k's requests one after the other on one connection
// until the deadline, each with a body of its own.
func soakWorker(ctx context.Context, t target, k soakKind, deadline time.Time, seq *atomic.Uint64, c *soakCounts) {
	hc := newBulkClient()
	defer hc.CloseIdleConnections()
	timeout := requestTimeout
	if k.size > largeSize {
		timeout = bulkTimeout(k.size)
	}
	var body []byte
	if k.method == "POST" {
		body = make([]byte, k.size)
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		seed := seq.Add(1)
		t0 := time.Now()
		status, n, err := soakRequest(ctx, hc, t, k, seed, body, timeout)
		if ctx.Err() != nil {
			return // the run was interrupted: not a failure of the tunnel
		}
		c.requests++
		c.down += n
		var failure string
		switch {
		case errors.Is(err, errWrongBody):
			c.wrong++
			failure = err.Error()
		case err != nil:
			c.errs++
			failure = err.Error()
		case status != http.StatusOK:
			c.status[status]++
			failure = fmt.Sprintf("%s seed %d: status %d", k.name, seed, status)
		default:
			c.ok++
			if body != nil {
				c.up += int64(len(body))
			}
			c.hist.record(time.Since(t0))
		}
		if failure != "" && len(c.examples) < 3 {
			c.examples = append(c.examples, failure)
		}
	}
}

// errWrongBody marks an answer whose body is not the one expected.
var errWrongBody = errors.New("wrong body")

// soakRequest sends one request of kind k with seed and checks its answer
// against randBody(seed): for a GET, what the origin made; for a POST, the
// body sent, echoed. It returns the status and the body bytes read.
func soakRequest(ctx context.Context, hc *http.Client, t target, k soakKind, seed uint64, body []byte, timeout time.Duration) (int, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var req *http.Request
	var err error
	if k.method == "POST" {
		randBody(seed).Read(body)
		req, err = newRequest(ctx, "POST", t, "/echo", bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
	} else {
		req, err = newRequest(ctx, "GET", t, fmt.Sprintf("/rand?size=%d&seed=%d", k.size, seed), nil)
	}
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%s seed %d: %w", k.name, seed, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, n, nil
	}
	rc := newRandChecker(seed)
	n, err := io.CopyBuffer(rc, resp.Body, make([]byte, bulkChunk))
	switch {
	case errors.Is(err, errWrongBody):
		return resp.StatusCode, n, fmt.Errorf("%s seed %d: %w", k.name, seed, err)
	case err != nil:
		return resp.StatusCode, n, fmt.Errorf("%s seed %d: after %d of %d bytes: %w", k.name, seed, n, k.size, err)
	case n != k.size:
		return resp.StatusCode, n, fmt.Errorf("%w: %s seed %d: %d bytes, want %d", errWrongBody, k.name, seed, n, k.size)
	}
	return resp.StatusCode, n, nil
}

// markdown renders S10's tables.
func (s *soakResult) markdown(b *strings.Builder) {
	b.WriteString("| requests | count | exact | non-200 | wrong body | failed otherwise | MB down | MB up | p50 | p99 |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	row := func(name string, c *soakCounts) {
		var non200 []string
		for _, code := range slices.Sorted(maps.Keys(c.status)) {
			non200 = append(non200, fmt.Sprintf("%d× %d", c.status[code], code))
		}
		n2 := "0"
		if len(non200) > 0 {
			n2 = strings.Join(non200, ", ")
		}
		lat := func(q float64) string {
			if c.ok == 0 {
				return "–"
			}
			return c.hist.quantile(q).Round(10 * time.Microsecond).String()
		}
		fmt.Fprintf(b, "| %s | %d | %d | %s | %d | %d | %s | %s | %s | %s |\n", name, c.requests, c.ok, n2, c.wrong, c.errs,
			num(float64(c.down)/1e6), num(float64(c.up)/1e6), lat(0.5), lat(0.99))
	}
	for i, k := range s.kinds {
		if i < len(s.counts) {
			row(fmt.Sprintf("%s (%d workers)", k.name, k.workers), s.counts[i])
		}
	}
	if len(s.counts) > 0 {
		row("all", s.total())
	}
	rd := &s.redis
	fmt.Fprintf(b, "\nRedis %s, %s:\n\n", orUnknown(rd.version), orUnknown(rd.limit))
	b.WriteString("| check | before | after | observed |\n|---|---|---|---|\n")
	ids := func(m map[int64]clientEntry) string {
		if m == nil {
			return "–"
		}
		return fmt.Sprintf("%d: ids %s", len(m), joinInts(slices.Sorted(maps.Keys(m))))
	}
	subs := "none disconnected"
	if len(rd.gone) > 0 {
		var gone []string
		for _, id := range slices.Sorted(maps.Keys(rd.gone)) {
			gone = append(gone, fmt.Sprintf("id %d gone %s", id, rd.gone[id]))
		}
		subs = "**" + strings.Join(gone, "; ") + "**"
	}
	fmt.Fprintf(b, "| subscriber connections (CLIENT LIST: sub, psub or ssub > 0); the soak's two proxies: ids %s | %s | %s | %s |\n", joinInts(rd.ours), ids(rd.before), ids(rd.after), subs)
	fmt.Fprintf(b, "| largest subscriber output buffer in %d samples, every %v | | | omem %s (id %d), oll %d |\n", rd.samples, soakSampleEvery, bytesText(rd.peakOmem), rd.peakID, rd.peakOll)
	if rd.haveOBL {
		fmt.Fprintf(b, "| INFO stats client_output_buffer_limit_disconnections | %d | %d | %+d |\n", rd.obl0, rd.obl1, rd.obl1-rd.obl0)
	} else {
		b.WriteString("| INFO stats client_output_buffer_limit_disconnections | – | – | not in this Redis's INFO (Redis 7.2 and later have it); the log line below and the ids above stand in |\n")
	}
	fmt.Fprintf(b, "| redis-server log lines \"closed ... for overcoming of output buffer limits\" | | | %d |\n", rd.logLines)
	fmt.Fprintf(b, "| INFO stats total_connections_received | %d | %d | %+d (new connections: pools growing under load, or reconnects) |\n", rd.conns0, rd.conns1, rd.conns1-rd.conns0)
	if s.haveMetrics {
		b.WriteString("\nThe two proxies' /metrics, change over the soak:\n\n| instance | requests answered (200) | all codes | clients connected after | bus publish errors | dropped messages | unrouted messages |\n|---|--:|--:|--:|--:|--:|--:|\n")
		for _, in := range []struct {
			name   string
			c0, c1 instanceCounts
		}{{"holder", s.holder0, s.holder1}, {"other instance", s.other0, s.other1}} {
			fmt.Fprintf(b, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", in.name, in.c1.ok-in.c0.ok, in.c1.all-in.c0.all, in.c1.clients,
				in.c1.pubErr-in.c0.pubErr, in.c1.dropped-in.c0.dropped, in.c1.unrouted-in.c0.unrouted)
		}
	}
	if s.ok() {
		b.WriteString("\nEvery response was exact, and no subscriber was disconnected: every subscriber connection seen before the soak was in every sample and after it, with the same id, ")
		if rd.haveOBL {
			b.WriteString("client_output_buffer_limit_disconnections did not move, ")
		}
		b.WriteString("and redis-server logged no client closed for its output buffer.\n")
	} else {
		fmt.Fprintf(b, "\n**S10 failed:** %s.\n", strings.Join(s.problems, "; "))
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func joinInts(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ", ")
}

// bytesText renders a byte count for the report: 0 B, 20 KiB, 1.5 MiB.
func bytesText(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return num(float64(n)/(1<<10)) + " KiB"
	default:
		return num(float64(n)/(1<<20)) + " MiB"
	}
}
