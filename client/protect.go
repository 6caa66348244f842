package client

import (
	"fmt"
	"net/netip"

	"github.com/keyhole-tunnel/keyhole/messages"
	"golang.org/x/crypto/bcrypt"
)

// Credential is a user name and password a visitor may present, with HTTP
// Basic authentication, to reach a tunnel that sets [Client.BasicAuth].
type Credential struct {
	// User is 1 to 64 bytes of printable UTF-8, without a colon or any of
	// " \ < > &.
	User string
	// Password is 1 to 72 bytes (bcrypt reads no more).
	Password string
	// Hash, when set instead of Password, is a bcrypt hash made
	// beforehand ("$2a$10$…", as htpasswd -B writes), sent as it is: the
	// password need not be in the client's memory at all. The proxy
	// checks it, and refuses a malformed one or one of a cost over 12.
	Hash string
}

// Check says what is wrong with c, never repeating the password, or
// returns nil.
func (c Credential) Check() error {
	if err := messages.CheckBasicAuthUser(c.User); err != nil {
		return err
	}
	switch {
	case c.Hash != "" && c.Password != "":
		return fmt.Errorf("user %q: set a password or a hash, not both", c.User)
	case c.Hash != "":
		return nil
	case c.Password == "":
		return fmt.Errorf("user %q: empty password", c.User)
	case len(c.Password) > messages.MaxBasicAuthPassword:
		return fmt.Errorf("user %q: password longer than %d bytes", c.User, messages.MaxBasicAuthPassword)
	}
	return nil
}

// hashCost is the bcrypt cost of the hashes the client sends: each new
// visitor credential costs the proxy one comparison at this cost.
const hashCost = bcrypt.DefaultCost

// CheckProtection says what is wrong with the visitor protection of c
// (BasicAuth, AllowIP, DenyIP), or returns nil. Run checks the same before
// it connects; a command can call this first, to say so at start.
func (c *Client) CheckProtection() error {
	if n := len(c.BasicAuth); n > messages.MaxBasicAuthUsers {
		return fmt.Errorf("basic auth: %d users, more than %d", n, messages.MaxBasicAuthUsers)
	}
	for i, cr := range c.BasicAuth {
		if err := cr.Check(); err != nil {
			return fmt.Errorf("basic auth: %w", err)
		}
		for _, prev := range c.BasicAuth[:i] {
			if prev.User == cr.User {
				return fmt.Errorf("basic auth: user %q appears twice", cr.User)
			}
		}
	}
	for _, l := range []struct {
		name string
		list []netip.Prefix
	}{{"AllowIP", c.AllowIP}, {"DenyIP", c.DenyIP}} {
		if n := len(l.list); n > messages.MaxIPRules {
			return fmt.Errorf("%s: %d prefixes, more than %d", l.name, n, messages.MaxIPRules)
		}
		for _, p := range l.list {
			if !p.IsValid() {
				return fmt.Errorf("%s: an invalid prefix", l.name)
			}
		}
	}
	return nil
}

// protection builds the registration's visitor protection: each password
// hashed with bcrypt, which takes tens of milliseconds, so a Run does it
// once and every reconnect sends the same hashes. nil when c protects
// nothing.
func (c *Client) protection() (*messages.Protection, error) {
	if err := c.CheckProtection(); err != nil {
		return nil, err
	}
	p := &messages.Protection{}
	for _, cr := range c.BasicAuth {
		h := []byte(cr.Hash)
		if cr.Hash == "" {
			var err error
			if h, err = bcrypt.GenerateFromPassword([]byte(cr.Password), hashCost); err != nil {
				return nil, fmt.Errorf("basic auth: user %q: %w", cr.User, err)
			}
		}
		p.BasicAuth = append(p.BasicAuth, messages.BasicAuthUser{User: cr.User, Hash: string(h)})
	}
	for _, pfx := range c.AllowIP {
		p.AllowIP = append(p.AllowIP, messages.CanonicalPrefix(pfx))
	}
	for _, pfx := range c.DenyIP {
		p.DenyIP = append(p.DenyIP, messages.CanonicalPrefix(pfx))
	}
	if p.Empty() {
		return nil, nil
	}
	return p, nil
}
