package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// admission is what a verified registration is allowed: checked once, at
// registration, and fixed for the connection's life.
type admission struct {
	label   string
	claims  messages.RegistrationClaims
	grant   *Grant   // the access token's, nil without one
	names   []string // friendly names granted and asked for
	order   string   // the grant's order, for the names' entries
	policy  *visitorPolicy
	tokenID string // the access token's ID, if it has one
}

// admit decides what reg may have, or the reason (for the client) it is
// refused; an error means the registry could not be asked.
func (p *Proxy) admit(ctx context.Context, reg *messages.Registration) (*admission, string, error) {
	a := &admission{label: reg.Label, claims: reg.Claims}
	grant, reason := p.checkToken(reg)
	if reason != "" {
		return nil, reason, nil
	}
	a.grant = grant
	if grant != nil {
		a.tokenID = grant.ID
	}
	if !p.permits(reg.Label) {
		return nil, refusedByAccess, nil
	}
	names, issued, reason := p.grantedNames(reg, grant)
	if reason != "" {
		return nil, reason, nil
	}
	a.names = names
	if len(names) > 0 {
		a.order = grantOrder(issued)
	}
	policy, err := newVisitorPolicy(&reg.Claims)
	if err != nil {
		return nil, err.Error(), nil
	}
	a.policy = policy
	if reason := p.remotePortRefusal(&reg.Claims); reason != "" {
		return nil, reason, nil
	}
	reason, err = p.checkRevoked(ctx, a.label, a.names, a.tokenID)
	if err != nil || reason != "" {
		return nil, reason, err
	}
	if reason, err = p.checkPool(ctx, a.label, reg.Claims.Pool); err != nil || reason != "" {
		return nil, reason, err
	}
	return a, "", nil
}

// grantedNames checks the friendly names reg asks for against what its
// token grants, and returns them with when the grant was issued.
func (p *Proxy) grantedNames(reg *messages.Registration, grant *Grant) ([]string, time.Time, string) {
	asked := reg.Claims.Names
	if len(asked) == 0 {
		return nil, time.Time{}, ""
	}
	if len(asked) > messages.MaxNames {
		return nil, time.Time{}, fmt.Sprintf("more than %d names", messages.MaxNames)
	}
	var names []string
	for _, n := range asked {
		if err := messages.CheckName(n); err != nil {
			return nil, time.Time{}, err.Error()
		}
		if p.cfg.reservedName(n) {
			return nil, time.Time{}, fmt.Sprintf("name %q is reserved", n)
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if grant == nil {
		return nil, time.Time{}, "names need an access token that grants them"
	}
	granted, issued := grant.Names, grant.IssuedAt
	for _, n := range names {
		if !slices.Contains(granted, n) {
			return nil, time.Time{}, fmt.Sprintf("name %q is not granted by the token", n)
		}
	}
	return names, issued, ""
}

// checkToken checks what reg presents against what the proxy requires:
// with TokenKeys, an access token they verify (or the shared token, when
// RegistrationToken is set too); with RegistrationToken alone, the shared
// token. It returns the access token's grant, if any, or the reason the
// registration is refused.
func (p *Proxy) checkToken(reg *messages.Registration) (*Grant, string) {
	token := reg.Claims.Token
	shared := p.cfg.RegistrationToken
	if shared != "" && constantTimeEqual(token, shared) {
		return nil, ""
	}
	keys := p.cfg.TokenKeys
	if keys == nil || !IsJWT(token) {
		switch {
		case keys != nil && token == "":
			return nil, "an access token is required"
		case keys != nil:
			return nil, ErrTokenMalformed.Error()
		case shared != "":
			return nil, "a valid registration token is required"
		case IsJWT(token):
			// Without keys to check it with, a token grants nothing; but
			// a client that sends one expects it to count.
			return nil, ErrNoTokenKeys.Error()
		}
		return nil, ""
	}
	grant, err := keys.Verify(token, p.cfg.Domain, reg.Label, time.Now())
	if err != nil {
		return nil, err.Error()
	}
	return grant, ""
}

// rate is the tunnel's request rate and burst: the proxy's, or its
// token's where lower.
func (a *admission) rate(cfg *Config) (float64, int) {
	r, b := cfg.Rate, cfg.Burst
	if g := a.grant; g != nil && g.Rate > 0 && (r <= 0 || g.Rate < r) {
		r, b = g.Rate, g.Burst
		if cfg.Burst > 0 && (b <= 0 || b > cfg.Burst) {
			b = cfg.Burst
		}
	}
	return r, b
}

// maxBody is the tunnel's body cap (0: none), and whether it is the
// token's, lower than the proxy's, so that the holder must count bodies
// itself (the visitor's instance applies the proxy's).
func (a *admission) maxBody(cfg *Config) (int64, bool) {
	m := int64(cfg.MaxBody)
	if g := a.grant; g != nil && g.MaxBody > 0 && (m <= 0 || g.MaxBody < m) {
		return g.MaxBody, true
	}
	return m, false
}

// maxStreams is how many streams the tunnel may have in flight.
func (a *admission) maxStreams(cfg *Config) int {
	if g := a.grant; g != nil && g.Streams > 0 && g.Streams < cfg.maxPending {
		return g.Streams
	}
	return cfg.maxPending
}

// nameEntry is the registry value of the connection's names: the holder,
// or for a pool the pool, which every member names alike.
func (a *admission) nameEntry(holder, rules string) string {
	if a.claims.Pool {
		return entryValue(a.order, poolRef(a.label), "")
	}
	return entryValue(a.order, holder, rules)
}

// checkPool refuses a registration that would mix pooled and unpooled
// connections of one key: the reason, or "".
func (p *Proxy) checkPool(ctx context.Context, label string, pool bool) (string, error) {
	v, err := p.reg.Lookup(ctx, label)
	if errors.Is(err, bus.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	holder, _ := parseEntry(v)
	pooled := strings.HasPrefix(holder, poolMarker)
	switch {
	case pool && !pooled:
		return "this key's hostname is served by a client without --pool; start every client of the key with --pool", nil
	case !pool && pooled:
		members, err := p.reg.Members(ctx, poolSet(label))
		if err != nil {
			return "", err
		}
		if len(members) > 0 {
			return "this key's hostname is served by a pool (clients started with --pool); start this client with --pool too", nil
		}
	}
	return "", nil
}
