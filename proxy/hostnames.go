package proxy

import (
	"context"
	"errors"
	"hash/maphash"
	"slices"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// A connection is served at its key's hostname and at the friendly names
// its grant lets it ask for. The key's hostname goes to the newest
// connection of that key (Claim); a name goes to the connection with the
// newest grant for it (ClaimOrdered on entries that begin with the
// grant's order), and a connection that loses a name keeps the rest.

var stripeSeed = maphash.MakeSeed()

// lockHostnames takes the registration locks of c's hostnames, in stripe
// order, and returns their unlock.
func (p *Proxy) lockHostnames(c *clientConn) func() {
	idx := make([]int, 0, 1+len(c.names))
	for _, h := range append([]string{c.label}, c.names...) {
		idx = append(idx, int(maphash.String(stripeSeed, h)%uint64(len(p.regMu))))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		p.regMu[i].Lock()
	}
	return func() {
		for _, i := range slices.Backward(idx) {
			p.regMu[i].Unlock()
		}
	}
}

// isGone reports whether c takes no new streams: replaced or closing.
func (c *clientConn) isGone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gone
}

// serves reports whether c is serving host (a key label or a name) now.
func (c *clientConn) serves(host string) bool {
	if host == c.label {
		return true
	}
	if !slices.Contains(c.names, host) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.lost[host]
}

// servesHost reports whether a request for the public Host header host
// is c's to serve: one sent here for a name c has lost since is not (the
// visitor's instance looks the name up again).
func (c *clientConn) servesHost(host string) bool {
	if len(c.names) == 0 {
		return true // its one hostname is all that can reach it
	}
	label, ok := c.p.tunnelLabel(normalizeHost(host))
	return ok && c.serves(label)
}

// attach makes c the holder of its hostname and names on this instance
// and in the registry, and tells the instances holding older connections
// for them, if any, that they were replaced.
func (p *Proxy) attach(ctx context.Context, c *clientConn) error {
	defer p.lockHostnames(c)()
	// Routable before the registry names it: a request published for c
	// as soon as the claim is visible must find it.
	p.mu.Lock()
	p.conns[c.holder] = c
	p.mu.Unlock()
	ttl := p.registryTTL()
	if c.pool {
		if err := p.joinPool(ctx, c); err != nil {
			p.mu.Lock()
			delete(p.conns, c.holder)
			p.mu.Unlock()
			return err
		}
		// A pool's names name the pool, the same entry for every
		// member; none holds them alone, so none releases them.
		for _, name := range c.names {
			cur, won, err := p.reg.ClaimOrdered(ctx, name, c.nameEntry, ttl)
			if err != nil {
				return err
			}
			if holder, _ := parseEntry(cur); !won {
				c.loseName(name, holder)
			}
			p.forgetRoute(name, "")
		}
		return nil
	}
	prevEntry, err := p.reg.Claim(ctx, c.label, c.entry, ttl)
	if err != nil {
		p.mu.Lock()
		delete(p.conns, c.holder)
		p.mu.Unlock()
		return err
	}
	prev, _ := parseEntry(prevEntry)
	p.hold(c.label, c, prev, true)
	for i, name := range c.names {
		cur, won, err := p.reg.ClaimOrdered(ctx, name, c.nameEntry, ttl)
		if err != nil {
			// Undo, as if c had never come: a client told to try again
			// must not find its own stale entries.
			c.names = c.names[:i]
			p.release(c)
			return err
		}
		holder, _ := parseEntry(cur)
		if !won {
			c.loseName(name, holder)
			continue
		}
		p.hold(name, c, holder, false)
	}
	return nil
}

// joinPool makes c a member of its key's pool, here and in the registry.
func (p *Proxy) joinPool(ctx context.Context, c *clientConn) error {
	ttl := p.registryTTL()
	if _, err := p.reg.Claim(ctx, c.label, poolRef(c.label), ttl); err != nil {
		return err
	}
	if err := p.reg.Join(ctx, poolSet(c.label), c.entry, ttl); err != nil {
		return err
	}
	p.mu.Lock()
	e := p.hosts[c.label]
	if e == nil {
		e = &hostEntry{}
		p.hosts[c.label] = e
	}
	if !slices.Contains(e.pool, c) {
		e.pool = append(e.pool, c)
	}
	p.mu.Unlock()
	// The next request looks the members up again, and finds c.
	p.forgetRoute(c.label, "")
	return nil
}

// hold makes c the local holder of host, which the registry names it for
// now, replacing prev there, and tells prev's instance. A replaced
// connection of the same key closes once its streams are done; one that
// held a name keeps its other hostnames.
func (p *Proxy) hold(host string, c *clientConn, prev string, key bool) {
	p.learnRoute(host, route{holder: c.holder, rules: c.policy.encode(), policy: c.policy})
	var old *clientConn
	p.mu.Lock()
	if e := p.hosts[host]; e != nil {
		old, e.conn = e.conn, c
	} else {
		p.hosts[host] = &hostEntry{conn: c}
	}
	p.mu.Unlock()
	if old != nil && old != c {
		if key {
			old.replaced(c.holder)
		} else {
			old.loseName(host, c.holder)
		}
	}
	if prev != "" && prev != c.holder && (old == nil || prev != old.holder) {
		ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
		defer cancel()
		p.announceTakeover(ctx, host, prev, c.holder)
	}
}

// loseName stops c serving name, which successor ("" if unknown) now
// holds with a newer grant, and tells its client why.
func (c *clientConn) loseName(name, successor string) {
	c.mu.Lock()
	if c.lost == nil {
		c.lost = make(map[string]bool)
	}
	already := c.lost[name]
	c.lost[name] = true
	c.mu.Unlock()
	p := c.p
	p.mu.Lock()
	if e := p.hosts[name]; e != nil && e.conn == c {
		delete(p.hosts, name)
	}
	p.mu.Unlock()
	p.forgetRoute(name, c.holder)
	if already {
		return
	}
	c.log.Info("name taken by a newer grant", "name", name, "successor", successor)
	c.control(&messages.Error{Code: messages.CodeNameLost,
		Reason: messages.CloseReason("name " + name + " is now served by another key with a newer grant")})
}

// detach forgets c, releasing its hostnames unless newer connections have
// taken them over.
func (p *Proxy) detach(c *clientConn) {
	defer p.lockHostnames(c)()
	p.mu.Lock()
	delete(p.conns, c.holder)
	p.mu.Unlock()
	if succ := c.successorFor(); succ != "" {
		p.rememberMove(c.holder, succ)
	}
	// Streams handed to the successor while this connection was closing
	// may still have body frames on the way here: they follow the stream
	// from the instance's table now that the connection is gone.
	c.mu.Lock()
	handedOff := c.handedOff
	c.handedOff = nil
	c.mu.Unlock()
	for id, succ := range handedOff {
		p.forwardStream(id, succ)
	}
	p.release(c)
}

// release drops the hostnames c holds here and in the registry. The
// caller holds their locks.
func (p *Proxy) release(c *clientConn) {
	if c.pool {
		p.mu.Lock()
		e := p.hosts[c.label]
		mine := e.holds(c)
		if mine {
			e.pool = slices.DeleteFunc(e.pool, func(m *clientConn) bool { return m == c })
			if len(e.pool) == 0 && e.conn == nil {
				delete(p.hosts, c.label)
			}
		}
		p.mu.Unlock()
		if !mine {
			return
		}
		p.forgetRoute(c.label, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// The pool's marker entry stays for the other members (or
		// expires): they cannot know who leaves last.
		if err := p.reg.Leave(ctx, poolSet(c.label), c.entry); err != nil {
			c.log.Warn("leave pool", "err", err)
		}
		return
	}
	var mine []string
	p.mu.Lock()
	for _, h := range append([]string{c.label}, c.names...) {
		if e := p.hosts[h]; e != nil && e.conn == c {
			delete(p.hosts, h)
			mine = append(mine, h)
		}
	}
	p.mu.Unlock()
	if len(mine) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, h := range mine {
		p.forgetRoute(h, c.holder)
		entry := c.nameEntry
		if h == c.label {
			entry = c.entry
		}
		if err := p.reg.Release(ctx, h, entry); err != nil {
			c.log.Warn("release hostname", "host", h, "err", err)
		}
	}
}

// announce makes sure the registry names c for its hostnames. For the
// key's hostname it extends c's entry, or claims the hostname again when
// the entry has vanished (the registry restarted, or the entry expired
// while the registry was unreachable) or names an older connection (a
// Redis failover lost c's claim, and the replica it promoted still had
// the previous holder's); when a newer connection holds it, c has been
// replaced without hearing of it, and is treated so. Each name is claimed
// again in the same way, against the newest grant: one c lost comes back
// to it once the newer grant's connection has gone.
func (c *clientConn) announce(ctx context.Context) error {
	c.mu.Lock()
	gone := c.gone
	c.mu.Unlock()
	if gone {
		return nil
	}
	reg, ttl := c.p.reg, c.p.registryTTL()
	if c.pool {
		if ok, err := reg.Refresh(ctx, c.label, poolRef(c.label), ttl); err != nil || !ok {
			if err == nil {
				_, err = reg.Claim(ctx, c.label, poolRef(c.label), ttl)
			}
			if err != nil {
				return err
			}
		}
		if err := reg.Join(ctx, poolSet(c.label), c.entry, ttl); err != nil {
			return err
		}
	} else if err := c.announceKey(ctx); errors.Is(err, errReplaced) {
		return nil
	} else if err != nil {
		return err
	}
	return c.announceNames(ctx)
}

// announceKey is announce for the key's hostname of a connection that is
// not pooled.
func (c *clientConn) announceKey(ctx context.Context) error {
	p, reg, ttl := c.p, c.p.reg, c.p.registryTTL()
	ok, err := reg.Refresh(ctx, c.label, c.entry, ttl)
	if err != nil {
		return err
	}
	if !ok {
		v, err := reg.Lookup(ctx, c.label)
		holder, _ := parseEntry(v)
		switch {
		case errors.Is(err, bus.ErrNotFound):
			if _, err := reg.Claim(ctx, c.label, c.entry, ttl); err != nil {
				return err
			}
		case err != nil:
			return err
		case holder == c.holder:
		case newerHolder(c.holder, holder):
			c.log.Warn("registry named an older connection; claiming the hostname again", "older", holder)
			if _, err := reg.Claim(ctx, c.label, c.entry, ttl); err != nil {
				return err
			}
			p.announceTakeover(ctx, c.label, holder, c.holder)
		default:
			c.replaced(holder)
			return errReplaced
		}
	}
	return nil
}

// errReplaced stops announce: a connection found replaced announces
// nothing more.
var errReplaced = errors.New("replaced")

// announceNames is announce for the friendly names.
func (c *clientConn) announceNames(ctx context.Context) error {
	p, reg, ttl := c.p, c.p.reg, c.p.registryTTL()
	var errs []error
	for _, name := range c.names {
		if c.serves(name) {
			if ok, err := reg.Refresh(ctx, name, c.nameEntry, ttl); ok || err != nil {
				errs = append(errs, err)
				continue
			}
		}
		cur, won, err := reg.ClaimOrdered(ctx, name, c.nameEntry, ttl)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		holder, _ := parseEntry(cur)
		if !won {
			c.loseName(name, holder)
			continue
		}
		c.mu.Lock()
		regained := c.lost[name]
		delete(c.lost, name)
		c.mu.Unlock()
		if regained {
			c.log.Info("name served again", "name", name)
		}
		if c.pool {
			p.forgetRoute(name, "")
			continue
		}
		p.hold(name, c, holder, false)
	}
	return errors.Join(errs...)
}
