package client

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/messages"
	"golang.org/x/crypto/bcrypt"
)

func TestCheckProtection(t *testing.T) {
	users := func(n int) []Credential {
		var cs []Credential
		for i := range n {
			cs = append(cs, Credential{User: "u" + strings.Repeat("x", i), Password: "hunter2secret"})
		}
		return cs
	}
	prefixes := func(n int) []netip.Prefix {
		var ps []netip.Prefix
		for i := range n {
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
		}
		return ps
	}
	for _, tc := range []struct {
		name string
		c    Client
		want string // "" for valid
	}{
		{"nothing", Client{}, ""},
		{"the most users", Client{BasicAuth: users(16)}, ""},
		{"one user too many", Client{BasicAuth: users(17)}, "17 users, more than 16"},
		{"empty password", Client{BasicAuth: []Credential{{User: "a"}}}, `user "a": empty password`},
		{"72-byte password", Client{BasicAuth: []Credential{{User: "a", Password: strings.Repeat("p", 72)}}}, ""},
		{"73-byte password", Client{BasicAuth: []Credential{{User: "a", Password: "hunter2secret" + strings.Repeat("p", 60)}}}, "password longer than 72 bytes"},
		{"password and hash", Client{BasicAuth: []Credential{{User: "a", Password: "hunter2secret", Hash: "$2a$"}}}, "not both"},
		{"a hash alone", Client{BasicAuth: []Credential{{User: "a", Hash: "anything: the proxy checks it"}}}, ""},
		{"user with a colon", Client{BasicAuth: []Credential{{User: "a:b", Password: "hunter2secret"}}}, "has a colon"},
		{"user twice", Client{BasicAuth: []Credential{{User: "a", Password: "x"}, {User: "a", Password: "hunter2secret"}}}, `user "a" appears twice`},
		{"the most prefixes", Client{AllowIP: prefixes(64), DenyIP: prefixes(64)}, ""},
		{"one allow prefix too many", Client{AllowIP: prefixes(65)}, "AllowIP: 65 prefixes, more than 64"},
		{"one deny prefix too many", Client{DenyIP: prefixes(65)}, "DenyIP: 65 prefixes, more than 64"},
		{"an invalid prefix", Client{DenyIP: []netip.Prefix{{}}}, "DenyIP: an invalid prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.CheckProtection()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("CheckProtection: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("CheckProtection: %v, want %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error repeats a password: %v", err)
			}
		})
	}
}

// protection hashes at the client's cost, passes given hashes on, and
// puts the prefixes in the form the proxy accepts.
func TestProtection(t *testing.T) {
	given := "$2a$04$" + strings.Repeat("g", 53)
	c := &Client{
		BasicAuth: []Credential{{User: "alice", Password: "s3cret:with,punctuation"}, {User: "bob", Hash: given}},
		AllowIP:   []netip.Prefix{netip.MustParsePrefix("198.51.100.77/24"), netip.MustParsePrefix("::ffff:192.0.2.0/120")},
		DenyIP:    []netip.Prefix{netip.MustParsePrefix("2001:db8::1/32")},
	}
	p, err := c.protection()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(); err != nil {
		t.Fatalf("the proxy would refuse it: %v", err)
	}
	if len(p.BasicAuth) != 2 || p.BasicAuth[0].User != "alice" || p.BasicAuth[1] != (messages.BasicAuthUser{User: "bob", Hash: given}) {
		t.Fatalf("users %+v", p.BasicAuth)
	}
	h := []byte(p.BasicAuth[0].Hash)
	if cost, err := bcrypt.Cost(h); err != nil || cost != bcrypt.DefaultCost {
		t.Errorf("alice's hash %q: cost %d, %v; want %d", h, cost, err, bcrypt.DefaultCost)
	}
	if strings.Contains(string(h), "s3cret") {
		t.Error("the password is in the hash")
	}
	wantAllow := []string{"198.51.100.0/24", "192.0.2.0/24"}
	for i, pfx := range p.AllowIP {
		if pfx.String() != wantAllow[i] {
			t.Errorf("allow %d: %s, want %s", i, pfx, wantAllow[i])
		}
	}
	if len(p.DenyIP) != 1 || p.DenyIP[0].String() != "2001:db8::/32" {
		t.Errorf("deny %v", p.DenyIP)
	}
	if p, err := (&Client{}).protection(); p != nil || err != nil {
		t.Errorf("nothing to protect: %+v, %v; want nil, nil", p, err)
	}
}
