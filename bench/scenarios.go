package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
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
	for _, t := range h.targets() {
		res, err := h.measureHTTP(ctx, h.label("S1", "c=64", t.mode, round), h.httpLoadFor(t, "GET", "/small", nil, s1HighConc, smallSize), smallBody, t.cpu)
		if err != nil {
			return err
		}
		h.record(tput, t.mode, round, res, rate)
		h.record(hi50, t.mode, round, res, p50)
		h.record(hi99, t.mode, round, res, p99)
		h.recordCPU("S1", "c=64", "request", t.mode, round, res, "proxy", "client", "origin")
	}
	return nil
}

// s2 moves 400 KiB bodies each way. MB/s counts payload bytes (10^6).
func (h *harness) s2(ctx context.Context, round int) error {
	r := h.rep
	get, post := r.fig("S2", "GET 400 KiB", "MB/s"), r.fig("S2", "POST 400 KiB", "MB/s")
	for _, f := range []*figure{get, post} {
		f.vsDirect, f.vsFrp = true, true
	}
	mbps := func(res *loadResult) float64 { return res.rate() * largeSize / 1e6 }
	for _, t := range h.targets() {
		res, err := h.measureHTTP(ctx, h.label("S2", "GET", t.mode, round), h.httpLoadFor(t, "GET", "/large", nil, s2Conc, largeSize), largeBody, t.cpu)
		if err != nil {
			return err
		}
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
		label := h.label("S5", fmt.Sprintf("%d clients", n), t.mode, round)
		res, err := h.s5Once(ctx, label, t, n)
		if err != nil {
			return err
		}
		h.record(tput, t.mode, round, res, rate)
		h.record(lat50, t.mode, round, res, p50)
		h.record(lat99, t.mode, round, res, p99)
		h.recordCPU("S5", "spread", "request", t.mode, round, res)
	}
	return nil
}

func (h *harness) s5Once(ctx context.Context, label string, t *tunnel, n int) (*loadResult, error) {
	f, err := h.startFleet("S5", t.addr, n, (n+999)/1000)
	if err != nil {
		return nil, err
	}
	defer f.stop(h.procs)
	if err := f.wait(ctx, n, 30*time.Second+time.Duration(n)*20*time.Millisecond); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		h.rep.note("%s: not measured: %v", label, err)
		return nil, nil
	}
	f.mu.Lock()
	hosts := append([]string(nil), f.hosts...)
	f.mu.Unlock()
	l := httpLoad{addr: t.addr, hosts: hosts, method: "GET", path: "/small", concurrency: s5Conc, duration: h.o.duration, wantLen: smallSize}
	// The helper runs every client in one process: its CPU time is the
	// clients' together.
	return h.measureHTTP(ctx, label, l, smallBody, map[string][]*proc{"proxy": {t.proxy}, "client": f.procs})
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
	for _, f := range []*figure{registered, regRate, before, after, perClient, reach, clientRSS} {
		r.set(f, t.mode, round, math.NaN())
	}

	p, addr, err := h.startProxy(ctx, "S4 proxy ("+t.mode+")", t.busURL)
	if err != nil {
		return err
	}
	defer func() {
		p.stop()
		h.procs.forget(p)
	}()
	rss0, err := p.rss()
	if err != nil {
		return err
	}
	fl, err := h.startFleet("S4", addr, n, s4Helpers(n))
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
	h.logf("%s: %d registered in %v, proxy RSS %.1f → %.1f MiB", label, len(hosts), took.Round(time.Millisecond), float64(rss0)/(1<<20), float64(rss1)/(1<<20))

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
