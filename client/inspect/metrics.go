package inspect

import (
	"slices"
	"time"
)

// rateWindow is how far back request rates look: 15 minutes, for rate15.
const rateWindow = 900

// latencySamples is how many recent durations the percentiles are taken
// from.
const latencySamples = 1024

// metrics counts a tunnel's exchanges, captured or not, in the shape of
// ngrok's tunnel metrics: "conns" are all exchanges (HTTP requests and
// WebSockets) with how many are open; "http" are the HTTP requests, with
// their latency percentiles.
type metrics struct {
	conns, http int64 // begun; ended HTTP requests
	gauge       int64 // open now
	begun       rateCounter
	httpEnded   rateCounter
	connDurs    durations
	httpDurs    durations
}

func (m *metrics) begin(now time.Time) {
	m.conns++
	m.gauge++
	m.begun.add(now)
}

func (m *metrics) end(isHTTP bool, d time.Duration, now time.Time) {
	m.gauge--
	m.connDurs.add(d)
	if isHTTP {
		m.http++
		m.httpEnded.add(now)
		m.httpDurs.add(d)
	}
}

// rateCounter counts events per second over the last rateWindow seconds.
type rateCounter struct {
	stamp [rateWindow]int64 // the second each slot counts
	count [rateWindow]uint32
}

func (c *rateCounter) add(now time.Time) {
	sec := now.Unix()
	i := sec % rateWindow
	if c.stamp[i] != sec {
		c.stamp[i], c.count[i] = sec, 0
	}
	c.count[i]++
}

// rate is the mean events per second over the last window seconds, the
// current one included.
func (c *rateCounter) rate(now time.Time, window int64) float64 {
	sec := now.Unix()
	var n uint64
	for s := sec - window + 1; s <= sec; s++ {
		if i := s % rateWindow; c.stamp[i] == s {
			n += uint64(c.count[i])
		}
	}
	return float64(n) / float64(window)
}

// durations keeps the last latencySamples durations.
type durations struct {
	d [latencySamples]time.Duration
	n int
}

func (ds *durations) add(d time.Duration) {
	ds.d[ds.n%latencySamples] = d
	ds.n++
}

// percentiles returns the durations at each of ps (0-100), by nearest
// rank, or zeros with no samples.
func (ds *durations) percentiles(ps ...float64) []time.Duration {
	s := slices.Clone(ds.d[:min(ds.n, latencySamples)])
	slices.Sort(s)
	out := make([]time.Duration, len(ps))
	if len(s) == 0 {
		return out
	}
	for i, p := range ps {
		rank := int(p/100*float64(len(s))+0.999999) - 1
		out[i] = s[max(0, min(rank, len(s)-1))]
	}
	return out
}

// metricSet is one group of ngrok's tunnel metrics. Rates are per second;
// percentiles are nanoseconds, as ngrok gives them.
type metricSet struct {
	Count  int64   `json:"count"`
	Gauge  *int64  `json:"gauge,omitempty"`
	Rate1  float64 `json:"rate1"`
	Rate5  float64 `json:"rate5"`
	Rate15 float64 `json:"rate15"`
	P50    float64 `json:"p50"`
	P90    float64 `json:"p90"`
	P95    float64 `json:"p95"`
	P99    float64 `json:"p99"`
}

type tunnelMetrics struct {
	Conns metricSet `json:"conns"`
	HTTP  metricSet `json:"http"`
}

func (m *metrics) snapshot(now time.Time) tunnelMetrics {
	set := func(count int64, c *rateCounter, ds *durations) metricSet {
		p := ds.percentiles(50, 90, 95, 99)
		return metricSet{Count: count,
			Rate1: c.rate(now, 60), Rate5: c.rate(now, 300), Rate15: c.rate(now, 900),
			P50: float64(p[0]), P90: float64(p[1]), P95: float64(p[2]), P99: float64(p[3])}
	}
	t := tunnelMetrics{Conns: set(m.conns, &m.begun, &m.connDurs), HTTP: set(m.http, &m.httpEnded, &m.httpDurs)}
	g := m.gauge
	t.Conns.Gauge = &g
	return t
}
