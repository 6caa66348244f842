package proxy

import (
	"context"
	"errors"
	"time"
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

// Revoke records r in the registry and announces it to every instance.
func (p *Proxy) Revoke(ctx context.Context, r Revocation) error {
	return errors.New("revocation: not implemented yet")
}
