package messages

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Protection is what a client declares, in its signed registration, about
// who may visit its tunnel. The proxy enforces it before anything of a
// visitor's request reaches the tunnel: at the instance the visitor
// reaches, whichever holds the client. A nil or empty Protection admits
// everyone.
//
// The lists are checked in this order: an address in DenyIP is refused
// (403), then, when AllowIP has any prefix, an address in none of them
// (403), then, when BasicAuth has any user, a visitor who does not present
// one of them with the right password (401).
type Protection struct {
	// BasicAuth lists the users who may visit, each with a bcrypt hash of
	// the password: the password itself never leaves the client. At most
	// [MaxBasicAuthUsers].
	BasicAuth []BasicAuthUser `json:"basic_auth,omitempty"`
	// AllowIP, when it has any prefix, admits only visitors whose address
	// is in one of them. At most [MaxIPRules].
	AllowIP []netip.Prefix `json:"allow_ip,omitempty"`
	// DenyIP refuses visitors whose address is in any of them, even when
	// AllowIP covers it. At most [MaxIPRules].
	DenyIP []netip.Prefix `json:"deny_ip,omitempty"`
}

// BasicAuthUser is one user a [Protection] lets in.
type BasicAuthUser struct {
	// User is the user name: see [CheckBasicAuthUser].
	User string `json:"user"`
	// Hash is the bcrypt hash of the password ("$2a$10$…", 60 bytes),
	// with a cost from [MinBcryptCost] to [MaxBcryptCost].
	Hash string `json:"hash"`
}

// Empty reports whether p protects nothing: it is nil, or every list is
// empty.
func (p *Protection) Empty() bool {
	return p == nil || len(p.BasicAuth) == 0 && len(p.AllowIP) == 0 && len(p.DenyIP) == 0
}

// Check says what is wrong with p, in words fit for the client, or returns
// nil. The proxy refuses a registration whose Protection fails it.
func (p *Protection) Check() error {
	if p == nil {
		return nil
	}
	if n := len(p.BasicAuth); n > MaxBasicAuthUsers {
		return fmt.Errorf("basic auth: %d users, more than %d", n, MaxBasicAuthUsers)
	}
	for i, u := range p.BasicAuth {
		if err := CheckBasicAuthUser(u.User); err != nil {
			return fmt.Errorf("basic auth: %w", err)
		}
		if err := CheckBcryptHash(u.Hash); err != nil {
			return fmt.Errorf("basic auth user %q: %w", u.User, err)
		}
		if slices.ContainsFunc(p.BasicAuth[:i], func(v BasicAuthUser) bool { return v.User == u.User }) {
			return fmt.Errorf("basic auth user %q appears twice", u.User)
		}
	}
	for _, l := range []struct {
		name string
		list []netip.Prefix
	}{{"allow_ip", p.AllowIP}, {"deny_ip", p.DenyIP}} {
		if n := len(l.list); n > MaxIPRules {
			return fmt.Errorf("%s: %d prefixes, more than %d", l.name, n, MaxIPRules)
		}
		for _, pfx := range l.list {
			if !pfx.IsValid() {
				return fmt.Errorf("%s: an invalid prefix", l.name)
			}
			if c := CanonicalPrefix(pfx); c != pfx {
				return fmt.Errorf("%s: %s is not in canonical form; write %s", l.name, pfx, c)
			}
		}
	}
	return nil
}

// CheckBasicAuthUser says what is wrong with a basic auth user name, or
// returns nil: it must be 1 to [MaxBasicAuthUserLen] bytes of printable
// UTF-8 (letters, digits, punctuation, symbols, the ASCII space), without
// a colon, which RFC 7617 splits user and password at, and without any of
// " \ < > &, which JSON would escape: a name takes as many bytes in the
// registration as it has, so the largest Protection fits in [MaxJWS].
func CheckBasicAuthUser(user string) error {
	switch {
	case user == "":
		return errors.New("empty user name")
	case len(user) > MaxBasicAuthUserLen:
		return fmt.Errorf("user name longer than %d bytes", MaxBasicAuthUserLen)
	case !utf8.ValidString(user):
		return errors.New("user name is not valid UTF-8")
	}
	for _, c := range user {
		switch {
		case c == ':':
			return fmt.Errorf("user name %q has a colon", user)
		case strings.ContainsRune(`"\<>&`, c):
			return fmt.Errorf("user name %q has one of \" \\ < > &", user)
		case !unicode.IsPrint(c):
			return fmt.Errorf("user name %q has a character that is not printable", user)
		}
	}
	return nil
}

// bcryptHashLen is the length of a bcrypt hash in its modular crypt
// format: "$2a$", two digits of cost, "$", 22 characters of salt and 31
// of hash.
const bcryptHashLen = 60

// CheckBcryptHash says what is wrong with a bcrypt hash, or returns nil:
// it must be exactly in the modular crypt format, version 2a, 2b or 2y,
// with a cost from [MinBcryptCost] to [MaxBcryptCost].
func CheckBcryptHash(hash string) error {
	const malformed = "malformed bcrypt hash: want $2a$<cost>$ and 53 characters of ./A-Za-z0-9"
	if len(hash) != bcryptHashLen || hash[0] != '$' || hash[1] != '2' || hash[3] != '$' || hash[6] != '$' {
		return errors.New(malformed)
	}
	if v := hash[2]; v != 'a' && v != 'b' && v != 'y' {
		return errors.New(malformed)
	}
	d1, d2 := hash[4], hash[5]
	if d1 < '0' || d1 > '9' || d2 < '0' || d2 > '9' {
		return errors.New(malformed)
	}
	for i := 7; i < len(hash); i++ {
		c := hash[i]
		if c != '.' && c != '/' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return errors.New(malformed)
		}
	}
	cost := int(d1-'0')*10 + int(d2-'0')
	if cost < MinBcryptCost {
		return fmt.Errorf("bcrypt cost %d is below %d", cost, MinBcryptCost)
	}
	if cost > MaxBcryptCost {
		return fmt.Errorf("bcrypt cost %d is over the proxy's limit of %d: every visitor's login would cost the proxy too much CPU", cost, MaxBcryptCost)
	}
	return nil
}

// CanonicalPrefix returns the form of p a [Protection] carries: masked (no
// host bits), and an IPv4-mapped IPv6 prefix of at least 96 bits as the
// IPv4 prefix it covers, since the proxy sees every IPv4 visitor as an
// IPv4 address. An invalid p is returned as it is.
func CanonicalPrefix(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}
