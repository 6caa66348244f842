package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Concurrency of the scenarios, as issue 4 sets them.
const (
	s1HighConc = 64
	s2Conc     = 16
	s3Streams  = 64
	s5Conc     = 64
)

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func (h *harness) httpLoadFor(t target, method, path string, body []byte, conc int, wantLen int) httpLoad {
	l := httpLoad{addr: t.addr, method: method, path: path, body: body, concurrency: conc, duration: h.o.duration, wantLen: int64(wantLen)}
	if t.host != "" {
		l.hosts = []string{t.host}
	}
	return l
}

// measureHTTP checks that the load's path answers want, warms up, and
// measures. A failed measurement becomes a note and a nil result; the
// error is only for a canceled run.
func (h *harness) measureHTTP(ctx context.Context, label string, l httpLoad, want []byte, cpu map[string][]*proc) (*loadResult, error) {
	fail := func(err error) (*loadResult, error) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		h.rep.note("%s: not measured: %v", label, err)
		h.logf("%s: not measured: %v", label, err)
		return nil, nil
	}
	if err := probe(ctx, l, want); err != nil {
		return fail(fmt.Errorf("check request: %w", err))
	}
	if h.o.warmup > 0 {
		w := l
		w.duration = h.o.warmup
		if _, err := (goLoader{}).run(ctx, w); err != nil {
			return fail(err)
		}
	}
	m := startCPU(cpu)
	res, err := h.http.run(ctx, l)
	if err != nil {
		return fail(err)
	}
	res.cpu = m.stop()
	return h.checked(label, res, "req/s")
}

// checked logs a result and notes its errors.
func (h *harness) checked(label string, res *loadResult, unit string) (*loadResult, error) {
	h.logf("%s: %.0f %s, p50 %v, p99 %v, %d errors", label, res.rate(), unit, res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond), res.errors)
	if res.errors > 0 {
		h.rep.note("%s: %d failed (of %d); first: %s", label, res.errors, res.ops+res.errors, res.firstErr)
	}
	if res.ops == 0 {
		h.rep.note("%s: not measured: nothing succeeded", label)
		return nil, nil
	}
	return res, nil
}

// recordCPU sets the "<what> <role> CPU" figures: CPU time per operation
// of the tunnel's processes, the figure a performance pass should bring
// down, and of the origin for scale. Direct runs have only the origin.
func (h *harness) recordCPU(sc, what, per string, mode string, round int, res *loadResult, roles ...string) {
	if len(roles) == 0 {
		roles = []string{"proxy", "client"}
	}
	for _, role := range roles {
		if mode == modeDirect && role != "origin" {
			continue
		}
		f := h.rep.fig(sc, fmt.Sprintf("%s %s CPU", what, role), "µs per "+per)
		f.checked = false // whole clock ticks: a short run may round to 0
		f.vsFrp = true
		v := math.NaN()
		if res != nil {
			v = res.cpuPerOp(role)
		}
		h.rep.set(f, mode, round, v)
	}
}

// record sets f for mode and round from res, or NaN when res is nil.
func (h *harness) record(f *figure, mode string, round int, res *loadResult, value func(*loadResult) float64) {
	v := math.NaN()
	if res != nil {
		v = value(res)
	}
	h.rep.set(f, mode, round, v)
}

func (h *harness) label(sc, what, mode string, round int) string {
	return fmt.Sprintf("%s %s, %s, round %d/%d", sc, what, modeLabel[mode], round+1, h.o.rounds)
}

func rate(r *loadResult) float64 { return r.rate() }
func p50(r *loadResult) float64  { return us(r.p50) }
func p99(r *loadResult) float64  { return us(r.p99) }

// s1 is the small GET: latency at concurrency 1, throughput at 64.
func (h *harness) s1(ctx context.Context, round int) error {
	r := h.rep
	lat50, lat99 := r.fig("S1", "c=1 p50", "µs"), r.fig("S1", "c=1 p99", "µs")
	added := r.fig("S1", "c=1 added p50", "µs")
	tput := r.fig("S1", "c=64 throughput", "req/s")
	hi50, hi99 := r.fig("S1", "c=64 p50", "µs"), r.fig("S1", "c=64 p99", "µs")
	for _, f := range []*figure{lat50, lat99, tput, hi50, hi99} {
		f.vsDirect, f.vsFrp = true, true
	}
	added.vsFrp = true
	added.checked = false // may come out negative on a noisy machine
	for _, t := range h.targets() {
		res, err := h.measureHTTP(ctx, h.label("S1", "c=1", t.mode, round), h.httpLoadFor(t, "GET", "/small", nil, 1, smallSize), smallBody, t.cpu)
		if err != nil {
			return err
		}
		h.record(lat50, t.mode, round, res, p50)
		h.record(lat99, t.mode, round, res, p99)
	}
	for _, t := range h.targets()[1:] {
		r.set(added, t.mode, round, lat50.get(t.mode, round)-lat50.get(modeDirect, round))
	}
	for _, t := range h.captureTargets() {
		label := h.label("S1", "c=64", t.mode, round)
		rc := h.startRoute(ctx, t)
		res, err := h.measureHTTP(ctx, label, h.httpLoadFor(t, "GET", "/small", nil, s1HighConc, smallSize), smallBody, t.cpu)
		if err != nil {
			return err
		}
		h.endRoute(ctx, label, rc, res)
		h.record(tput, t.mode, round, res, rate)
		h.record(hi50, t.mode, round, res, p50)
		h.record(hi99, t.mode, round, res, p99)
		h.recordCPU("S1", "c=64", "request", t.mode, round, res, "proxy", "client", "origin")
		for _, tn := range h.tunnels {
			if tn.mode == t.mode {
				h.checkInspector(ctx, label, tn)
			}
		}
	}
	return nil
}

// startRoute starts a routing check around a load to t when t goes
// through the other instance of the Redis bus, else returns nil.
func (h *harness) startRoute(ctx context.Context, t target) *routeCheck {
	if t.mode != modeRedisOther {
		return nil
	}
	for _, tn := range h.tunnels {
		if tn.other != nil && tn.other.addr == t.addr {
			return startRouteCheck(ctx, tn)
		}
	}
	return nil
}

// endRoute records where the load went; a load that did not go through the
// other instance is a checked failure, as its figures would be wrong.
func (h *harness) endRoute(ctx context.Context, label string, rc *routeCheck, res *loadResult) {
	if rc == nil || res == nil {
		return
	}
	msg, wrong := rc.stop(ctx, res.ops)
	if msg == "" {
		return
	}
	h.rep.routes = append(h.rep.routes, label+": "+msg)
	if wrong {
		h.rep.fail("%s: the load did not go through the other instance alone: %s", label, msg)
	}
}

// checkInspector checks, after a load, that t's client captured it: its
// inspector is t's and keeps exchanges.
func (h *harness) checkInspector(ctx context.Context, label string, t *tunnel) {
	if t.inspect == "" {
		return
	}
	msg, err := checkCapture(ctx, t.inspect, t.host)
	if err != nil {
		h.rep.fail("%s: the client's inspector did not capture: %v", label, err)
		return
	}
	h.logf("%s: inspector %s: %s", label, t.inspect, msg)
}

// s2 moves 400 KiB bodies each way. MB/s counts payload bytes (10^6).
func (h *harness) s2(ctx context.Context, round int) error {
	r := h.rep
	get, post := r.fig("S2", "GET 400 KiB", "MB/s"), r.fig("S2", "POST 400 KiB", "MB/s")
	for _, f := range []*figure{get, post} {
		f.vsDirect, f.vsFrp = true, true
	}
	mbps := func(res *loadResult) float64 { return res.rate() * largeSize / 1e6 }
	for _, t := range h.captureTargets() {
		label := h.label("S2", "GET", t.mode, round)
		rc := h.startRoute(ctx, t)
		res, err := h.measureHTTP(ctx, label, h.httpLoadFor(t, "GET", "/large", nil, s2Conc, largeSize), largeBody, t.cpu)
		if err != nil {
			return err
		}
		h.endRoute(ctx, label, rc, res)
		h.record(get, t.mode, round, res, mbps)
		h.recordCPU("S2", "GET", "request", t.mode, round, res)
	}
	want := []byte(strconv.Itoa(largeSize))
	for _, t := range h.targets() {
		res, err := h.measureHTTP(ctx, h.label("S2", "POST", t.mode, round), h.httpLoadFor(t, "POST", "/upload", largeBody, s2Conc, len(want)), want, t.cpu)
		if err != nil {
			return err
		}
		h.record(post, t.mode, round, res, mbps)
		h.recordCPU("S2", "POST", "request", t.mode, round, res)
	}
	return nil
}

// s3 is the WebSocket echo.
func (h *harness) s3(ctx context.Context, round int) error {
	r := h.rep
	tput := r.fig("S3", "throughput", "messages/s")
	rt50, rt99 := r.fig("S3", "round trip p50", "µs"), r.fig("S3", "round trip p99", "µs")
	for _, f := range []*figure{tput, rt50, rt99} {
		f.vsDirect, f.vsFrp = true, true
	}
	for _, t := range h.targets() {
		label := h.label("S3", "echo", t.mode, round)
		l := wsLoad{url: "ws://" + t.addr + "/ws", host: t.host, streams: s3Streams, size: wsSize, duration: h.o.duration}
		var res *loadResult
		var err error
		if h.o.warmup > 0 {
			w := l
			w.duration = h.o.warmup
			_, err = w.run(ctx)
		}
		if err == nil {
			m := startCPU(t.cpu)
			res, err = l.run(ctx)
			if err == nil {
				res.cpu = m.stop()
			}
		}
		if err == nil {
			res, err = h.checked(label, res, "messages/s")
		} else if ctx.Err() == nil {
			h.rep.note("%s: not measured: %v", label, err)
			h.logf("%s: not measured: %v", label, err)
			err = nil
		}
		if err != nil {
			return err
		}
		h.record(tput, t.mode, round, res, rate)
		h.record(rt50, t.mode, round, res, p50)
		h.record(rt99, t.mode, round, res, p99)
		h.recordCPU("S3", "echo", "message", t.mode, round, res)
	}
	return nil
}

// s5 spreads the concurrency-64 small GET over many clients on each
// tunnel's proxy, and compares it with S1's single client.
func (h *harness) s5(ctx context.Context, round int) error {
	r := h.rep
	n := h.o.s5Clients
	tput := r.fig("S5", "throughput", "req/s")
	if h.o.scenarios["S1"] {
		tput.ref, tput.refLabel = r.fig("S1", "c=64 throughput", "req/s"), "S1 c=64 throughput"
	}
	lat50, lat99 := r.fig("S5", "p50", "µs"), r.fig("S5", "p99", "µs")
	for _, t := range h.tunnels {
		results, err := h.s5Once(ctx, round, t, n)
		if err != nil {
			return err
		}
		for _, rs := range results {
			h.record(tput, rs.mode, round, rs.res, rate)
			h.record(lat50, rs.mode, round, rs.res, p50)
			h.record(lat99, rs.mode, round, rs.res, p99)
			h.recordCPU("S5", "spread", "request", rs.mode, round, rs.res)
		}
	}
	return nil
}

// modeResult is one load's result in one mode; res is nil when it was not
// measured.
type modeResult struct {
	mode string
	res  *loadResult
}

// s5Once registers n clients on t's proxy and loads them through it and,
// on the Redis bus, through the other instance too.
func (h *harness) s5Once(ctx context.Context, round int, t *tunnel, n int) ([]modeResult, error) {
	modes := []string{t.mode}
	if t.other != nil {
		modes = append(modes, modeRedisOther)
	}
	out := make([]modeResult, len(modes))
	for i, m := range modes {
		out[i].mode = m
	}
	f, err := h.startFleet("S5", t.addr, n, (n+999)/1000, h.clientInspects())
	if err != nil {
		return nil, err
	}
	defer f.stop(h.procs)
	if err := f.wait(ctx, n, 30*time.Second+time.Duration(n)*20*time.Millisecond); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for _, m := range modes {
			h.rep.note("%s: not measured: %v", h.label("S5", fmt.Sprintf("%d clients", n), m, round), err)
		}
		return out, nil
	}
	f.mu.Lock()
	hosts := append([]string(nil), f.hosts...)
	f.mu.Unlock()
	for i, m := range modes {
		label := h.label("S5", fmt.Sprintf("%d clients", n), m, round)
		addr, proxies := t.addr, []*proc{t.proxy}
		if m == modeRedisOther {
			addr, proxies = t.other.addr, []*proc{t.other.proxy, t.proxy}
		}
		l := httpLoad{addr: addr, hosts: hosts, method: "GET", path: "/small", concurrency: s5Conc, duration: h.o.duration, wantLen: smallSize}
		// The helper runs every client in one process: its CPU time is the
		// clients' together.
		res, err := h.measureHTTP(ctx, label, l, smallBody, map[string][]*proc{"proxy": proxies, "client": f.procs})
		if err != nil {
			return nil, err
		}
		out[i].res = res
	}
	return out, nil
}

// s4Helpers is how many helper processes S4 spreads n clients over: a
// few, so that no helper is the bottleneck and none holds too many.
func s4Helpers(n int) int { return max(1, min(4, (n+499)/500)) }

// s4Memory is a generous estimate of what one idle client costs the proxy
// and its helper together; S4 is skipped when the machine has less free.
const s4Memory = 256 << 10

// s4 registers many idle clients on a fresh proxy per bus.
func (h *harness) s4(ctx context.Context, round int) error {
	if avail, ok := memAvailable(); ok && avail < int64(h.o.s4Clients)*s4Memory+512<<20 {
		h.rep.note("S4 round %d skipped: %d clients need about %d MiB, and only %d MiB is available.",
			round+1, h.o.s4Clients, int64(h.o.s4Clients)*s4Memory>>20, avail>>20)
		return nil
	}
	for _, t := range h.tunnels {
		label := h.label("S4", fmt.Sprintf("%d clients", h.o.s4Clients), t.mode, round)
		if err := h.s4Once(ctx, label, round, t); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.rep.note("%s: %v", label, err)
			h.logf("%s: %v", label, err)
		}
		err := h.idleLink(ctx, round, t)
		if errors.Is(err, errLinkDropped) {
			h.logf("S4 idle link, %s, round %d: %v; once more", modeLabel[t.mode], round+1, err)
			err = h.idleLink(ctx, round, t)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.rep.note("S4 idle link, %s, round %d: %v", modeLabel[t.mode], round+1, err)
			h.logf("S4 idle link, %s, round %d: %v", modeLabel[t.mode], round+1, err)
		}
	}
	return nil
}

func (h *harness) s4Once(ctx context.Context, label string, round int, t *tunnel) error {
	r := h.rep
	n := h.o.s4Clients
	registered := r.fig("S4", "clients registered", "")
	regRate := r.fig("S4", "registrations", "/s")
	before, after := r.fig("S4", "proxy RSS before", "MiB"), r.fig("S4", "proxy RSS after", "MiB")
	perClient := r.fig("S4", "proxy RSS per client", "KiB")
	reach := r.fig("S4", "sample reachable", "%")
	clientRSS := r.fig("S4", "client process RSS", "MiB")
	goroutines := r.fig("S4", "proxy goroutines per client", "")
	for _, f := range []*figure{registered, regRate, before, after, perClient, goroutines, reach, clientRSS} {
		r.set(f, t.mode, round, math.NaN())
	}

	// The admin listener's /metrics counts the proxy's goroutines.
	var extra []string
	admin := ""
	if hasFlag(h.proxyHelp, "admin") {
		port, err := freePort()
		if err != nil {
			return err
		}
		admin = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		extra = []string{"--admin", admin}
	}
	p, addr, err := h.startProxy(ctx, "S4 proxy ("+t.mode+")", t.busURL, extra...)
	if err != nil {
		return err
	}
	defer func() {
		p.stop()
		h.procs.forget(p)
	}()
	// The goroutine count is one figure among many: failing to read it
	// leaves that figure out, not the scenario.
	goroutinesOf := func(when string, wait bool) (float64, bool) {
		v, settled, err := proxyGoroutines(ctx, admin, p, wait)
		switch {
		case err != nil:
			r.note("%s: goroutines %s not read: %v", label, when, err)
			return 0, false
		case !settled:
			r.note("%s: the goroutine count %s did not hold still for 5 s; its last value is used", label, when)
		}
		return v, true
	}
	var g0 float64
	if admin != "" {
		var ok bool
		if g0, ok = goroutinesOf("before the clients", true); !ok {
			admin = ""
		}
	}
	rss0, err := p.rss()
	if err != nil {
		return err
	}
	fl, err := h.startFleet("S4", addr, n, s4Helpers(n), false)
	if err != nil {
		return err
	}
	defer fl.stop(h.procs)
	h.logf("%s: registering", label)
	if err := fl.wait(ctx, n, 30*time.Second+time.Duration(n)*20*time.Millisecond); err != nil {
		return err
	}
	rss1, err := p.rss()
	if err != nil {
		return err
	}
	fl.mu.Lock()
	hosts := append([]string(nil), fl.hosts...)
	took := fl.last.Sub(fl.first)
	fl.mu.Unlock()
	r.set(registered, t.mode, round, float64(len(hosts)))
	if took > 0 {
		r.set(regRate, t.mode, round, float64(n)/took.Seconds())
	}
	r.set(before, t.mode, round, float64(rss0)/(1<<20))
	r.set(after, t.mode, round, float64(rss1)/(1<<20))
	r.set(perClient, t.mode, round, float64(rss1-rss0)/float64(n)/1024)
	if admin != "" {
		if g1, ok := goroutinesOf("after the registrations", false); ok {
			r.set(goroutines, t.mode, round, (g1-g0)/float64(n))
		}
	}
	h.logf("%s: %d registered in %v, proxy RSS %.1f → %.1f MiB", label, len(hosts), took.Round(time.Millisecond), float64(rss0)/(1<<20), float64(rss1)/(1<<20))

	if h.o.s4Idle > 0 {
		if err := h.s4IdleCPU(ctx, label, round, t, p, n); err != nil {
			return err
		}
	}

	sample := hosts
	if h.o.s4Sample > 0 && h.o.s4Sample < len(hosts) {
		rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
		sample = hosts[:h.o.s4Sample]
	}
	ok, firstErr := checkHosts(ctx, addr, sample)
	r.set(reach, t.mode, round, 100*float64(ok)/float64(len(sample)))
	if ok < len(sample) {
		r.note("%s: %d of %d sampled hostnames did not answer; first: %v", label, len(sample)-ok, len(sample), firstErr)
	}

	c, _, err := h.startClient(ctx, "S4 ordinary client ("+t.mode+")", addr)
	if err != nil {
		return fmt.Errorf("ordinary client: %w", err)
	}
	crss, err := c.rss()
	c.stop()
	h.procs.forget(c)
	if err != nil {
		return err
	}
	r.set(clientRSS, t.mode, round, float64(crss)/(1<<20))
	return nil
}

// checkHosts sends GET /small through the proxy to each host, 8 at a time,
// and counts the exact answers.
func checkHosts(ctx context.Context, addr string, hosts []string) (int, error) {
	const workers = 8
	hc := newHTTPClient(workers)
	defer hc.CloseIdleConnections()
	var (
		mu       sync.Mutex
		ok       int
		firstErr error
		next     int
		wg       sync.WaitGroup
	)
	for range min(workers, len(hosts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= len(hosts) || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				host := hosts[next]
				next++
				mu.Unlock()
				err := doRequest(ctx, hc, "GET", "http://"+addr+"/small", host, nil, smallSize, smallBody)
				mu.Lock()
				if err == nil {
					ok++
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok, firstErr
}

// proxyGoroutines reads go_goroutines from the proxy's admin /metrics,
// once it holds still: the same count twice, 100 ms apart (goroutines of
// registrations just finished are still ending). If it has not held still
// within 5 s, it returns the last count with settled false. A proxy that
// has only just started may not listen on its admin address yet; wait
// says to wait for it.
func proxyGoroutines(ctx context.Context, admin string, p *proc, wait bool) (float64, bool, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	read := func() (float64, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/metrics", nil)
		if err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		return promValue(string(b), "go_goroutines")
	}
	const timeout = 5 * time.Second
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := -1.0
	for {
		v, err := read()
		switch {
		case err == nil && v == last:
			return v, true, nil
		case err == nil:
			last = v
		case !wait:
			return 0, false, err
		}
		if p.exited() {
			return 0, false, p.exitError()
		}
		if time.Now().After(deadline) {
			if last >= 0 {
				return last, false, nil
			}
			return 0, false, fmt.Errorf("%s's goroutine count after %v: %w", p.name, timeout, err)
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-tick.C:
		}
	}
}

// promValue returns the value of an unlabelled metric in Prometheus's text
// format.
func promValue(text, name string) (float64, error) {
	for line := range strings.SplitSeq(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no %s in the metrics", name)
}

// s4IdleCPU leaves the n registered clients of proxy p idle for --s4-idle
// and measures the CPU time the proxy uses meanwhile and, on the Redis bus,
// Redis's CPU time and commands: what idle tunnels cost at the default
// ping interval.
func (h *harness) s4IdleCPU(ctx context.Context, label string, round int, t *tunnel, p *proc, n int) error {
	r := h.rep
	proxyCPU := r.fig("S4", "idle: proxy CPU per client", "µs/s")
	proxyCPU.checked = false // 10 ms ticks: may round to 0
	r.set(proxyCPU, t.mode, round, math.NaN())
	var redisCPU *figure
	var node *redisNode
	if t.busURL != "" {
		redisCPU = r.fig("S4", "idle: Redis CPU per tunnel", "µs/s")
		r.set(redisCPU, t.mode, round, math.NaN())
		addr := strings.TrimSuffix(strings.TrimPrefix(t.busURL, "redis://"), "/0")
		node = &redisNode{addr: addr, c: newNodeClient(addr)}
		defer node.c.Close()
	}
	var before, after snapshot
	nodes := []*redisNode{node}
	if node != nil {
		s, err := node.stats(ctx)
		if err != nil {
			return err
		}
		before = snapshot{node: s}
	}
	c0, err := p.cpuTime()
	if err != nil {
		return err
	}
	start := time.Now()
	h.logf("%s: idle for %v", label, h.o.s4Idle)
	idle := time.NewTimer(h.o.s4Idle)
	defer idle.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-idle.C:
	}
	c1, err := p.cpuTime()
	if err != nil {
		return err
	}
	window := time.Since(start)
	perSecond := func(d time.Duration) float64 { return us(d) / float64(n) / window.Seconds() }
	r.set(proxyCPU, t.mode, round, perSecond(c1-c0))
	if node != nil {
		s, err := node.stats(ctx)
		if err != nil {
			return err
		}
		after = snapshot{node: s}
		cpu := time.Duration((after[node].cpu - before[node].cpu) * float64(time.Second))
		r.set(redisCPU, t.mode, round, perSecond(cpu))
		// Per tunnel and default ping interval: the window holds
		// window/10s intervals of each of the n tunnels.
		intervals := int64(math.Round(float64(n) * window.Seconds() / simPing.Seconds()))
		r.note("%s: the commands Redis ran per idle tunnel and 10 s ping interval over %v (INFO commandstats, a script's own calls included; every other user of this Redis too, such as the long-lived tunnel): %s.",
			label, window.Round(time.Second), commandsPerOp(before, after, nodes, intervals))
	}
	return nil
}
