package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
)

// busOpTimeout bounds each bus or registry call made while a public caller
// waits (the lookup and the publish of its request). An unreachable bus
// then costs the caller a 503 within this bound rather than a hang.
const busOpTimeout = 2 * time.Second

// handoffTimeout bounds how long Shutdown waits, once nothing is in flight,
// for its clients to register on another instance, so the hostnames never
// go offline during a rolling deploy. It is skipped when the proxy runs its
// own in-memory bus: then there is no other instance to move to.
const handoffTimeout = 5 * time.Second

// ErrDraining is returned by [Proxy.Ready] once Shutdown has begun.
var ErrDraining = errors.New("proxy: draining")

// Ready reports whether the instance should receive traffic: nil, or
// [ErrDraining] once Shutdown has begun, or the error of a bus that
// implements [bus.Pinger] (such as the Redis bus) and cannot reach its
// server. Readiness probes (/readyz) call it; ctx bounds the ping.
func (p *Proxy) Ready(ctx context.Context) error {
	if p.isDraining() {
		return ErrDraining
	}
	if pg, ok := p.bus.(bus.Pinger); ok {
		if err := pg.Ping(ctx); err != nil {
			return fmt.Errorf("proxy: bus unreachable: %w", err)
		}
	}
	return nil
}

// Reannounce claims again, in the registry, every hostname whose client
// this instance holds. Call it when the bus has reconnected to a server
// that may have lost the registry (a restarted Redis); the Redis bus's
// OnReconnect hook is the place. A hostname that another connection has
// claimed meanwhile is left to it, and the connection here is treated as
// replaced. The holder's periodic refresh would restore the entries too,
// but only within a ping interval; Reannounce does it at once.
//
// A claim that fails (a Redis that has only just come back may refuse for
// a moment) is tried again every reannounceRetry until it succeeds or ctx
// ends; Reannounce then returns the errors of the claims still failing.
// The instance's heartbeat is renewed first, so the instance is listed at
// once too.
func (p *Proxy) Reannounce(ctx context.Context) error {
	p.mu.Lock()
	conns := p.localConns()
	p.mu.Unlock()
	if err := p.reg.Heartbeat(ctx, p.instance, 3*p.cfg.Ping); err != nil {
		p.log.Warn("registry heartbeat", "err", err)
	}
	ok, failing := 0, map[*clientConn]error{}
	for {
		for _, c := range conns {
			if err := p.reannounce(ctx, c); err != nil {
				failing[c] = err
				continue
			}
			delete(failing, c)
			ok++
		}
		if len(failing) == 0 || ctx.Err() != nil {
			break
		}
		conns = conns[:0]
		for c := range failing {
			conns = append(conns, c)
		}
		select {
		case <-ctx.Done():
		case <-time.After(reannounceRetry):
		}
	}
	var errs []error
	for c, err := range failing {
		errs = append(errs, fmt.Errorf("%s: %w", c.label, err))
	}
	p.log.Info("re-announced hostnames", "count", ok, "failed", len(errs))
	return errors.Join(errs...)
}

// reannounceRetry is how soon Reannounce tries a failed claim again.
const reannounceRetry = 100 * time.Millisecond

func (p *Proxy) reannounce(ctx context.Context, c *clientConn) error {
	// Serialized with attach and detach, so an entry is never claimed for a
	// connection that has just been released.
	defer p.lockHostnames(c)()
	p.mu.Lock()
	current := p.hosts[c.label].holds(c)
	p.mu.Unlock()
	if !current {
		return nil
	}
	return c.announce(ctx)
}

// newHolder names a client connection attached to instance at t. The name
// orders connections by when they registered: a fixed-width hex time, then
// randomness.
func newHolder(instance string, t time.Time) string {
	return fmt.Sprintf("%s/%016x%s", instance, uint64(t.UnixNano()), randomToken(4))
}

// newerHolder reports whether connection a registered after connection b,
// by the times in their names; ties, and names not made by newHolder, go
// by byte order so that every instance reaches the same answer.
func newerHolder(a, b string) bool {
	_, sa, _ := strings.Cut(a, "/")
	_, sb, _ := strings.Cut(b, "/")
	if sa != sb {
		return sa > sb
	}
	return a > b
}

// publish is the proxy's one way onto the bus: it records the outcome in
// the metrics.
func (p *Proxy) publish(ctx context.Context, topic string, payload []byte) (int, error) {
	n, err := p.bus.Publish(ctx, topic, payload)
	p.metrics.published(n, err)
	return n, err
}

// heldCount is the number of client connections on this instance that no
// newer connection has replaced yet.
func (p *Proxy) heldCount() int {
	p.mu.Lock()
	conns := p.localConns()
	p.mu.Unlock()
	n := 0
	for _, c := range conns {
		c.mu.Lock()
		if !c.gone {
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// ownsConnName reports whether a connection name (a registry holder) was
// given out by this instance.
func (p *Proxy) ownsConnName(conn string) bool {
	return strings.HasPrefix(conn, p.instance+"/")
}
