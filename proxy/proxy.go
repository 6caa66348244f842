package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// ControlPath is the path on the apex (or any non-tunnel host) where
// clients open their websocket.
const ControlPath = messages.ControlPath

// Proxy serves public traffic and client connections. Create it with [New].
type Proxy struct {
	cfg      Config
	instance string
	bus      bus.Bus
	reg      bus.Registry
	ownsBus  bool
	log      *slog.Logger
	sub      bus.Subscription // this instance's one topic
	metrics  *metrics         // nil: no metrics

	// ctx ends when the proxy shuts down; client connections live under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// regMu serializes attaching and detaching each hostname, which span
	// the bus, the registry and p.hosts: a stripe per hash of the name,
	// so that registrations of different hostnames go on side by side.
	regMu [64]sync.Mutex

	// lanes publish what must not wait for its round trip, in order per
	// stream, over a bus that batches; nil over the in-memory bus, where
	// a publish is a function call.
	lanes     []*lane
	lanesStop chan struct{}
	lanesDone sync.WaitGroup
	stopOnce  sync.Once // Shutdown may be called more than once
	beats     sync.WaitGroup

	routeMu sync.Mutex
	routes  map[string]route // the lookup cache, by label

	// budget bounds the window growth of every stream this instance
	// receives on; connBudgets split it per client connection.
	budget *stream.Budget

	mu          sync.Mutex
	streams     map[messages.ID]*visitorStream // streams this instance opened for visitors
	connBudgets map[string]*connBudget         // by holder
	hosts       map[string]*hostEntry          // hostnames whose client this instance holds
	conns       map[string]*clientConn         // every client connection attached here, by holder
	moved       map[string]moved               // replaced connections that closed lately
	forwards    map[messages.ID]moved          // streams whose frames follow them there
	ports       map[int]*publicPort            // public TCP ports open here (tcp.go)
	draining    bool
	drainFlag   atomic.Bool // draining, for the hot path
	stopping    bool        // Shutdown has begun: nothing new starts
	access      *Access     // nil admits every key
}

// connBudget is the share of the instance's window budget that the
// visitor streams to one client connection may use.
type connBudget struct {
	b    *stream.Budget
	refs int
}

// New starts a proxy instance: it subscribes to its own reply topic before
// returning, so it is ready to serve.
func New(ctx context.Context, cfg Config) (*Proxy, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("proxy config: %w", err)
	}
	p := &Proxy{
		cfg:         cfg,
		instance:    randomToken(8),
		bus:         cfg.Bus,
		reg:         cfg.Registry,
		log:         cfg.Logger,
		budget:      stream.NewBudget(int64(cfg.WindowBudget), nil),
		streams:     make(map[messages.ID]*visitorStream),
		connBudgets: make(map[string]*connBudget),
		hosts:       make(map[string]*hostEntry),
		conns:       make(map[string]*clientConn),
		moved:       make(map[string]moved),
		forwards:    make(map[messages.ID]moved),
		routes:      make(map[string]route),
		access:      cfg.Access,
	}
	if p.bus == nil {
		m := bus.NewMemory()
		p.bus, p.reg, p.ownsBus = m, m, true
	}
	if p.metrics, err = newMetrics(cfg.Metrics, p.bus); err != nil {
		return nil, fmt.Errorf("proxy metrics: %w", err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.lanesStop = make(chan struct{})
	if b, ok := p.bus.(bus.Batcher); ok {
		for range lanes {
			l := &lane{p: p, b: b, ready: make(chan struct{}, 1)}
			p.lanes = append(p.lanes, l)
			p.lanesDone.Go(func() { l.run(p.lanesStop) })
		}
	}
	p.sub, err = p.bus.Subscribe(ctx, bus.InstanceTopic(p.instance), p.onMessage)
	if err != nil {
		p.cancel()
		close(p.lanesStop)
		p.lanesDone.Wait()
		return nil, fmt.Errorf("subscribe to the instance's topic: %w", err)
	}
	p.log = p.log.With("instance", p.instance)
	p.beats.Go(func() { p.heartbeats(p.ctx) })
	return p, nil
}

// Instance returns this instance's ID, which names its reply topic.
func (p *Proxy) Instance() string { return p.instance }

func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// onStreamFrame routes a frame from client connection conn to the visitor
// stream it belongs to. Frames for streams that ended (a late answer after
// a 504) are dropped.
func (p *Proxy) onStreamFrame(conn string, frame []byte) {
	id, ok := messages.PeekID(frame)
	if !ok {
		return
	}
	p.mu.Lock()
	vs := p.streams[id]
	p.mu.Unlock()
	if vs == nil {
		return
	}
	m, err := messages.Decode(frame)
	if err != nil {
		// The holder passes on only frames it decoded itself.
		p.log.Warn("bad frame on bus", "err", err)
		return
	}
	// The payload is the bus's; the stream keeps a copy of the data.
	switch m := m.(type) {
	case *messages.Data:
		m.Data = stream.CopyData(m.Data)
	case *messages.WSMessage:
		m.Data = stream.CopyData(m.Data)
	case *messages.WSResponse:
		m.Body = bytes.Clone(m.Body)
	}
	vs.deliver(conn, m)
}

// openStream registers a visitor stream towards the client connection
// holder of label. Call closeStream when it is over.
func (p *Proxy) openStream(id messages.ID, label, holder string, cfg stream.Config) *visitorStream {
	out := &busSender{p: p, label: label, data: holder, key: streamKey(id)}
	out.ctrl.Store(&holder)
	p.mu.Lock()
	cb := p.connBudgets[holder]
	if cb == nil {
		cb = &connBudget{b: stream.NewBudget(int64(p.cfg.ConnWindowBudget), p.budget)}
		p.connBudgets[holder] = cb
	}
	cb.refs++
	cfg.Budget = cb.b
	cfg.MaxWindow = int(p.cfg.MaxWindow)
	vs := &visitorStream{Stream: stream.New(id, out, cfg), out: out}
	out.vs = vs
	p.streams[id] = vs
	p.mu.Unlock()
	return vs
}

func (p *Proxy) closeStream(vs *visitorStream) {
	vs.Close()
	p.mu.Lock()
	delete(p.streams, vs.ID())
	if cb := p.connBudgets[vs.out.data]; cb != nil {
		if cb.refs--; cb.refs == 0 {
			delete(p.connBudgets, vs.out.data)
		}
	}
	p.mu.Unlock()
}

// ServeHTTP routes by Host: tunnel hostnames go to their client; the
// control path on any other host accepts clients; the apex shows a landing
// page; everything else is 404. A request over TLS whose SNI names another
// tunnel than its Host gets 421.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.misdirected(w, r) { // TLS: SNI and Host name different hosts; see tls.go
		return
	}
	if p.drainFlag.Load() && r.ProtoMajor == 1 {
		// The connection's next request belongs to another instance.
		w.Header().Set("Connection", "close")
	}
	host := normalizeHost(r.Host)
	if label, ok := p.tunnelLabel(host); ok {
		p.serveTunnel(w, r, host, label)
		return
	}
	switch {
	case r.URL.Path == ControlPath:
		p.serveControl(w, r)
	case r.URL.Path == TCPPath:
		p.serveTCPVisitor(w, r)
	case r.URL.Path == messages.LegacyControlPath:
		p.refuseLegacy(w, r)
	case host == p.cfg.Domain && r.URL.Path == "/":
		p.serveLanding(w, r)
	default:
		publicError(w, http.StatusNotFound)
	}
}

// normalizeHost lowercases a Host header and drops its port and any
// trailing dot.
func normalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// tunnelLabel reports whether host is "<label>.<domain>" with label a
// well-formed key hostname label or friendly name.
func (p *Proxy) tunnelLabel(host string) (string, bool) {
	label, ok := strings.CutSuffix(host, "."+p.cfg.Domain)
	if !ok || !messages.IsHostnameLabel(label) && (messages.CheckName(label) != nil || p.cfg.reservedName(label)) {
		return "", false
	}
	return label, true
}

// Drain begins a graceful stop without stopping anything. The instance
// reports not ready (Ready, /readyz), refuses new client connections and
// public WebSockets (they retry elsewhere), answers every HTTP/1.1 request
// with Connection: close so that keep-alive connections move on, and tells
// its clients to reconnect to another instance. It goes on serving every
// request until Shutdown. Call it when a stop is decided, give the load
// balancer time to notice, then call Shutdown. Calling it again does
// nothing.
func (p *Proxy) Drain() {
	p.mu.Lock()
	if p.draining {
		p.mu.Unlock()
		return
	}
	p.draining = true
	p.drainFlag.Store(true)
	conns := p.localConns()
	p.mu.Unlock()
	p.log.Info("draining")
	for _, c := range conns {
		c.goAway()
	}
}

// Shutdown stops the instance: it drains (see Drain) if Drain was not
// called, lets in-flight exchanges finish until ctx's deadline, gives its
// clients a moment to register elsewhere, and then closes every client
// connection. It returns when everything the proxy started has stopped.
// It does not stop the listeners: the caller's http.Server does, with its
// own Shutdown, which should come first (after Drain) and return before
// this is called: a request still being answered needs the instance's
// subscription to the bus, which Shutdown ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.Drain()
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	// Let in-flight exchanges finish, and give the clients a moment to
	// register on another instance (which replaces their connections here),
	// until ctx ends.
	handoff := time.Now().Add(handoffTimeout)
	if p.ownsBus {
		handoff = time.Now()
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wait:
	for p.pendingCount() > 0 || (time.Now().Before(handoff) && p.heldCount() > 0) {
		select {
		case <-ctx.Done():
			break wait
		case <-tick.C:
		}
	}
	p.cancel()
	p.wg.Wait()
	p.beats.Wait()
	// Connections closing above may have posted their last error replies.
	p.stopOnce.Do(func() { close(p.lanesStop) })
	p.lanesDone.Wait()
	err := p.sub.Unsubscribe(context.WithoutCancel(ctx))
	if p.ownsBus {
		err = errors.Join(err, p.bus.Close())
	}
	return err
}

func (p *Proxy) pendingCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.streams)
	for _, c := range p.conns { // replaced ones, still finishing, included
		n += c.pendingCount()
	}
	return n
}

// track counts a long-lived connection (a client, or a public WebSocket)
// that Shutdown must wait for. It refuses once Shutdown has begun, so that
// no connection starts after Shutdown began waiting.
func (p *Proxy) track() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	p.wg.Add(1)
	return true
}

func (p *Proxy) isDraining() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.draining
}
