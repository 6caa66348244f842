package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// RevocationKind says what a [Revocation] names.
type RevocationKind string

// What can be revoked.
const (
	RevokeKey   RevocationKind = "key"   // a client key, by its hostname label
	RevokeName  RevocationKind = "name"  // a friendly name, whoever holds a grant for it
	RevokeToken RevocationKind = "token" // an access token, by its ID (jti)
)

// A Revocation withdraws a key, a name or an access token on every
// instance sharing the registry: connections it covers are closed within a
// second, and registrations it covers are refused until it lapses.
type Revocation struct {
	Kind  RevocationKind
	Value string
	// Until is when the revocation lapses. Zero means when the revoked
	// token would have expired, for a token whose ID says so (the IDs
	// IssueToken makes do), and otherwise never.
	Until time.Time
}

// foreverTTL stands for "never lapses": the registry wants a TTL.
const foreverTTL = 100 * 365 * 24 * time.Hour

// revokedName is the registry entry that records a revocation.
func revokedName(kind RevocationKind, value string) string {
	return "revoked:" + string(kind) + ":" + value
}

// normalize checks r and puts its value in the form connections are
// matched by.
func (r *Revocation) normalize(domain string) error {
	v := strings.ToLower(strings.TrimSpace(r.Value))
	switch r.Kind {
	case RevokeKey:
		v = strings.TrimSuffix(v, "."+domain)
		if !messages.IsHostnameLabel(v) {
			return fmt.Errorf("%q is not a key's hostname or label", r.Value)
		}
	case RevokeName:
		v = strings.TrimSuffix(v, "."+domain)
		if err := messages.CheckName(v); err != nil {
			return err
		}
	case RevokeToken:
		v = strings.TrimSpace(r.Value) // IDs are case-sensitive
		if v == "" || len(v) > 256 {
			return errors.New("a token ID of 1 to 256 characters is required")
		}
	default:
		return fmt.Errorf("unknown kind %q: want key, name or token", r.Kind)
	}
	r.Value = v
	return nil
}

// Revoke records r in the registry, where every instance checks
// registrations against it, and announces it to every live instance,
// which closes the connections it covers. With the in-memory bus "every
// instance" is this one.
func (p *Proxy) Revoke(ctx context.Context, r Revocation) error {
	if err := r.normalize(p.cfg.Domain); err != nil {
		return err
	}
	ttl := foreverTTL
	if r.Until.IsZero() && r.Kind == RevokeToken {
		r.Until, _ = TokenIDExpiry(r.Value)
	}
	if !r.Until.IsZero() {
		if ttl = time.Until(r.Until); ttl <= 0 {
			return fmt.Errorf("revocation would end in the past (%s)", r.Until.Format(time.RFC3339))
		}
	}
	until := "never"
	if !r.Until.IsZero() {
		until = r.Until.UTC().Format(time.RFC3339)
	}
	if _, err := p.reg.Claim(ctx, revokedName(r.Kind, r.Value), until, ttl); err != nil {
		return fmt.Errorf("record the revocation: %w", err)
	}
	p.log.Info("revoked", "kind", r.Kind, "value", r.Value, "until", until)
	instances, err := p.reg.Instances(ctx)
	if err != nil {
		p.log.Warn("revocation recorded, but the instances are unknown: each refuses reconnections, connections stay", "err", err)
	}
	if !slices.Contains(instances, p.instance) {
		instances = append(instances, p.instance)
	}
	payload := messages.Encode(&messages.Revoke{Kind: string(r.Kind), Value: r.Value})
	var errs []error
	for _, inst := range instances {
		if _, err := p.send(ctx, inst, payload); err != nil {
			errs = append(errs, fmt.Errorf("announce to %s: %w", inst, err))
		}
	}
	return errors.Join(errs...)
}

// onRevoke closes the connections on this instance that a revocation
// covers.
func (p *Proxy) onRevoke(m *messages.Revoke) {
	kind := RevocationKind(m.Kind)
	p.mu.Lock()
	conns := make([]*clientConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		if c.revokedBy(kind, m.Value) {
			reason := revokedReason(kind, m.Value)
			c.log.Info("connection revoked", "reason", reason)
			c.requestClose(websocket.StatusPolicyViolation, reason)
		}
	}
}

func (c *clientConn) revokedBy(kind RevocationKind, value string) bool {
	switch kind {
	case RevokeKey:
		return c.label == value
	case RevokeName:
		return slices.Contains(c.names, value)
	case RevokeToken:
		return c.tokenID != "" && c.tokenID == value
	}
	return false
}

func revokedReason(kind RevocationKind, value string) string {
	switch kind {
	case RevokeKey:
		return "key revoked by the operator"
	case RevokeName:
		return "name " + value + " revoked by the operator"
	default:
		return "token revoked by the operator"
	}
}

// checkRevoked returns the reason a registration is refused if the
// registry records a revocation of its key, names or token, or "".
func (p *Proxy) checkRevoked(ctx context.Context, label string, names []string, tokenID string) (string, error) {
	type item struct {
		kind  RevocationKind
		value string
	}
	items := []item{{RevokeKey, label}}
	for _, n := range names {
		items = append(items, item{RevokeName, n})
	}
	if tokenID != "" {
		items = append(items, item{RevokeToken, tokenID})
	}
	for _, it := range items {
		_, err := p.reg.Lookup(ctx, revokedName(it.kind, it.value))
		switch {
		case err == nil:
			return revokedReason(it.kind, it.value), nil
		case !errors.Is(err, bus.ErrNotFound):
			return "", err
		}
	}
	return "", nil
}
