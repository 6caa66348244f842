package messages_test

import (
	"crypto/elliptic"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/messages"
	"golang.org/x/crypto/bcrypt"
)

// fakeHash has the shape of a bcrypt hash of the given cost; Check reads
// only the shape.
func fakeHash(cost int) string {
	return fmt.Sprintf("$2a$%02d$", cost) + strings.Repeat("A", 53)
}

func TestProtectionCheck(t *testing.T) {
	real, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := func(n int) []messages.BasicAuthUser {
		us := make([]messages.BasicAuthUser, n)
		for i := range us {
			us[i] = messages.BasicAuthUser{User: fmt.Sprintf("u%d", i), Hash: fakeHash(10)}
		}
		return us
	}
	prefixes := func(n int) []netip.Prefix {
		ps := make([]netip.Prefix, n)
		for i := range ps {
			ps[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
		}
		return ps
	}
	user := func(name, hash string) *messages.Protection {
		return &messages.Protection{BasicAuth: []messages.BasicAuthUser{{User: name, Hash: hash}}}
	}
	allow := func(ps ...string) *messages.Protection {
		p := &messages.Protection{}
		for _, s := range ps {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				pfx = netip.Prefix{} // stands for what "" decodes to
			}
			p.AllowIP = append(p.AllowIP, pfx)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		p    *messages.Protection
		want string // "" for valid, else a substring of the error
	}{
		{"nil", nil, ""},
		{"empty", &messages.Protection{}, ""},
		{"a real hash", user("alice", string(real)), ""},
		{"2b and 2y hashes", &messages.Protection{BasicAuth: []messages.BasicAuthUser{
			{User: "a", Hash: strings.Replace(fakeHash(10), "2a", "2b", 1)},
			{User: "b", Hash: strings.Replace(fakeHash(10), "2a", "2y", 1)}}}, ""},
		{"the most users", &messages.Protection{BasicAuth: users(messages.MaxBasicAuthUsers)}, ""},
		{"one user too many", &messages.Protection{BasicAuth: users(messages.MaxBasicAuthUsers + 1)}, "17 users, more than 16"},
		{"cost at the limit", user("a", fakeHash(messages.MaxBcryptCost)), ""},
		{"cost over the limit", user("a", fakeHash(messages.MaxBcryptCost+1)), "bcrypt cost 13 is over the proxy's limit of 12"},
		{"lowest cost", user("a", fakeHash(messages.MinBcryptCost)), ""},
		{"cost below bcrypt's", user("a", fakeHash(messages.MinBcryptCost-1)), "bcrypt cost 3 is below 4"},
		{"hash one short", user("a", fakeHash(10)[:59]), "malformed bcrypt hash"},
		{"hash one long", user("a", fakeHash(10)+"A"), "malformed bcrypt hash"},
		{"hash of version 2x", user("a", strings.Replace(fakeHash(10), "2a", "2x", 1)), "malformed bcrypt hash"},
		{"hash of version 3a", user("a", strings.Replace(fakeHash(10), "2a", "3a", 1)), "malformed bcrypt hash"},
		{"hash without a cost", user("a", "$2a$1x$"+strings.Repeat("A", 53)), "malformed bcrypt hash"},
		{"hash with a foreign character", user("a", fakeHash(10)[:59]+"="), "malformed bcrypt hash"},
		{"the password in place of the hash", user("a", "hunter2"), "malformed bcrypt hash"},
		{"empty hash", user("a", ""), "malformed bcrypt hash"},
		{"longest user name", user(strings.Repeat("u", messages.MaxBasicAuthUserLen), fakeHash(10)), ""},
		{"user name one byte too long", user(strings.Repeat("u", messages.MaxBasicAuthUserLen+1), fakeHash(10)), "longer than 64 bytes"},
		{"user name with spaces and letters of any script", user("Zoë Ångström 山田", fakeHash(10)), ""},
		{"an e-mail address for a user name", user("ops+tunnel@example.com", fakeHash(10)), ""},
		{"empty user name", user("", fakeHash(10)), "empty user name"},
		{"user name with a colon", user("a:b", fakeHash(10)), "has a colon"},
		{"user name with a newline", user("a\nb", fakeHash(10)), "not printable"},
		{"user name with a line separator", user("a\u2028b", fakeHash(10)), "not printable"},
		{"user name with a quote", user(`a"b`, fakeHash(10)), "has one of"},
		{"user name with an angle bracket", user("a<b", fakeHash(10)), "has one of"},
		{"user name not UTF-8", user("a\xffb", fakeHash(10)), "not valid UTF-8"},
		{"the same user twice", &messages.Protection{BasicAuth: []messages.BasicAuthUser{{User: "a", Hash: fakeHash(10)}, {User: "a", Hash: fakeHash(11)}}}, `"a" appears twice`},
		{"the most prefixes", &messages.Protection{AllowIP: prefixes(messages.MaxIPRules), DenyIP: prefixes(messages.MaxIPRules)}, ""},
		{"one allow prefix too many", &messages.Protection{AllowIP: prefixes(messages.MaxIPRules + 1)}, "allow_ip: 65 prefixes, more than 64"},
		{"one deny prefix too many", &messages.Protection{DenyIP: prefixes(messages.MaxIPRules + 1)}, "deny_ip: 65 prefixes, more than 64"},
		{"host bits set", allow("10.1.2.3/8"), "10.1.2.3/8 is not in canonical form; write 10.0.0.0/8"},
		{"IPv6 host bits set", allow("2001:db8::1/32"), "write 2001:db8::/32"},
		{"an IPv4-mapped prefix", allow("::ffff:10.0.0.0/104"), "write 10.0.0.0/8"},
		{"an invalid prefix", allow(""), "allow_ip: an invalid prefix"},
		{"/0 and a host, both families", allow("0.0.0.0/0", "::/0", "192.0.2.1/32", "2001:db8::1/128"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestCanonicalPrefix(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"192.0.2.7/32", "192.0.2.7/32"},
		{"1.2.3.4/0", "0.0.0.0/0"},
		{"2001:db8::1/32", "2001:db8::/32"},
		{"::ffff:10.1.2.3/104", "10.0.0.0/8"},
		{"::ffff:192.0.2.7/128", "192.0.2.7/32"},
		{"::ffff:0.0.0.0/96", "0.0.0.0/0"},
		// Below 96 bits the mask clears part of ::ffff: it is an IPv6
		// prefix, which no IPv4 visitor matches.
		{"::ffff:0.0.0.0/95", "::fffe:0:0/95"},
		{"::/0", "::/0"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := messages.CanonicalPrefix(netip.MustParsePrefix(tc.in))
			if got.String() != tc.want {
				t.Errorf("CanonicalPrefix(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
	if got := messages.CanonicalPrefix(netip.Prefix{}); got.IsValid() {
		t.Errorf("the invalid prefix became %s", got)
	}
}

// The claim's JSON is what docs/PROTOCOL.md section 5.2 shows, and reads
// back to the same value.
func TestProtectionJSON(t *testing.T) {
	p := &messages.Protection{
		BasicAuth: []messages.BasicAuthUser{{User: "alice", Hash: fakeHash(10)}},
		AllowIP:   []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		DenyIP:    []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32")},
	}
	b, err := json.Marshal(messages.RegistrationClaims{Protect: p})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"protect":{"basic_auth":[{"user":"alice","hash":"` + fakeHash(10) + `"}],` +
		`"allow_ip":["203.0.113.0/24","2001:db8::/32"],"deny_ip":["203.0.113.7/32"]}}`
	if string(b) != want {
		t.Errorf("JSON\n%s\nwant\n%s", b, want)
	}
	var back messages.RegistrationClaims
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Protect, p) {
		t.Errorf("read back %+v, want %+v", back.Protect, p)
	}
	if b, _ := json.Marshal(messages.RegistrationClaims{}); string(b) != "{}" {
		t.Errorf("no protection: %s, want {}", b)
	}
	// An empty string is not an error for netip's decoder: Check must
	// catch the invalid prefix it leaves.
	var hole messages.Protection
	if err := json.Unmarshal([]byte(`{"deny_ip":[""]}`), &hole); err != nil {
		t.Fatal(err)
	}
	if err := hole.Check(); err == nil {
		t.Error(`deny_ip [""] passed Check`)
	}
}

func TestProtectionEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *messages.Protection
		want bool
	}{
		{"nil", nil, true},
		{"zero", &messages.Protection{}, true},
		{"empty lists", &messages.Protection{BasicAuth: []messages.BasicAuthUser{}, AllowIP: []netip.Prefix{}}, true},
		{"a user", &messages.Protection{BasicAuth: []messages.BasicAuthUser{{User: "a"}}}, false},
		{"an allow prefix", &messages.Protection{AllowIP: []netip.Prefix{netip.MustParsePrefix("::/0")}}, false},
		{"a deny prefix", &messages.Protection{DenyIP: []netip.Prefix{netip.MustParsePrefix("::/0")}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Empty(); got != tc.want {
				t.Errorf("Empty() = %v, want %v", got, tc.want)
			}
		})
	}
}

// largestTokenRoom is how long an access token may be beside the largest
// Protection and the most names, each of the longest, in a registration
// that still fits in MaxJWS (docs/PROTOCOL.md section 5.2 says so).
const largestTokenRoom = 2048

// The largest Protection allowed fits in a registration, with the most
// names and a token of largestTokenRoom bytes, signed with the larger of
// the two key types and for a long domain.
func TestLargestProtectionFits(t *testing.T) {
	p := &messages.Protection{}
	for i := range messages.MaxBasicAuthUsers {
		// Each name the longest, of 2-byte characters JSON keeps as they
		// are, and a distinct ending.
		name := strings.Repeat("é", messages.MaxBasicAuthUserLen/2-1) + fmt.Sprintf("%02d", i)
		p.BasicAuth = append(p.BasicAuth, messages.BasicAuthUser{User: name, Hash: fakeHash(messages.MaxBcryptCost)})
	}
	for i := range 2 * messages.MaxIPRules {
		// The longest text of a canonical prefix: eight full groups.
		a := netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, byte(2 * i)})
		pfx := netip.PrefixFrom(a, 127)
		if i < messages.MaxIPRules {
			p.AllowIP = append(p.AllowIP, pfx)
		} else {
			p.DenyIP = append(p.DenyIP, pfx)
		}
	}
	if err := p.Check(); err != nil {
		t.Fatalf("the largest protection fails Check: %v", err)
	}
	var names []string
	for i := range messages.MaxNames {
		names = append(names, fmt.Sprintf("%s%02d", strings.Repeat("n", 61), i))
	}
	claims := messages.RegistrationClaims{Token: strings.Repeat("t", largestTokenRoom), Names: names, Protect: p}
	ch := messages.Challenge{Nonce: testChallenge.Nonce, Domain: strings.Repeat("d", 60) + ".example.com"}
	jws := mustSign(t, newECDSA(t, elliptic.P256()), ch, claims)
	t.Logf("largest protection: %d bytes of JWS, %d to spare", len(jws), messages.MaxJWS-len(jws))
	if len(jws) > messages.MaxJWS {
		t.Fatalf("JWS of %d bytes, over MaxJWS (%d)", len(jws), messages.MaxJWS)
	}
	reg, err := messages.VerifyRegistration(jws, ch)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(reg.Claims.Protect, p) {
		t.Error("the protection did not survive the registration")
	}
}
