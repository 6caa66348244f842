package proxy

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the proxy's Prometheus collectors. A nil *metrics (no
// Config.Metrics) records nothing, so call sites need no checks. Every
// labelled child used on a hot path is resolved once, up front or on first
// use, so recording costs an atomic add and no allocation.
type metrics struct {
	clients   prometheus.Gauge
	streams   prometheus.Gauge
	requests  *prometheus.CounterVec
	byStatus  [1000]atomic.Pointer[prometheus.Counter] // requests' children, by status
	latency   prometheus.Histogram
	pubErrors prometheus.Counter
	pubNoOne  prometheus.Counter
	dropped   [numDropReasons]prometheus.Counter
}

// dropReason says why a message was dropped.
type dropReason int

const (
	// dropOutbox: an error reply found the outbox full.
	dropOutbox dropReason = iota
	// dropClientQueue: a client connection's queue of control frames was
	// full, and the exchange or stream the frame belonged to failed.
	dropClientQueue
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{"outbox_full", "client_queue_full"}

// droppedCounter is implemented by buses that count messages they received
// but had no handler for (bus/redis does).
type droppedCounter interface {
	Dropped() uint64
}

// latencyBuckets span a fast local answer to the default 30 s timeout.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// newMetrics creates the collectors and registers them with reg. A nil reg
// gives a nil *metrics.
func newMetrics(reg prometheus.Registerer, b any) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_connected_clients",
			Help: "Client connections registered on this instance.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyhole_websocket_streams",
			Help: "Public WebSockets open on this instance.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyhole_requests_total",
			Help: "Public requests to tunnel hostnames answered by this instance, by status (101 for an upgraded WebSocket, 499 when the caller left first).",
		}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyhole_request_duration_seconds",
			Help:    "Time to answer a public HTTP request to a tunnel hostname, WebSockets excluded.",
			Buckets: latencyBuckets,
		}),
		pubErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyhole_bus_publish_errors_total",
			Help: "Bus publishes that failed.",
		}),
		pubNoOne: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyhole_bus_publish_no_receivers_total",
			Help: "Bus publishes that reached no subscriber.",
		}),
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyhole_dropped_messages_total",
		Help: "Messages this instance dropped, by reason; the exchange or stream each belonged to failed or timed out.",
	}, []string{"reason"})
	for i, name := range dropReasonNames {
		m.dropped[i] = dropped.WithLabelValues(name)
	}
	cs := []prometheus.Collector{m.clients, m.streams, m.requests, m.latency, m.pubErrors, m.pubNoOne, dropped}
	if d, ok := b.(droppedCounter); ok {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyhole_bus_unrouted_messages_total",
			Help: "Messages the bus received for a topic that no longer had a handler.",
		}, func() float64 { return float64(d.Dropped()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, r := range cs {
				reg.Unregister(r)
			}
			return nil, err
		}
	}
	// The statuses the proxy answers itself, and the commonest, up front.
	for _, code := range []int{101, 200, 404, 413, 429, 499, 502, 503, 504} {
		m.statusCounter(code)
	}
	return m, nil
}

func (m *metrics) statusCounter(code int) prometheus.Counter {
	if code < 0 || code >= len(m.byStatus) {
		code = 0
	}
	if c := m.byStatus[code].Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(strconv.Itoa(code))
	m.byStatus[code].Store(&c)
	return c
}

// request counts one public request, and its latency when d > 0.
func (m *metrics) request(code int, d time.Duration) {
	if m == nil {
		return
	}
	m.statusCounter(code).Inc()
	if d > 0 {
		m.latency.Observe(d.Seconds())
	}
}

func (m *metrics) clientConnected(delta float64) {
	if m != nil {
		m.clients.Add(delta)
	}
}

// published records the outcome of one bus publish.
func (m *metrics) published(n int, err error) {
	switch {
	case m == nil:
	case err != nil:
		m.pubErrors.Inc()
	case n == 0:
		m.pubNoOne.Inc()
	}
}

func (m *metrics) drop(r dropReason) {
	if m != nil {
		m.dropped[r].Inc()
	}
}

// statusRecorder counts a public WebSocket handshake by the status it
// answered, and the stream as open from the 101 until done. coder/websocket
// finds the Hijacker through Unwrap.
type statusRecorder struct {
	http.ResponseWriter
	m      *metrics
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
		s.m.request(code, 0)
		if code == http.StatusSwitchingProtocols && s.m != nil {
			s.m.streams.Inc()
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// done runs once the handler has returned, and the stream with it.
func (s *statusRecorder) done() {
	switch s.status {
	case 0: // the caller left before any answer
		s.status = 499
		s.m.request(499, 0)
	case http.StatusSwitchingProtocols:
		if s.m != nil {
			s.m.streams.Dec()
		}
	}
}
