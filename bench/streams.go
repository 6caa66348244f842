package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The scenarios of protocol v2, where every body is a stream: S6 (SSE
// latency), S7 (one large body each way) and S8 (a stalled stream beside a
// fast one).

const (
	// rssEvery is the period of the RSS samples taken during a transfer.
	rssEvery = 20 * time.Millisecond
	// checkSize is the download or upload that checks a target and opens
	// the connection before a measured transfer.
	checkSize = 1 << 20
	// stallRead is what S8 reads of the stalled stream before it stops.
	stallRead = 256 << 10
	// stallSize is the stalled stream's length: never reached.
	stallSize = 1 << 40
	// stallQuiet is how long the origin's count of the stalled stream's
	// bytes must hold still for the path to count as full.
	stallQuiet = 200 * time.Millisecond
	// stallWait bounds the wait for the stalled stream to fill the path.
	stallWait = 10 * time.Second
)

// bulkTimeout bounds one transfer of size bytes: generous, at 10 MB/s.
func bulkTimeout(size int64) time.Duration {
	return 30*time.Second + time.Duration(size/10e6)*time.Second
}

// newBulkClient is an HTTP client for one large transfer: no overall
// timeout (the context bounds it) and buffers of a data frame's size, the
// same for every target.
func newBulkClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:              nil,
			DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:       1,
			DisableCompression: true,
			ReadBufferSize:     bulkChunk,
			WriteBufferSize:    bulkChunk,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func newRequest(ctx context.Context, method string, t target, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+t.addr+path, body)
	if err != nil {
		return nil, err
	}
	if t.host != "" {
		req.Host = t.host
	}
	return req, nil
}

// s6 reads a stream of Server-Sent Events from each target.
func (h *harness) s6(ctx context.Context, round int) error {
	r := h.rep
	p50f, p99f := r.fig("S6", "event latency p50", "µs"), r.fig("S6", "event latency p99", "µs")
	added := r.fig("S6", "added p50", "µs")
	for _, f := range []*figure{p50f, p99f} {
		f.vsDirect, f.vsFrp = true, true
	}
	added.vsFrp = true
	added.checked = false // may come out negative on a noisy machine
	for _, t := range h.targets() {
		label := h.label("S6", "SSE", t.mode, round)
		lat, err := h.sseOnce(ctx, t)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.note("%s: not measured: %v", label, err)
			h.logf("%s: not measured: %v", label, err)
			r.set(p50f, t.mode, round, math.NaN())
			r.set(p99f, t.mode, round, math.NaN())
			continue
		}
		q50, q99 := quantile(lat, 0.50), quantile(lat, 0.99)
		h.logf("%s: %d events, p50 %v, p99 %v", label, len(lat), q50.Round(time.Microsecond), q99.Round(time.Microsecond))
		r.set(p50f, t.mode, round, us(q50))
		r.set(p99f, t.mode, round, us(q99))
	}
	for _, t := range h.targets()[1:] {
		r.set(added, t.mode, round, p50f.get(t.mode, round)-p50f.get(modeDirect, round))
	}
	return nil
}

// quantile is the q-quantile of ds (nearest rank), which it sorts.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// sseOnce reads one event stream and returns each event's latency: when
// the harness read it minus when the origin wrote it.
func (h *harness) sseOnce(ctx context.Context, t target) ([]time.Duration, error) {
	n, every := h.o.s6Events, h.o.s6Interval
	ctx, cancel := context.WithTimeout(ctx, time.Duration(n)*every+requestTimeout)
	defer cancel()
	hc := newBulkClient()
	defer hc.CloseIdleConnections()
	req, err := newRequest(ctx, "GET", t, fmt.Sprintf("/sse?n=%d&interval=%v", n, every), nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		return nil, fmt.Errorf("GET /sse: status %d, Content-Type %q, want 200 and text/event-stream", resp.StatusCode, ct)
	}
	br := bufio.NewReader(resp.Body)
	lat := make([]time.Duration, 0, n)
	for len(lat) < n {
		line, err := br.ReadSlice('\n')
		// Time first: parsing is not the tunnel's latency.
		now := time.Now().UnixNano()
		if err != nil {
			return nil, fmt.Errorf("GET /sse: after %d of %d events: %w", len(lat), n, err)
		}
		v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: "))
		if !ok {
			continue
		}
		sent, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("GET /sse: event data %q: %w", v, err)
		}
		lat = append(lat, time.Duration(now-sent))
	}
	return lat, nil
}

// s7s8 starts fresh targets for the round's large bodies, with no body cap,
// runs S7 and S8 on them and stops them.
func (h *harness) s7s8(ctx context.Context, round int) error {
	ts, stop, err := h.startBulkTargets(ctx, round)
	if err != nil {
		return err
	}
	defer stop()
	if h.o.scenarios["S7"] {
		if err := h.s7(ctx, round, ts); err != nil {
			return err
		}
	}
	if h.o.scenarios["S8"] {
		if err := h.s8(ctx, round, ts); err != nil {
			return err
		}
	}
	return nil
}

// startBulkTargets starts, per bus, a proxy with --max-body 0 and a client
// on it, and a frps and frpc when frp is measured. Fresh processes make
// "RSS before" the same in every round.
func (h *harness) startBulkTargets(ctx context.Context, round int) (ts []target, stop func(), err error) {
	var procs []*proc
	var peers []*frpPeer
	stop = func() {
		for _, p := range slices.Backward(procs) {
			p.stop()
		}
		h.procs.forget(procs...)
		for _, p := range peers {
			p.stop(h.procs)
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	var extra []string
	if hasFlag(h.proxyHelp, "max-body") {
		extra = []string{"--max-body", "0"}
	} else if round == 0 {
		h.rep.note("S7 and S8: cmd/proxy has no --max-body flag; its default cap applies.")
	}
	ts = append(ts, h.directTarget())
	for _, tn := range h.tunnels {
		name := fmt.Sprintf("S7/S8 round %d (%s)", round+1, tn.mode)
		p, addr, err := h.startProxy(ctx, name+" proxy", tn.busURL, extra...)
		if err != nil {
			return nil, nil, err
		}
		procs = append(procs, p)
		c, host, err := h.startClient(ctx, name+" client", addr)
		if err != nil {
			return nil, nil, err
		}
		procs = append(procs, c)
		t := &tunnel{mode: tn.mode, busURL: tn.busURL, proxy: p, addr: addr, client: c, host: host}
		h.logf("%s: proxy on %s (pid %d), client pid %d", name, addr, p.pid, c.pid)
		if tn.other != nil {
			// The other instance is fresh too, with the same cap.
			op, oaddr, err := h.startProxy(ctx, fmt.Sprintf("S7/S8 round %d (%s) proxy", round+1, modeRedisOther), tn.busURL, extra...)
			if err != nil {
				return nil, nil, err
			}
			procs = append(procs, op)
			t.other = &instance{proxy: op, addr: oaddr}
			if err := waitRouted(ctx, t.other, host); err != nil {
				return nil, nil, fmt.Errorf("S7/S8 other instance: %w", err)
			}
			h.logf("%s: other instance's proxy on %s (pid %d)", name, oaddr, op.pid)
		}
		ts = append(ts, t.targets(h.originP)...)
	}
	if h.frpPeer != nil {
		peer, err := h.startFrp(ctx, fmt.Sprintf("S7/S8 round %d", round+1))
		if err != nil {
			return nil, nil, err
		}
		peers = append(peers, peer)
		ts = append(ts, peer.target(h.originP))
	}
	return ts, stop, nil
}

// bulkResult is one large transfer.
type bulkResult struct {
	bytes   int64
	elapsed time.Duration
	cpu     map[string]time.Duration // by role, as loadResult's
	before  map[string]int64         // RSS by role ("proxy", "client") just before
	peak    map[string]int64         // the largest RSS sample by role during
}

func (b *bulkResult) mbps() float64 { return float64(b.bytes) / 1e6 / b.elapsed.Seconds() }

// cpuPerMB is role's CPU time per MB moved, in µs, or NaN.
func (b *bulkResult) cpuPerMB(role string) float64 {
	t, ok := b.cpu[role]
	if !ok || b.bytes == 0 {
		return math.NaN()
	}
	return us(t) / (float64(b.bytes) / 1e6)
}

// transfer is one large transfer on hc: a download, or an upload when up.
func transfer(ctx context.Context, hc *http.Client, t target, size int64, up bool) error {
	ctx, cancel := context.WithTimeout(ctx, bulkTimeout(size))
	defer cancel()
	path := "/bulk?size=" + strconv.FormatInt(size, 10)
	var body io.Reader
	method := "GET"
	if up {
		path, method, body = "/bulk", "POST", &patternReader{n: size}
	}
	req, err := newRequest(ctx, method, t, path, body)
	if err != nil {
		return err
	}
	if up {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if up {
		got, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if err != nil {
			return fmt.Errorf("POST /bulk: read answer: %w", err)
		}
		if want := strconv.FormatInt(size, 10); resp.StatusCode != http.StatusOK || string(got) != want {
			return fmt.Errorf("POST /bulk of %d bytes: status %d, %q, want 200 and %q", size, resp.StatusCode, clip(got, 200), want)
		}
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	pw := &patternWriter{}
	if _, err := io.CopyBuffer(pw, resp.Body, make([]byte, 4*bulkChunk)); err != nil {
		return fmt.Errorf("GET %s: after %d bytes: %w", path, pw.off, err)
	}
	if pw.off != size {
		return fmt.Errorf("GET %s: %d bytes, want %d", path, pw.off, size)
	}
	return nil
}

// bulkOnce checks t with a small transfer, then measures one of size
// bytes on the same connection, sampling the RSS of t's proxy and client.
func bulkOnce(ctx context.Context, t target, size int64, up bool) (*bulkResult, error) {
	hc := newBulkClient()
	defer hc.CloseIdleConnections()
	if err := transfer(ctx, hc, t, checkSize, up); err != nil {
		return nil, fmt.Errorf("check transfer: %w", err)
	}
	rs, err := startRSS(t.cpu)
	if err != nil {
		return nil, err
	}
	m := startCPU(t.cpu)
	t0 := time.Now()
	err = transfer(ctx, hc, t, size, up)
	elapsed := time.Since(t0)
	cpu := m.stop()
	peak := rs.stop()
	if err != nil {
		return nil, err
	}
	return &bulkResult{bytes: size, elapsed: elapsed, cpu: cpu, before: rs.before, peak: peak}, nil
}

// rssSampler samples the RSS of a target's proxy and client.
type rssSampler struct {
	pids   map[string][]int
	before map[string]int64
	quit   chan struct{}
	done   chan struct{}
	peak   map[string]int64
}

// startRSS reads the RSS of the "proxy" and "client" of groups now, and
// then every rssEvery until stop. A role of several processes (both
// instances of a load through the other one) counts their sum.
func startRSS(groups map[string][]*proc) (*rssSampler, error) {
	s := &rssSampler{pids: map[string][]int{}, before: map[string]int64{}, peak: map[string]int64{},
		quit: make(chan struct{}), done: make(chan struct{})}
	for _, role := range []string{"proxy", "client"} {
		ps := groups[role]
		if len(ps) == 0 {
			continue
		}
		for _, p := range ps {
			s.pids[role] = append(s.pids[role], p.pid)
		}
		v, err := sumRSS(s.pids[role])
		if err != nil {
			return nil, err
		}
		s.before[role], s.peak[role] = v, v
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(rssEvery)
		defer tick.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-tick.C:
				s.sample()
			}
		}
	}()
	return s, nil
}

func (s *rssSampler) sample() {
	for role, pids := range s.pids {
		if v, err := sumRSS(pids); err == nil && v > s.peak[role] {
			s.peak[role] = v
		}
	}
}

// sumRSS is the RSS of the processes together.
func sumRSS(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		v, err := readRSS(pid)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// stop ends the sampling, takes one last sample and returns the peaks.
func (s *rssSampler) stop() map[string]int64 {
	close(s.quit)
	<-s.done
	s.sample()
	return s.peak
}

// s7 moves one large body each way through each target.
func (h *harness) s7(ctx context.Context, round int, ts []target) error {
	r := h.rep
	size := int64(h.o.bulkSize)
	for _, dir := range []struct {
		name string
		up   bool
	}{{"download", false}, {"upload", true}} {
		rate := r.fig("S7", dir.name, "MB/s")
		rate.vsDirect, rate.vsFrp = true, true
		rss := map[string][2]*figure{}
		cpu := map[string]*figure{}
		for _, role := range []string{"proxy", "client"} {
			rss[role] = [2]*figure{
				r.fig("S7", fmt.Sprintf("%s %s RSS before", dir.name, role), "MiB"),
				r.fig("S7", fmt.Sprintf("%s %s RSS peak", dir.name, role), "MiB"),
			}
			rss[role][0].vsFrp, rss[role][1].vsFrp = true, true
			cpu[role] = r.fig("S7", fmt.Sprintf("%s %s CPU", dir.name, role), "µs per MB")
			cpu[role].checked = false // whole clock ticks
			cpu[role].vsFrp = true
		}
		for _, t := range ts {
			label := h.label("S7", dir.name, t.mode, round)
			res, err := bulkOnce(ctx, t, size, dir.up)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.note("%s: not measured: %v", label, err)
				h.logf("%s: not measured: %v", label, err)
				res = nil
			} else {
				h.logf("%s: %.0f MB/s, proxy RSS %.1f → %.1f MiB, client RSS %.1f → %.1f MiB", label, res.mbps(),
					float64(res.before["proxy"])/(1<<20), float64(res.peak["proxy"])/(1<<20),
					float64(res.before["client"])/(1<<20), float64(res.peak["client"])/(1<<20))
			}
			r.set(rate, t.mode, round, bulkValue(res, (*bulkResult).mbps))
			if t.mode == modeDirect {
				continue
			}
			for _, role := range []string{"proxy", "client"} {
				r.set(rss[role][0], t.mode, round, bulkValue(res, func(b *bulkResult) float64 { return mib(b.before, role) }))
				r.set(rss[role][1], t.mode, round, bulkValue(res, func(b *bulkResult) float64 { return mib(b.peak, role) }))
				r.set(cpu[role], t.mode, round, bulkValue(res, func(b *bulkResult) float64 { return b.cpuPerMB(role) }))
			}
		}
	}
	return nil
}

func bulkValue(b *bulkResult, f func(*bulkResult) float64) float64 {
	if b == nil {
		return math.NaN()
	}
	return f(b)
}

// mib is m[role] in MiB, or NaN.
func mib(m map[string]int64, role string) float64 {
	v, ok := m[role]
	if !ok {
		return math.NaN()
	}
	return float64(v) / (1 << 20)
}

// s8 measures a fast download alone and beside a stalled one on the same
// tunnel.
func (h *harness) s8(ctx context.Context, round int, ts []target) error {
	r := h.rep
	size := int64(h.o.bulkSize)
	alone := r.fig("S8", "alone", "MB/s")
	alone.vsDirect, alone.vsFrp = true, true
	beside := r.fig("S8", "beside a stalled reader", "MB/s")
	beside.ref, beside.refLabel, beside.vsFrp = alone, "alone", true
	inFlight := r.fig("S8", "stalled stream's bytes in flight", "MiB")
	inFlight.checked = false
	inFlight.vsFrp = true
	for _, t := range ts {
		label := h.label("S8", "stalled reader", t.mode, round)
		a, b, fl, err := h.s8Once(ctx, label, t, size)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.note("%s: not measured: %v", label, err)
			h.logf("%s: not measured: %v", label, err)
		}
		r.set(alone, t.mode, round, bulkValue(a, (*bulkResult).mbps))
		r.set(beside, t.mode, round, bulkValue(b, (*bulkResult).mbps))
		r.set(inFlight, t.mode, round, fl)
	}
	return nil
}

// s8Once returns the fast download alone, then beside a stalled stream,
// and the stalled stream's bytes in flight in MiB. Results not measured
// are nil or NaN.
func (h *harness) s8Once(ctx context.Context, label string, t target, size int64) (alone, beside *bulkResult, inFlight float64, err error) {
	inFlight = math.NaN()
	if alone, err = bulkOnce(ctx, t, size, false); err != nil {
		return nil, nil, inFlight, fmt.Errorf("alone: %w", err)
	}
	st, err := h.openStaller(ctx, t)
	if err != nil {
		return alone, nil, inFlight, fmt.Errorf("stalled stream: %w", err)
	}
	defer st.close()
	written, settled, err := st.waitFull(ctx, h.origin)
	if err != nil {
		return alone, nil, inFlight, fmt.Errorf("stalled stream: %w", err)
	}
	if !settled {
		h.rep.note("%s: the origin was still writing the stalled stream after %v (%.1f MiB written): the fast download ran beside a stream that was still moving",
			label, stallWait, float64(written)/(1<<20))
	}
	inFlight = float64(written-stallRead) / (1 << 20)
	if beside, err = bulkOnce(ctx, t, size, false); err != nil {
		return alone, nil, inFlight, fmt.Errorf("beside the stalled stream: %w", err)
	}
	h.logf("%s: alone %.0f MB/s, beside a stalled reader %.0f MB/s, %.1f MiB in flight", label, alone.mbps(), beside.mbps(), inFlight)
	// A stalled stream must stay a stream: it delivers again once read.
	if err := st.resume(checkSize); err != nil {
		h.rep.note("%s: the stalled stream did not resume: %v", label, err)
	}
	return alone, beside, inFlight, nil
}

// staller is a download the harness stopped reading.
type staller struct {
	id     string
	cancel context.CancelFunc
	resp   *http.Response
	hc     *http.Client
	pw     patternWriter
	once   sync.Once
}

// openStaller starts a download that never ends and reads stallRead bytes
// of it.
func (h *harness) openStaller(ctx context.Context, t target) (*staller, error) {
	idb := make([]byte, 8)
	rand.Read(idb)
	st := &staller{id: "s8-" + hex.EncodeToString(idb), hc: newBulkClient()}
	sctx, cancel := context.WithCancel(ctx)
	st.cancel = cancel
	req, err := newRequest(sctx, "GET", t, fmt.Sprintf("/bulk?size=%d&id=%s", int64(stallSize), st.id), nil)
	if err != nil {
		st.close()
		return nil, err
	}
	st.resp, err = st.hc.Do(req)
	if err != nil {
		st.close()
		return nil, err
	}
	if st.resp.StatusCode != http.StatusOK {
		st.close()
		return nil, fmt.Errorf("GET /bulk: status %d", st.resp.StatusCode)
	}
	if err := st.resume(stallRead); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

// waitFull waits until the origin's count of the bytes it wrote for the
// stalled stream holds still for stallQuiet, and returns that count and
// whether it held still before stallWait.
func (st *staller) waitFull(ctx context.Context, origin string) (written int64, settled bool, err error) {
	hc := newHTTPClient(1)
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(stallWait)
	tick := time.NewTicker(rssEvery)
	defer tick.Stop()
	var since time.Time
	last := int64(-1)
	for {
		n, err := progressOf(ctx, hc, origin, st.id)
		if err != nil {
			return 0, false, err
		}
		now := time.Now()
		if n != last {
			last, since = n, now
		} else if now.Sub(since) >= stallQuiet {
			return n, true, nil
		}
		if now.After(deadline) {
			return n, false, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-tick.C:
		}
	}
}

// progressOf asks the origin how much it wrote for the download id.
func progressOf(ctx context.Context, hc *http.Client, origin, id string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+origin+"/progress?id="+id, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("origin /progress: status %d (the stalled download ended?)", resp.StatusCode)
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// resume reads n more bytes of the stalled stream, checking them, within
// requestTimeout.
func (st *staller) resume(n int64) error {
	t := time.AfterFunc(requestTimeout, st.cancel)
	defer t.Stop()
	got, err := io.CopyN(&st.pw, st.resp.Body, n)
	if err != nil {
		return fmt.Errorf("read %d bytes, then: %w", got, err)
	}
	if !t.Stop() {
		return errors.New("timed out")
	}
	return nil
}

func (st *staller) close() {
	st.once.Do(func() {
		st.cancel()
		if st.resp != nil {
			st.resp.Body.Close()
		}
		st.hc.CloseIdleConnections()
	})
}
