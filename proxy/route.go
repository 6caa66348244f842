package proxy

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// Routing by directory: every instance subscribes to exactly one topic,
// its own (bus.InstanceTopic), and everything for it arrives there: frames
// for the client connections it holds (Envelopes) and for the visitor
// streams it serves (Replies). An instance serving a visitor looks up which
// connection holds the hostname (the registry, through a short-lived
// cache), and that connection's name says which instance to send to. An
// instance sending to itself hands the payload to its own handler: the
// same code as a delivery from the bus, without the round trip.

// instanceOf returns the instance part of a connection name
// "<instance>/<token>".
func instanceOf(conn string) string {
	inst, _, _ := strings.Cut(conn, "/")
	return inst
}

// onMessage handles one payload published to this instance's topic, or
// handed to it by this instance itself.
func (p *Proxy) onMessage(payload []byte) {
	t, err := messages.Peek(payload)
	if err != nil {
		p.log.Warn("bad message on bus", "err", err)
		return
	}
	switch t {
	case messages.TypeEnvelope:
		replyTo, conn, frame, err := messages.OpenEnvelope(payload)
		if err != nil {
			p.log.Warn("bad envelope on bus", "err", err)
			return
		}
		p.onClientFrame(replyTo, conn, frame)
	case messages.TypeReply:
		conn, frame, err := messages.OpenReply(payload)
		if err != nil {
			p.log.Warn("bad reply on bus", "err", err)
			return
		}
		p.onStreamFrame(conn, frame)
	case messages.TypeRevoke:
		m, err := messages.Decode(payload)
		if err != nil {
			p.log.Warn("bad revocation on bus", "err", err)
			return
		}
		p.onRevoke(m.(*messages.Revoke))
	default:
		p.log.Warn("unexpected message on bus", "type", t)
	}
}

// send delivers payload to instance and reports how many received it:
// this instance's own handler at once, or another's over the bus. The
// caller may reuse payload once send returns.
func (p *Proxy) send(ctx context.Context, instance string, payload []byte) (int, error) {
	if instance == p.instance {
		p.onMessage(payload)
		return 1, nil
	}
	return p.publish(ctx, bus.InstanceTopic(instance), payload)
}

// post is send without waiting: payloads with the same key keep their
// order, and done (if set) gets the outcome once the payload has left.
// Over a bus that can batch (Redis), what waits is published together, a
// round trip for many frames rather than each. Payloads from stream.Buf
// are released after done.
func (p *Proxy) post(instance string, payload []byte, key uint64, done func(n int, err error)) {
	if instance == p.instance || p.lanes == nil {
		ctx, cancel := context.WithTimeout(p.ctx, writeTimeout)
		n, err := p.send(ctx, instance, payload)
		cancel()
		stream.Release(payload)
		if done != nil {
			done(n, err)
		}
		return
	}
	p.lanes[key%uint64(len(p.lanes))].push(outItem{topic: bus.InstanceTopic(instance), payload: payload, done: done})
}

// streamKey is the lane key of a stream's frames.
func streamKey(id messages.ID) uint64 {
	return uint64(id[0]) | uint64(id[1])<<8 | uint64(id[2])<<16 | uint64(id[3])<<24
}

// lanes is how many publishing goroutines an instance runs over a bus that
// batches; each keeps its payloads in order.
const lanes = 4

// Bounds of one lane's batch.
const (
	laneBatch      = 256
	laneBatchBytes = 1 << 20
	// laneMaxBytes bounds what waits in one lane. Flow control keeps it far
	// below this; past it a payload is dropped and its sender told.
	laneMaxBytes = 64 << 20
)

type outItem struct {
	topic   string
	payload []byte
	done    func(int, error)
}

// lane publishes what is posted to it, in order, a batch per round trip.
type lane struct {
	p  *Proxy
	b  bus.Batcher
	mu sync.Mutex
	q  []outItem
	sz int
	// ready is signalled when the queue gains items.
	ready chan struct{}
}

func (l *lane) push(it outItem) {
	l.mu.Lock()
	if l.sz+len(it.payload) > laneMaxBytes {
		l.mu.Unlock()
		l.p.metrics.drop(dropOutbox)
		stream.Release(it.payload)
		if it.done != nil {
			it.done(0, errLaneFull)
		}
		return
	}
	l.q = append(l.q, it)
	l.sz += len(it.payload)
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

var errLaneFull = errors.New("proxy: too much waiting to be published")

// run publishes until stop is closed, then what is left.
func (l *lane) run(stop <-chan struct{}) {
	var batch []outItem
	var msgs []bus.Message
	for {
		select {
		case <-l.ready:
		case <-stop:
			for l.flush(&batch, &msgs) {
			}
			return
		}
		for l.flush(&batch, &msgs) {
		}
	}
}

// flush publishes one batch and reports whether there was one.
func (l *lane) flush(batch *[]outItem, msgs *[]bus.Message) bool {
	l.mu.Lock()
	n, size := 0, 0
	for n < len(l.q) && n < laneBatch && (n == 0 || size+len(l.q[n].payload) <= laneBatchBytes) {
		size += len(l.q[n].payload)
		n++
	}
	*batch = append((*batch)[:0], l.q[:n]...)
	clear(l.q[:n])
	l.q = l.q[n:]
	if len(l.q) == 0 {
		l.q = nil
	}
	l.sz -= size
	l.mu.Unlock()
	if n == 0 {
		return false
	}
	*msgs = (*msgs)[:0]
	for _, it := range *batch {
		*msgs = append(*msgs, bus.Message{Topic: it.topic, Payload: it.payload})
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	counts, err := l.b.PublishBatch(ctx, *msgs)
	cancel()
	for i, it := range *batch {
		var c int
		if i < len(counts) {
			c = counts[i]
		}
		l.p.metrics.published(c, err)
		stream.Release(it.payload)
		if it.done != nil {
			it.done(c, err)
		}
	}
	clear(*batch)
	return true
}

// The lookup cache keeps the registry off the hot path. An entry lives
// routeTTL at most, and goes at once when a send to its holder finds no
// one, or a reply shows the stream moved: the holder's replies name the
// connection they come from.
const (
	routeTTL  = time.Second
	maxRoutes = 64 << 10
)

type route struct {
	holder string
	rules  string         // the entry's visitor rules, as encoded
	policy *visitorPolicy // rules, decoded
	pool   []route        // a pool's members; holder is then its poolRef
	at     time.Time
}

// member picks the member of a pool that gets a new stream: the less
// loaded of two at random (by the streams this instance has in flight to
// each), skipping members on this instance that have gone. For a hostname
// that is not pooled it is r itself; ok is false when no member is left.
func (p *Proxy) member(r route) (route, bool) {
	if !strings.HasPrefix(r.holder, poolMarker) {
		return r, true
	}
	live := make([]route, 0, len(r.pool))
	for _, m := range r.pool {
		if instanceOf(m.holder) == p.instance {
			// Known here at once; a member elsewhere that has gone is
			// answered for by its instance, and the request tried again.
			p.mu.Lock()
			c := p.conns[m.holder]
			p.mu.Unlock()
			if c == nil || c.isGone() {
				continue
			}
		}
		live = append(live, m)
	}
	switch len(live) {
	case 0:
		return route{}, false
	case 1:
		return live[0], true
	}
	i := rand.IntN(len(live))
	j := (i + 1 + rand.IntN(len(live)-1)) % len(live)
	p.mu.Lock()
	load := func(m route) int {
		if cb := p.connBudgets[m.holder]; cb != nil {
			return cb.refs
		}
		return 0
	}
	if load(live[j]) < load(live[i]) {
		i = j
	}
	p.mu.Unlock()
	return live[i], true
}

// lookup finds the connection holding label and the rules its visitors
// must pass, or the status to answer.
func (p *Proxy) lookup(ctx context.Context, label string) (route, int) {
	now := time.Now()
	p.routeMu.Lock()
	r, ok := p.routes[label]
	p.routeMu.Unlock()
	if ok && now.Sub(r.at) < routeTTL {
		return r, 0
	}
	ctx, cancel := context.WithTimeout(ctx, busOpTimeout)
	defer cancel()
	v, err := p.reg.Lookup(ctx, label)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		p.forgetRoute(label, "")
		if !messages.IsHostnameLabel(label) {
			// A name nobody is granted and connected for: nothing here.
			return route{}, http.StatusNotFound
		}
		return route{}, http.StatusBadGateway // the tunnel is offline
	case err != nil:
		p.log.Warn("registry lookup", "err", err)
		return route{}, http.StatusServiceUnavailable
	}
	var nr route
	if holder, _ := parseEntry(v); strings.HasPrefix(holder, poolMarker) {
		members, err := p.reg.Members(ctx, poolSet(holder[len(poolMarker):]))
		if err != nil {
			p.log.Warn("registry lookup", "err", err)
			return route{}, http.StatusServiceUnavailable
		}
		nr.holder = holder
		for _, m := range members {
			mr, err := p.routeOf(m, r.pool)
			if err != nil {
				p.log.Warn("registry entry with unreadable visitor rules", "host", label, "err", err)
				continue
			}
			nr.pool = append(nr.pool, mr)
		}
	} else {
		var prev []route
		if ok {
			prev = []route{r}
		}
		if nr, err = p.routeOf(v, prev); err != nil {
			// Never serve a tunnel without the rules its client declared.
			p.log.Warn("registry entry with unreadable visitor rules", "host", label, "err", err)
			return route{}, http.StatusServiceUnavailable
		}
	}
	p.learnRoute(label, nr)
	return nr, 0
}

// routeOf reads one connection's registry entry, decoding its rules
// unless one of known has the same.
func (p *Proxy) routeOf(v string, known []route) (route, error) {
	holder, rules := parseEntry(v)
	nr := route{holder: holder, rules: rules}
	for _, k := range known {
		if k.rules == rules {
			nr.policy = k.policy
			return nr, nil
		}
	}
	var err error
	nr.policy, err = decodeVisitorPolicy(rules)
	return nr, err
}

// learnRoute records the connection that serves label.
func (p *Proxy) learnRoute(label string, r route) {
	p.routeMu.Lock()
	defer p.routeMu.Unlock()
	if _, ok := p.routes[label]; !ok && len(p.routes) >= maxRoutes {
		// Full: drop an arbitrary eighth, rather than keep an order.
		n := maxRoutes / 8
		for k := range p.routes {
			if n--; n < 0 {
				break
			}
			delete(p.routes, k)
		}
	}
	r.at = time.Now()
	p.routes[label] = r
}

// forgetRoute drops label's cached holder, if it is holder ("" for any).
func (p *Proxy) forgetRoute(label, holder string) {
	p.routeMu.Lock()
	defer p.routeMu.Unlock()
	if r, ok := p.routes[label]; ok && (holder == "" || r.holder == holder || slices.ContainsFunc(r.pool, func(m route) bool { return m.holder == holder })) {
		delete(p.routes, label)
	}
}

// movedTTL is how long an instance remembers where a replaced connection
// went after it closed: a request published by an instance whose cache
// still named it is passed on rather than refused.
const movedTTL = 10 * time.Second

type moved struct {
	successor string
	until     time.Time
}

// rememberMove records that conn, now closed, was replaced by successor.
func (p *Proxy) rememberMove(conn, successor string) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, m := range p.moved {
		if now.After(m.until) {
			delete(p.moved, k)
		}
	}
	p.moved[conn] = moved{successor: successor, until: now.Add(movedTTL)}
}

// movedTo returns where conn went, if it closed having been replaced
// lately.
func (p *Proxy) movedTo(conn string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m, ok := p.moved[conn]; ok && time.Now().Before(m.until) {
		return m.successor
	}
	return ""
}

// forwardStream records that the frames of stream id that still come here
// go on to successor: it was handed there after its connection closed.
func (p *Proxy) forwardStream(id messages.ID, successor string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forwards[id] = moved{successor: successor, until: time.Now().Add(movedTTL)}
}

// forwarded returns where a frame of a forwarded stream goes, and whether
// it is the visitor side's last.
func (p *Proxy) forwarded(frame []byte) (successor string, last bool) {
	id, ok := messages.PeekID(frame)
	if !ok {
		return "", false
	}
	p.mu.Lock()
	f, ok := p.forwards[id]
	p.mu.Unlock()
	if !ok || time.Now().After(f.until) {
		return "", false
	}
	m, err := messages.Decode(frame)
	return f.successor, err == nil && endsVisitorSide(m)
}

func (p *Proxy) forgetForward(id messages.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.forwards, id)
	for k, f := range p.forwards {
		if time.Now().After(f.until) {
			delete(p.forwards, k)
		}
	}
}

// heartbeats keeps this instance in the registry's list of live instances
// until ctx ends.
func (p *Proxy) heartbeats(ctx context.Context) {
	ttl := 3 * p.cfg.Ping
	beat := func() {
		hctx, cancel := context.WithTimeout(ctx, busOpTimeout)
		defer cancel()
		if err := p.reg.Heartbeat(hctx, p.instance, ttl); err != nil && ctx.Err() == nil {
			p.log.Warn("registry heartbeat", "err", err)
		}
	}
	beat()
	t := time.NewTicker(p.cfg.Ping)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			beat()
		}
	}
}
