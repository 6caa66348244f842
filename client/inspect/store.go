package inspect

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// Defaults of [Options].
const (
	// DefaultBudget bounds the bytes a Store keeps: 50 MB.
	DefaultBudget = 50_000_000
	// DefaultBodyLimit is the part of each body kept: 1 MiB.
	DefaultBodyLimit = 1 << 20
	// DefaultPreviewLimit is the part of each WebSocket message or
	// server-sent event kept: 4 KiB.
	DefaultPreviewLimit = 4 << 10
	// DefaultTunnelName is the tunnel's name in the API: ngrok's name for
	// the tunnel a command line starts, which scripts look up as
	// /api/tunnels/command_line.
	DefaultTunnelName = "command_line"
	// DefaultReplayTimeout bounds one replay, response body included.
	DefaultReplayTimeout = time.Minute
)

// Charges, in bytes, for what an exchange keeps besides the bytes of its
// heads and bodies: the bookkeeping, estimated, so that a flood of empty
// requests is bounded by the budget too.
const (
	exchangeOverhead = 256
	itemOverhead     = 64 // per WebSocket message or server-sent event
)

// Options configure a [Store]. The zero value of each field is its
// documented default.
type Options struct {
	// Budget bounds the bytes the Store keeps: heads, the kept parts of
	// bodies, WebSocket messages and events, plus a small charge per item.
	// When a new exchange or a growing one needs room, the oldest
	// exchanges are dropped. Default DefaultBudget; negative turns capture
	// off (the page and the API still show the tunnel and its metrics).
	Budget int64
	// BodyLimit is the most of each request or response body kept; the
	// rest is counted and the body is marked truncated. It also bounds the
	// WebSocket messages or events kept for one exchange. Default
	// DefaultBodyLimit.
	BodyLimit int64
	// PreviewLimit is the most of one WebSocket message or server-sent
	// event kept. Default DefaultPreviewLimit.
	PreviewLimit int
	// TunnelName names the tunnel in the API. Default DefaultTunnelName.
	TunnelName string
	// ReplayTimeout bounds one replay. Default DefaultReplayTimeout.
	ReplayTimeout time.Duration
}

// Kind is what an exchange carried.
type Kind string

// Kinds of exchange.
const (
	KindHTTP      Kind = "http"
	KindWebSocket Kind = "websocket"
)

// Upstream is how a Store reaches the local service, to replay requests
// and to name it in /api/tunnels. The client sets it while it runs.
type Upstream struct {
	// Addr names the local service (config.addr in /api/tunnels).
	Addr string
	// RoundTrip sends req to the local service. req.URL holds the path
	// and query only; req.Host is the public host the original request
	// was addressed to.
	RoundTrip func(req *http.Request) (*http.Response, error)
}

// Connection states, as the status panel shows them.
const (
	StateStopped      = "stopped"
	StateConnecting   = "connecting"
	StateOnline       = "online"
	StateReconnecting = "reconnecting"
)

// Store keeps a client's recent exchanges in memory, bounded in bytes,
// and the tunnel's status and metrics. Its methods are safe for concurrent
// use. The capture methods (Begin*, Registered, ...) are called by the
// client; a nil *Store ignores them, so a client without an inspector
// pays nothing.
type Store struct {
	o Options

	mu      sync.Mutex
	used    int64
	list    []*Exchange // retained, oldest first
	byID    map[string]*Exchange
	next    uint64 // number of the next exchange
	seq     uint64 // counts changes
	epoch   uint64 // counts Clears
	wake    chan struct{}
	waiting bool
	met     metrics

	publicURL     string
	state         string
	registrations int
	lastError     string
	since         time.Time
	up            *Upstream
	replayCtx     context.Context
	replayStop    context.CancelFunc
	replays       sync.WaitGroup
}

// New returns a Store with the options o.
func New(o Options) *Store {
	if o.Budget == 0 {
		o.Budget = DefaultBudget
	}
	if o.BodyLimit <= 0 {
		o.BodyLimit = DefaultBodyLimit
	}
	if o.PreviewLimit <= 0 {
		o.PreviewLimit = DefaultPreviewLimit
	}
	if o.TunnelName == "" {
		o.TunnelName = DefaultTunnelName
	}
	if o.ReplayTimeout <= 0 {
		o.ReplayTimeout = DefaultReplayTimeout
	}
	return &Store{o: o, byID: map[string]*Exchange{}, state: StateStopped, next: 1}
}

// Capturing reports whether the Store records exchanges (its budget is not
// negative).
func (s *Store) Capturing() bool { return s != nil && s.o.Budget > 0 }

// body is one captured body: the first BodyLimit bytes and the count of
// all of them.
type body struct {
	data      []byte
	size      int64 // bytes that passed, kept or not
	truncated bool  // size > len(data)
	complete  bool  // the body was read to its end
}

// record is what an exchange holds; a copy of it is a consistent snapshot
// (the slices in it only ever grow past what a copy sees).
type record struct {
	ID         string
	N          uint64
	Kind       Kind
	Start      time.Time
	Method     string
	URI        string
	Host       string
	ReqHeader  http.Header // nil until looked at: see view
	RemoteAddr string
	ReplayOf   string

	Responded   bool
	FirstByte   time.Time
	Status      int
	Proto       string
	RespHeader  http.Header // nil until looked at: see view
	Subprotocol string

	Ended bool
	End   time.Time
	Reset bool
	Error string // why the inspector's own replay failed

	Req, Resp body

	WS         []WSMessage
	WSDropped  int
	SSE        []SSEEvent
	SSEDropped int
	itemBytes  int64 // kept bytes of WS and SSE, against BodyLimit

	Seq uint64

	// The headers as captured, until view makes maps of them.
	reqFlat, respFlat flatHeader
}

// flatHeader is a header as captured: each name and value followed by a
// zero byte, in one byte slice, which is most of what capturing an
// exchange would otherwise cost: no map to build, and nothing for the
// garbage collector to scan in the exchanges the ring keeps.
type flatHeader []byte

func flatten(h http.Header) flatHeader {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 2
		}
	}
	f := make(flatHeader, 0, n)
	for k, vs := range h {
		for _, v := range vs {
			f = append(f, k...)
			f = append(f, 0)
			f = append(f, v...)
			f = append(f, 0)
		}
	}
	return f
}

func (f flatHeader) header() http.Header {
	h := http.Header{}
	for len(f) > 0 {
		k, rest, ok := bytes.Cut(f, []byte{0})
		if !ok {
			break
		}
		v, rest, _ := bytes.Cut(rest, []byte{0})
		h[string(k)] = append(h[string(k)], string(v))
		f = rest
	}
	return h
}

func (f flatHeader) bytes() int64 { return int64(len(f)) }

// view returns a copy of x's record with its headers as maps, made
// (once) now that someone looks. It runs under the store's lock.
func (x *Exchange) view() record {
	if x.r.reqFlat != nil {
		x.r.ReqHeader, x.r.reqFlat = x.r.reqFlat.header(), nil
	}
	if x.r.respFlat != nil {
		x.r.RespHeader, x.r.respFlat = x.r.respFlat.header(), nil
	}
	return x.r
}

// duration is the exchange's time so far, or in all once it has ended.
func (r *record) duration(now time.Time) time.Duration {
	if r.Ended {
		return r.End.Sub(r.Start)
	}
	return now.Sub(r.Start)
}

// Exchange is one request and its response, or one WebSocket, as it is
// being captured. Its methods are called by the client along the way; on a
// nil *Exchange they do nothing.
type Exchange struct {
	s        *Store
	start    time.Time
	r        record
	retained bool // in the ring: captured bytes go somewhere
	cost     int64
	done     chan struct{} // closed by End; only the inspector's replays have one
	sse      *sseParser
}

// BeginHTTP starts the capture of an HTTP request the client received, as
// it came from the proxy (before hop-by-hop headers are removed). It
// returns nil when s is nil.
func (s *Store) BeginHTTP(id messages.ID, method, uri, host string, h messages.Header) *Exchange {
	if s == nil {
		return nil
	}
	return s.begin(id.String(), KindHTTP, method, uri, host, http.Header(h), "")
}

// BeginWebSocket starts the capture of a WebSocket the proxy asked the
// client to open. It returns nil when s is nil.
func (s *Store) BeginWebSocket(id messages.ID, uri, host string, h messages.Header) *Exchange {
	if s == nil {
		return nil
	}
	return s.begin(id.String(), KindWebSocket, http.MethodGet, uri, host, http.Header(h), "")
}

func (s *Store) begin(id string, kind Kind, method, uri, host string, h http.Header, replayOf string) *Exchange {
	now := time.Now()
	x := &Exchange{s: s, start: now}
	if replayOf != "" {
		x.done = make(chan struct{})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.met.begin(now)
	x.r.Kind = kind
	if s.o.Budget <= 0 {
		return x
	}
	hf := flatten(h)
	x.r = record{ID: id, Kind: kind, Start: now, Method: method, URI: uri, Host: host,
		reqFlat: hf, RemoteAddr: remoteAddr(h), ReplayOf: replayOf}
	cost := exchangeOverhead + int64(len(id)+len(method)+len(uri)+len(host)) + hf.bytes()
	if cost > s.o.Budget {
		return x
	}
	for s.used+cost > s.o.Budget {
		s.evictLocked()
	}
	if old := s.byID[id]; old != nil {
		// The same ID twice (a replay of a replay cannot collide; a
		// proxy reusing an ID after the first ended could): the older
		// record gives way.
		s.removeLocked(old)
	}
	x.r.N = s.next
	s.next++
	x.retained, x.cost = true, cost
	s.used += cost
	s.list = append(s.list, x)
	s.byID[id] = x
	s.changedLocked(x)
	return x
}

// remoteAddr is the visitor's address: the last X-Forwarded-For entry,
// which the proxy appends.
func remoteAddr(h http.Header) string {
	v := h.Values("X-Forwarded-For")
	if len(v) == 0 {
		return ""
	}
	last := v[len(v)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	return strings.TrimSpace(last)
}

// chargeLocked makes room for n more bytes of x by dropping older
// exchanges. It reports false, and charges nothing, when x is no longer
// kept or n does not fit without dropping x itself.
func (s *Store) chargeLocked(x *Exchange, n int64) bool {
	if !x.retained {
		return false
	}
	for s.used+n > s.o.Budget {
		if s.list[0] == x {
			return false
		}
		s.evictLocked()
	}
	x.cost += n
	s.used += n
	return true
}

// chargeUpToLocked is chargeLocked for as much of n as fits: it returns
// the bytes charged.
func (s *Store) chargeUpToLocked(x *Exchange, n int64) int64 {
	if !x.retained {
		return 0
	}
	for s.used+n > s.o.Budget && s.list[0] != x {
		s.evictLocked()
	}
	n = max(0, min(n, s.o.Budget-s.used))
	x.cost += n
	s.used += n
	return n
}

// chargeHeadLocked charges a response head of n bytes to x. A record
// without its response would be of little use, so when older exchanges
// do not make room, x's own request body gives up its end.
func (s *Store) chargeHeadLocked(x *Exchange, n int64) {
	if got := s.chargeUpToLocked(x, n); got < n {
		short := min(n-got, int64(len(x.r.Req.data)))
		x.r.Req.data = x.r.Req.data[: int64(len(x.r.Req.data))-short : int64(len(x.r.Req.data))-short]
		x.r.Req.truncated = x.r.Req.truncated || short > 0
		// The rest, if any, overruns the budget by less than one head:
		// only a budget smaller than a few heads gets here.
		x.cost += n - got
		s.used += n - got - short
		x.cost -= short
	}
}

func (s *Store) evictLocked() { s.removeLocked(s.list[0]) }

// removeLocked drops x from the ring. Dropping is FIFO but for a record
// replaced by one with the same ID.
func (s *Store) removeLocked(x *Exchange) {
	if len(s.list) > 0 && s.list[0] == x {
		s.list[0] = nil
		s.list = s.list[1:]
	} else {
		for i, y := range s.list {
			if y == x {
				s.list = append(s.list[:i:i], s.list[i+1:]...)
				break
			}
		}
	}
	delete(s.byID, x.r.ID)
	s.used -= x.cost
	x.retained, x.cost = false, 0
	// Free the memory now; snapshots already taken keep their own
	// references.
	x.r.Req.data, x.r.Resp.data, x.r.WS, x.r.SSE = nil, nil, nil, nil
	s.changedLocked(nil)
}

// changedLocked records a change of x (or of the list or status, for nil)
// and wakes whoever waits for one.
func (s *Store) changedLocked(x *Exchange) {
	s.seq++
	if x != nil {
		x.r.Seq = s.seq
	}
	if s.waiting {
		close(s.wake)
		s.wake, s.waiting = nil, false
	}
}

// changes returns a channel closed at the next change.
func (s *Store) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wake == nil {
		s.wake = make(chan struct{})
	}
	s.waiting = true
	return s.wake
}

// Response records the response head as it goes to the proxy: the local
// service's status and the headers the visitor gets.
func (x *Exchange) Response(resp *http.Response, h messages.Header) {
	if x == nil {
		return
	}
	now := time.Now()
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !x.retained {
		return
	}
	hf := flatten(http.Header(h))
	x.r.Responded, x.r.FirstByte, x.r.Status, x.r.Proto, x.r.respFlat = true, now, resp.StatusCode, resp.Proto, hf
	s.chargeHeadLocked(x, hf.bytes()+16)
	if isEventStream(http.Header(h)) {
		x.sse = &sseParser{x: x, max: s.o.PreviewLimit}
	}
	s.changedLocked(x)
}

// End records the end of the exchange: the status the client logged and
// whether it reset the stream (the visitor saw an error or an incomplete
// response).
func (x *Exchange) End(status int, reset bool) {
	if x == nil {
		return
	}
	now := time.Now()
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.met.end(x.r.Kind == KindHTTP, now.Sub(x.start), now)
	if x.r.Start.IsZero() {
		// Not captured (capture off): only the metrics count it.
		x.closeDone()
		return
	}
	// An event not ended by a blank line is dropped, as a browser's
	// EventSource drops it.
	x.r.Ended, x.r.End, x.r.Reset = true, now, reset
	if !x.r.Responded && status != 0 {
		x.r.Status = status
	}
	if x.retained {
		s.changedLocked(x)
	}
	x.closeDone()
}

func (x *Exchange) closeDone() {
	if x.done != nil {
		close(x.done)
	}
}

// Registered records that the client registered with the public URL u.
func (s *Store) Registered(u string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publicURL, s.state, s.lastError, s.since = u, StateOnline, "", time.Now()
	s.registrations++
	s.changedLocked(nil)
}

// Disconnected records that the connection to the proxy ended with err;
// the client is reconnecting.
func (s *Store) Disconnected(err error) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.since = StateReconnecting, time.Now()
	if err != nil {
		s.lastError = err.Error()
	}
	s.changedLocked(nil)
}

// Start records that the client runs, reaching its local service through
// u, until Stop.
func (s *Store) Start(u Upstream) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up = &u
	s.state, s.since = StateConnecting, time.Now()
	s.replayCtx, s.replayStop = context.WithCancel(context.Background())
	s.changedLocked(nil)
}

// Stop records that the client stopped. Replays in progress are canceled,
// and Stop waits for them.
func (s *Store) Stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.up = nil
	s.state, s.since = StateStopped, time.Now()
	if s.replayStop != nil {
		s.replayStop()
	}
	s.changedLocked(nil)
	s.mu.Unlock()
	s.replays.Wait()
}

// Clear drops every exchange kept.
func (s *Store) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.list) > 0 {
		s.evictLocked()
	}
	s.epoch++
	s.changedLocked(nil)
}

// Stats are a Store's numbers.
type Stats struct {
	Budget    int64 // Options.Budget
	Used      int64 // bytes charged for what is kept
	Exchanges int   // exchanges kept
}

// Stats returns s's numbers now.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Budget: s.o.Budget, Used: s.used, Exchanges: len(s.list)}
}

// snapshot returns a copy of the exchange with the ID id.
func (s *Store) snapshot(id string) (record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.byID[id]
	if x == nil {
		return record{}, false
	}
	return x.view(), true
}

// snapshots returns copies of the newest limit exchanges (all for
// limit <= 0), newest first.
func (s *Store) snapshots(limit int) []record {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.list)
	if limit > 0 {
		n = min(n, limit)
	}
	out := make([]record, 0, n)
	for i := len(s.list) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, s.list[i].view())
	}
	return out
}

// newID returns a random ID for an exchange the inspector itself started.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
