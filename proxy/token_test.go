package proxy_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

const tokenDomain = "tunnel.example.com"

// tokenNow is the time the token tests verify at: whole seconds, as the
// claims are.
var tokenNow = time.Unix(1_900_000_000, 0)

func signingKey(t *testing.T, alg jose.SignatureAlgorithm) *jose.JSONWebKey {
	t.Helper()
	k, err := proxy.NewSigningKeyFor(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// trust returns a TokenKeys holding the public halves of keys.
func trust(t *testing.T, keys ...*jose.JSONWebKey) *proxy.TokenKeys {
	t.Helper()
	set := &jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.Public())
	}
	tk, err := proxy.NewTokenKeys(set)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// clientLabel makes a client key and returns its hostname label.
func clientLabel(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	label, err := messages.Hostname(pub)
	if err != nil {
		t.Fatal(err)
	}
	return label
}

func issue(t *testing.T, key *jose.JSONWebKey, spec proxy.TokenSpec) string {
	t.Helper()
	tok, err := proxy.IssueToken(key, spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// baseSpec is valid at tokenNow: issued an hour before, expiring an hour
// after.
func baseSpec() proxy.TokenSpec {
	return proxy.TokenSpec{
		Audience: tokenDomain,
		IssuedAt: tokenNow.Add(-time.Hour),
		Expires:  tokenNow.Add(time.Hour),
	}
}

// signRaw signs an arbitrary payload with key (whose kid goes into the
// header), for tokens IssueToken would refuse to make.
func signRaw(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, payload map[string]any) string {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawClaims is a valid payload for tokenNow, to be spoiled by a test.
func rawClaims() map[string]any {
	return map[string]any{
		"aud": tokenDomain,
		"iat": tokenNow.Add(-time.Hour).Unix(),
		"exp": tokenNow.Add(time.Hour).Unix(),
		"jti": "t-1",
	}
}

func b64json(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestTokenVerify(t *testing.T) {
	ed := signingKey(t, jose.EdDSA)
	es := signingKey(t, jose.ES256)
	other := signingKey(t, jose.EdDSA) // not trusted
	keys := trust(t, ed, es)
	me, someoneElse := clientLabel(t), clientLabel(t)
	leeway := proxy.TokenLeeway
	exp := tokenNow.Add(time.Hour)
	nbf := tokenNow.Add(time.Hour)

	with := func(f func(*proxy.TokenSpec)) proxy.TokenSpec {
		s := baseSpec()
		f(&s)
		return s
	}
	raw := func(f func(map[string]any)) string {
		c := rawClaims()
		f(c)
		return signRaw(t, jose.EdDSA, ed.Key, ed.KeyID, c)
	}
	// Other algorithms, each signed with a key of its own under a kid the
	// proxy trusts, as an attacker would try.
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub := ed.Public().Key.(ed25519.PublicKey)
	noneTok := b64json(map[string]string{"alg": "none", "kid": ed.KeyID}) + "." + b64json(rawClaims()) + "."

	valid := issue(t, ed, baseSpec())
	parts := strings.Split(valid, ".")
	tamperedClaims := rawClaims()
	tamperedClaims["keyhole"] = map[string]any{"names": []string{"stolen"}}
	tampered := parts[0] + "." + b64json(tamperedClaims) + "." + parts[2]
	badSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))

	for _, tc := range []struct {
		name    string
		token   string
		label   string // the verifying client's key; default me
		at      time.Time
		wantErr error  // nil: valid
		wantMsg string // for errors without a sentinel
	}{
		{name: "valid EdDSA", token: valid},
		{name: "valid ES256", token: issue(t, es, baseSpec())},
		{name: "expired, at exp+leeway: still valid", token: issue(t, ed, baseSpec()), at: exp.Add(leeway)},
		{name: "expired, at exp+leeway+1s", token: issue(t, ed, baseSpec()), at: exp.Add(leeway + time.Second), wantErr: proxy.ErrTokenExpired},
		{name: "expired long ago", token: issue(t, ed, baseSpec()), at: exp.Add(24 * time.Hour), wantErr: proxy.ErrTokenExpired},
		{name: "nbf, at nbf-leeway: valid", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.NotBefore = nbf; s.Expires = nbf.Add(time.Hour) })), at: nbf.Add(-leeway)},
		{name: "nbf, at nbf-leeway-1s", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.NotBefore = nbf; s.Expires = nbf.Add(time.Hour) })), at: nbf.Add(-leeway - time.Second), wantErr: proxy.ErrTokenNotYetValid},
		{name: "iat leeway in the future: valid", token: raw(func(c map[string]any) { c["iat"] = tokenNow.Add(leeway).Unix() })},
		{name: "iat past the leeway in the future", token: raw(func(c map[string]any) { c["iat"] = tokenNow.Add(leeway + time.Second).Unix() }), wantErr: proxy.ErrTokenFuture},
		{name: "never expires", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.Expires = time.Time{} })), at: tokenNow.Add(100 * 365 * 24 * time.Hour)},
		{name: "wrong audience", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.Audience = "other.example.com" })), wantErr: proxy.ErrTokenAudience},
		{name: "audience of a parent domain", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.Audience = "example.com" })), wantErr: proxy.ErrTokenAudience},
		{name: "audience in another case", token: raw(func(c map[string]any) { c["aud"] = []string{"x.org", "Tunnel.Example.COM"} })},
		{name: "no audience", token: raw(func(c map[string]any) { delete(c, "aud") }), wantErr: proxy.ErrTokenAudience},
		{name: "bound to this key", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.Key = me }))},
		{name: "bound to this key by hostname", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.Key = strings.ToUpper(me) + "." + tokenDomain }))},
		{name: "bound to another key", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.Key = someoneElse })), wantErr: proxy.ErrTokenWrongKey},
		{name: "bound, verified without a key", token: issue(t, ed, with(func(s *proxy.TokenSpec) { s.Key = me })), label: "-", wantErr: proxy.ErrTokenWrongKey},
		{name: "binding not a thumbprint", token: raw(func(c map[string]any) { c["cnf"] = map[string]string{"jkt": "abc"} }), wantErr: proxy.ErrTokenBinding},
		{name: "binding of an unknown kind", token: raw(func(c map[string]any) { c["cnf"] = map[string]any{"jwk": map[string]string{"kty": "OKP"}} }), wantErr: proxy.ErrTokenBinding},
		{name: "unknown kid", token: issue(t, other, baseSpec()), wantErr: proxy.ErrTokenUnknownKey},
		{name: "no kid", token: signRaw(t, jose.EdDSA, ed.Key, "", rawClaims()), wantErr: proxy.ErrTokenNoKeyID},
		{name: "alg none", token: noneTok, wantErr: proxy.ErrTokenAlgorithm},
		{name: "HS256 keyed with the public key", token: signRaw(t, jose.HS256, []byte(edPub), ed.KeyID, rawClaims()), wantErr: proxy.ErrTokenAlgorithm},
		{name: "RS256", token: signRaw(t, jose.RS256, rsaKey, ed.KeyID, rawClaims()), wantErr: proxy.ErrTokenAlgorithm},
		{name: "ES384", token: signRaw(t, jose.ES384, p384, es.KeyID, rawClaims()), wantErr: proxy.ErrTokenAlgorithm},
		{name: "ES256 under an Ed25519 key's kid", token: signRaw(t, jose.ES256, es.Key, ed.KeyID, rawClaims()), wantErr: proxy.ErrTokenAlgorithm},
		{name: "EdDSA under a P-256 key's kid", token: signRaw(t, jose.EdDSA, ed.Key, es.KeyID, rawClaims()), wantErr: proxy.ErrTokenAlgorithm},
		{name: "tampered payload", token: tampered, wantErr: proxy.ErrTokenSignature},
		{name: "zeroed signature", token: badSig, wantErr: proxy.ErrTokenSignature},
		{name: "signed by another key under a trusted kid", token: signRaw(t, jose.EdDSA, other.Key, ed.KeyID, rawClaims()), wantErr: proxy.ErrTokenSignature},
		{name: "empty", token: "", wantErr: proxy.ErrTokenMalformed},
		{name: "not a JWT", token: "s3cret-shared-token", wantErr: proxy.ErrTokenMalformed},
		{name: "two parts", token: parts[0] + "." + parts[1], wantErr: proxy.ErrTokenMalformed},
		{name: "four parts", token: valid + ".x", wantErr: proxy.ErrTokenMalformed},
		{name: "header not base64url", token: "!!." + parts[1] + "." + parts[2], wantErr: proxy.ErrTokenMalformed},
		{name: "header not JSON", token: base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[1] + "." + parts[2], wantErr: proxy.ErrTokenMalformed},
		{name: "header without alg", token: b64json(map[string]string{"kid": ed.KeyID}) + "." + parts[1] + "." + parts[2], wantErr: proxy.ErrTokenMalformed},
		{name: "payload not JSON", token: signRawBytes(t, ed, []byte("[1,2]")), wantErr: proxy.ErrTokenMalformed},
		{name: "too large", token: valid + strings.Repeat("A", proxy.MaxTokenLen), wantErr: proxy.ErrTokenTooLarge},
		{name: "no jti", token: raw(func(c map[string]any) { delete(c, "jti") }), wantErr: proxy.ErrTokenNoID},
		{name: "jti with a space", token: raw(func(c map[string]any) { c["jti"] = "a b" }), wantErr: proxy.ErrTokenBadID},
		{name: "generated-shape jti with another expiry", token: raw(func(c map[string]any) { c["jti"] = strings.Repeat("a", 26) + ".1900000001" }), wantErr: proxy.ErrTokenBadID},
		{name: "no iat", token: raw(func(c map[string]any) { delete(c, "iat") }), wantErr: proxy.ErrTokenNoIssuedAt},
		{name: "bad name in token", token: raw(func(c map[string]any) { c["keyhole"] = map[string]any{"names": []string{"ok", "Bad_Name"}} }), wantMsg: "token grants an invalid name"},
		{name: "key-shaped name in token", token: raw(func(c map[string]any) { c["keyhole"] = map[string]any{"names": []string{me}} }), wantMsg: "token grants an invalid name"},
		{name: "negative rate", token: raw(func(c map[string]any) { c["keyhole"] = map[string]any{"rate": -1} }), wantErr: proxy.ErrTokenLimits},
		{name: "negative burst", token: raw(func(c map[string]any) { c["keyhole"] = map[string]any{"burst": -1} }), wantErr: proxy.ErrTokenLimits},
		{name: "negative max_body", token: raw(func(c map[string]any) { c["keyhole"] = map[string]any{"max_body": -1} }), wantErr: proxy.ErrTokenLimits},
		{name: "negative streams", token: raw(func(c map[string]any) { c["keyhole"] = map[string]any{"streams": -1} }), wantErr: proxy.ErrTokenLimits},
		{name: "unknown keyhole claim", token: raw(func(c map[string]any) { c["keyhole"] = map[string]any{"admin": true} }), wantErr: proxy.ErrTokenClaims},
		{name: "keyhole not an object", token: raw(func(c map[string]any) { c["keyhole"] = "all" }), wantErr: proxy.ErrTokenClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = tokenNow
			}
			label := tc.label
			switch label {
			case "":
				label = me
			case "-":
				label = ""
			}
			g, err := keys.Verify(tc.token, tokenDomain, label, at)
			switch {
			case tc.wantErr == nil && tc.wantMsg == "":
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if g.ID == "" || g.IssuedAt.IsZero() {
					t.Errorf("grant %+v lacks its ID or issue time", g)
				}
			case err == nil:
				t.Fatalf("accepted (%+v), want %q", g, tc.wantErr)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("error %q, want %q", err, tc.wantErr)
			case tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg):
				t.Fatalf("error %q, want it to say %q", err, tc.wantMsg)
			}
			if err != nil {
				// The reason goes to the client: short, and never the token.
				if msg := err.Error(); len(msg) > 120 || (len(tc.token) > 8 && strings.Contains(msg, tc.token[:8])) {
					t.Errorf("reason %q is long or quotes the token", msg)
				}
			}
		})
	}
}

func signRawBytes(t *testing.T, key *jose.JSONWebKey, payload []byte) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := obj.CompactSerialize()
	return tok
}

func TestTokenVerifyWithoutKeys(t *testing.T) {
	ed := signingKey(t, jose.EdDSA)
	tok := issue(t, ed, baseSpec())
	empty, err := proxy.NewTokenKeys(&jose.JSONWebKeySet{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		keys *proxy.TokenKeys
		want error
	}{
		{"nil", nil, proxy.ErrNoTokenKeys},
		{"zero value", new(proxy.TokenKeys), proxy.ErrNoTokenKeys},
		{"empty set", empty, proxy.ErrTokenUnknownKey},
		{"trusted", trust(t, ed), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.keys.Verify(tok, tokenDomain, "", tokenNow)
			if !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// Every field goes through IssueToken and comes back out of Verify.
func TestTokenRoundTrip(t *testing.T) {
	for _, alg := range []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256} {
		t.Run(string(alg), func(t *testing.T) {
			key := signingKey(t, alg)
			me := clientLabel(t)
			spec := proxy.TokenSpec{
				Audience:  "Tunnel.Example.com.", // normalised like a proxy's domain
				Key:       me,
				Names:     []string{"myapp", "docs", "myapp"},
				IssuedAt:  tokenNow.Add(-time.Minute + 400*time.Millisecond), // whole seconds in the token
				Expires:   tokenNow.Add(48 * time.Hour),
				NotBefore: tokenNow.Add(-time.Second),
				Rate:      2.5,
				Burst:     7,
				MaxBody:   1 << 20,
				Streams:   3,
				ID:        "ops-2026-01",
			}
			tok := issue(t, key, spec)
			g, err := trust(t, key).Verify(tok, tokenDomain, me, tokenNow)
			if err != nil {
				t.Fatal(err)
			}
			want := &proxy.Grant{
				ID:        "ops-2026-01",
				Key:       me,
				Names:     []string{"myapp", "docs"},
				IssuedAt:  time.Unix(spec.IssuedAt.Unix(), 0),
				NotBefore: spec.NotBefore,
				Expires:   spec.Expires,
				Rate:      2.5,
				Burst:     7,
				MaxBody:   1 << 20,
				Streams:   3,
			}
			if !reflect.DeepEqual(g, want) {
				t.Errorf("grant\n%+v\nwant\n%+v", g, want)
			}
		})
	}
	t.Run("minimal", func(t *testing.T) {
		key := signingKey(t, jose.EdDSA)
		tok := issue(t, key, proxy.TokenSpec{Audience: tokenDomain})
		g, err := trust(t, key).Verify(tok, tokenDomain, clientLabel(t), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if g.Key != "" || g.Names != nil || !g.Expires.IsZero() || !g.NotBefore.IsZero() || g.Rate != 0 || g.MaxBody != 0 {
			t.Errorf("grant %+v: want no binding, names, expiry or limits", g)
		}
		if d := time.Since(g.IssuedAt); d < 0 || d > time.Minute {
			t.Errorf("issued at %v: want now", g.IssuedAt)
		}
		if _, ok := proxy.TokenIDExpiry(g.ID); ok {
			t.Errorf("ID %q of a token that never expires claims an expiry", g.ID)
		}
	})
}

func TestTokenIDExpiry(t *testing.T) {
	key := signingKey(t, jose.EdDSA)
	keys := trust(t, key)
	t.Run("round trip", func(t *testing.T) {
		for _, exp := range []time.Time{tokenNow.Add(time.Second), tokenNow.Add(720 * time.Hour), time.Unix(253402300799, 0)} {
			s := baseSpec()
			s.Expires = exp
			g, err := keys.Verify(issue(t, key, s), tokenDomain, "", tokenNow)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := proxy.TokenIDExpiry(g.ID)
			if !ok || !got.Equal(exp.Add(proxy.TokenLeeway)) {
				t.Errorf("TokenIDExpiry(%q) = %v, %v; want %v (exp + leeway), true", g.ID, got, ok, exp.Add(proxy.TokenLeeway))
			}
			// From that instant on, Verify refuses the token anyway.
			if _, err := keys.Verify(issue(t, key, s), tokenDomain, "", got.Add(time.Second)); !errors.Is(err, proxy.ErrTokenExpired) {
				t.Errorf("at the lapse +1s: %v, want expired", err)
			}
		}
	})
	random := strings.Repeat("a", 26)
	for _, id := range []string{"", "ops-1", random, random + ".", random + ".0123", random + ".+123", random + ".12a", random[1:] + ".123", strings.ToUpper(random) + ".123", random + ".1234567890123", "x." + random + ".123"} {
		t.Run("not generated "+id, func(t *testing.T) {
			if got, ok := proxy.TokenIDExpiry(id); ok {
				t.Errorf("TokenIDExpiry(%q) = %v, true; want false", id, got)
			}
		})
	}
	t.Run("generated IDs differ", func(t *testing.T) {
		a, _ := keys.Verify(issue(t, key, baseSpec()), tokenDomain, "", tokenNow)
		b, _ := keys.Verify(issue(t, key, baseSpec()), tokenDomain, "", tokenNow)
		if a == nil || b == nil || a.ID == b.ID {
			t.Fatalf("two tokens got IDs %v and %v", a, b)
		}
	})
}

func TestTokenIssueRefuses(t *testing.T) {
	ed := signingKey(t, jose.EdDSA)
	pub := ed.Public()
	noKid := *ed
	noKid.KeyID = ""
	wrongAlg := *ed
	wrongAlg.Algorithm = "ES256"
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		name string
		key  *jose.JSONWebKey
		spec func(*proxy.TokenSpec)
		want string
	}{
		{"public key", &pub, nil, "private"},
		{"no key", nil, nil, "no signing key"},
		{"P-384 key", &jose.JSONWebKey{Key: p384, KeyID: "x"}, nil, "P-256"},
		{"no kid", &noKid, nil, "kid"},
		{"alg not the key's", &wrongAlg, nil, "alg"},
		{"no audience", ed, func(s *proxy.TokenSpec) { s.Audience = "" }, "audience"},
		{"audience a URL", ed, func(s *proxy.TokenSpec) { s.Audience = "https://tunnel.example.com" }, "audience"},
		{"bad name", ed, func(s *proxy.TokenSpec) { s.Names = []string{"ok", "-bad"} }, "hyphen"},
		{"key-shaped name", ed, func(s *proxy.TokenSpec) { s.Names = []string{strings.Repeat("a", 52)} }, "shape"},
		{"too many names", ed, func(s *proxy.TokenSpec) {
			for i := range 65 {
				s.Names = append(s.Names, "n"+strings.Repeat("x", i))
			}
		}, "at most"},
		{"negative rate", ed, func(s *proxy.TokenSpec) { s.Rate = -0.5 }, "negative"},
		{"NaN rate", ed, func(s *proxy.TokenSpec) { s.Rate = math.NaN() }, "finite"},
		{"negative burst", ed, func(s *proxy.TokenSpec) { s.Burst = -1 }, "negative"},
		{"negative max body", ed, func(s *proxy.TokenSpec) { s.MaxBody = -1 }, "negative"},
		{"negative streams", ed, func(s *proxy.TokenSpec) { s.Streams = -1 }, "negative"},
		{"bad key label", ed, func(s *proxy.TokenSpec) { s.Key = "myapp" }, "label"},
		{"expires before issued", ed, func(s *proxy.TokenSpec) { s.Expires = s.IssuedAt.Add(-time.Second) }, "expire"},
		{"not before after expiry", ed, func(s *proxy.TokenSpec) { s.NotBefore = s.Expires }, "not-before"},
		{"ID with a space", ed, func(s *proxy.TokenSpec) { s.ID = "a b" }, "token ID"},
		{"ID too long", ed, func(s *proxy.TokenSpec) { s.ID = strings.Repeat("a", 129) }, "token ID"},
		{"ID lying about the expiry", ed, func(s *proxy.TokenSpec) { s.ID = strings.Repeat("a", 26) + ".1234" }, "expiry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			if tc.spec != nil {
				tc.spec(&s)
			}
			tok, err := proxy.IssueToken(tc.key, s)
			if err == nil {
				t.Fatalf("issued %q", tok)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("ID in the generated shape with the true expiry", func(t *testing.T) {
		s := baseSpec()
		s.ID = strings.Repeat("b", 26) + "." + strconv.FormatInt(s.Expires.Unix(), 10)
		if _, err := proxy.IssueToken(ed, s); err != nil {
			t.Fatalf("refused: %v", err)
		}
	})
}

func TestTokenKeysRefuse(t *testing.T) {
	ed := signingKey(t, jose.EdDSA)
	es := signingKey(t, jose.ES256)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	pub := func(k *jose.JSONWebKey) jose.JSONWebKey { return k.Public() }
	noKid := pub(ed)
	noKid.KeyID = ""
	wrongAlg := pub(ed)
	wrongAlg.Algorithm = "ES256"
	encUse := pub(es)
	encUse.Use = "enc"
	for _, tc := range []struct {
		name string
		keys []jose.JSONWebKey
		want string
	}{
		{"private key", []jose.JSONWebKey{*ed}, "private key"},
		{"private P-256 key", []jose.JSONWebKey{*es}, "private key"},
		{"no kid", []jose.JSONWebKey{noKid}, "no kid"},
		{"duplicate kid", []jose.JSONWebKey{pub(ed), pub(ed)}, "twice"},
		{"P-384", []jose.JSONWebKey{{Key: &p384.PublicKey, KeyID: "p384"}}, "P-256"},
		{"RSA", []jose.JSONWebKey{{Key: &rsaKey.PublicKey, KeyID: "rsa"}}, "Ed25519"},
		{"HMAC", []jose.JSONWebKey{{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hs"}}, "Ed25519"},
		{"alg of another type", []jose.JSONWebKey{wrongAlg}, "alg"},
		{"use enc", []jose.JSONWebKey{encUse}, "use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := trust(t, es)
			err := good.Set(&jose.JSONWebKeySet{Keys: tc.keys})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Set: %v, want an error mentioning %q", err, tc.want)
			}
			if _, err := proxy.NewTokenKeys(&jose.JSONWebKeySet{Keys: tc.keys}); err == nil {
				t.Error("NewTokenKeys accepted the set")
			}
			// The set in force stays.
			if _, err := good.Verify(issue(t, es, baseSpec()), tokenDomain, "", tokenNow); err != nil {
				t.Errorf("after a refused Set, the old key: %v", err)
			}
		})
	}
	for _, tc := range []struct{ name, json, want string }{
		{"not JSON", "keys: []", "JSON"},
		{"a single key", `{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`, "single key"},
		{"no keys member", `{"key":[]}`, `no "keys"`},
		{"bad key", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"!!"}]}`, "token keys"},
	} {
		t.Run("file "+tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := proxy.LoadTokenKeys(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("LoadTokenKeys: %v, want an error naming the file and %q", err, tc.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := proxy.LoadTokenKeys(filepath.Join(t.TempDir(), "none.json")); err == nil {
			t.Fatal("loaded a file that does not exist")
		}
	})
}

// Rotation: A's tokens verify; B is added and its tokens verify too; A is
// removed and its tokens are refused, B's still verify. Each step is a
// rewrite of the key set file and a reload.
func TestTokenKeyRotation(t *testing.T) {
	a, b := signingKey(t, jose.EdDSA), signingKey(t, jose.ES256)
	path := filepath.Join(t.TempDir(), "keys.json")
	write := func(keys ...*jose.JSONWebKey) {
		t.Helper()
		set := jose.JSONWebKeySet{}
		for _, k := range keys {
			set.Keys = append(set.Keys, k.Public())
		}
		data, err := json.Marshal(set)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(a)
	keys := new(proxy.TokenKeys)
	r, err := keys.Reloader(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokA, tokB := issue(t, a, baseSpec()), issue(t, b, baseSpec())
	for _, step := range []struct {
		name       string
		set        []*jose.JSONWebKey
		okA, okB   bool
		wantKeyIDs int
	}{
		{"A only", nil, true, false, 1},
		{"A and B", []*jose.JSONWebKey{a, b}, true, true, 2},
		{"B only", []*jose.JSONWebKey{b}, false, true, 1},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.set != nil {
				write(step.set...)
				if err := r.Reload(); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(keys.KeyIDs()); n != step.wantKeyIDs {
				t.Errorf("%d keys in force, want %d", n, step.wantKeyIDs)
			}
			for _, c := range []struct {
				name string
				tok  string
				ok   bool
			}{{"A", tokA, step.okA}, {"B", tokB, step.okB}} {
				_, err := keys.Verify(c.tok, tokenDomain, "", tokenNow)
				if c.ok && err != nil {
					t.Errorf("token of %s refused: %v", c.name, err)
				}
				if !c.ok && !errors.Is(err, proxy.ErrTokenUnknownKey) {
					t.Errorf("token of %s: %v, want %q", c.name, err, proxy.ErrTokenUnknownKey)
				}
			}
		})
	}
}

func TestTokenIsJWT(t *testing.T) {
	key := signingKey(t, jose.EdDSA)
	for _, tc := range []struct {
		token string
		want  bool
	}{
		{issue(t, key, baseSpec()), true},
		{b64json(map[string]string{"alg": "none"}) + "." + b64json(rawClaims()) + ".", true},
		{"s3cret", false},
		{"a.b.c", false},
		{"", false},
	} {
		if got := proxy.IsJWT(tc.token); got != tc.want {
			t.Errorf("IsJWT(%.20q) = %v, want %v", tc.token, got, tc.want)
		}
	}
}

// TestRevokeEndpoint checks POST /revoke on the admin handler up to the
// call of Proxy.Revoke: off without an admin token, authentication,
// validation. The end-to-end revocation tests are elsewhere.
func TestRevokeEndpoint(t *testing.T) {
	const adminToken = "admin-token-0123456789"
	on := tunneltest.StartProxy(t, proxy.Config{AdminToken: adminToken})
	off := tunneltest.StartProxy(t, proxy.Config{})
	onAdmin := httptest.NewServer(on.Proxy.AdminHandler(nil))
	t.Cleanup(onAdmin.Close)
	offAdmin := httptest.NewServer(off.Proxy.AdminHandler(nil))
	t.Cleanup(offAdmin.Close)
	label := clientLabel(t)

	post := func(t *testing.T, srv *httptest.Server, method, auth, body string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/revoke", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	bearer := "Bearer " + adminToken
	keyBody := `{"kind":"key","value":"` + label + `"}`

	t.Run("off without an admin token", func(t *testing.T) {
		if code, _, _ := post(t, offAdmin, "POST", bearer, keyBody); code != http.StatusNotFound {
			t.Errorf("%d, want 404", code)
		}
	})
	t.Run("authentication", func(t *testing.T) {
		for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + adminToken, bearer + "x", bearer[:len(bearer)-1], adminToken} {
			code, h, _ := post(t, onAdmin, "POST", auth, keyBody)
			if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("Authorization %q: %d (WWW-Authenticate %q), want 401 with a Bearer challenge", auth, code, h.Get("WWW-Authenticate"))
			}
		}
		if code, _, _ := post(t, onAdmin, "GET", bearer, ""); code != http.StatusMethodNotAllowed {
			t.Errorf("GET: %d, want 405", code)
		}
	})
	t.Run("validation", func(t *testing.T) {
		for _, tc := range []struct{ body, want string }{
			{`{"kind":"user","value":"x"}`, "kind"},
			{`{"kind":"","value":"x"}`, "kind"},
			{`{"kind":"key","value":"myapp"}`, "label"},
			{`{"kind":"key","value":""}`, "no value"},
			{`{"kind":"name","value":"Bad_Name"}`, "only a-z"},
			{`{"kind":"name","value":"` + label + `"}`, "shape"},
			{`{"kind":"token","value":"has space"}`, "token ID"},
			{`{"kind":"token","value":"` + strings.Repeat("t", 129) + `"}`, "token ID"},
			{`{"kind":"key","value":"` + label + `","until":"next week"}`, "RFC 3339"},
			{`{"kind":"key","value":"` + label + `","until":"2001-01-01T00:00:00Z"}`, "future"},
			{`{"kind":"key","value":"` + label + `","why":"x"}`, "JSON"},
			{`{"kind":"key","value":"` + label + `"}{}`, "one JSON object"},
			{`[]`, "JSON"},
			{``, "JSON"},
		} {
			code, _, reply := post(t, onAdmin, "POST", bearer, tc.body)
			if code != http.StatusBadRequest || !strings.Contains(reply, tc.want) {
				t.Errorf("%.60s: %d %q, want 400 mentioning %q", tc.body, code, reply, tc.want)
			}
		}
		if code, _, _ := post(t, onAdmin, "POST", bearer, `{"kind":"key","value":"`+strings.Repeat("a", 5000)+`"}`); code != http.StatusRequestEntityTooLarge {
			t.Errorf("5 KB body: %d, want 413", code)
		}
	})
	t.Run("reaches Revoke", func(t *testing.T) {
		until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		tokenID := strings.Repeat("a", 26) + ".1900000000"
		for _, tc := range []struct {
			name, body        string
			wantKind, wantVal string
			wantUntil         string
		}{
			{"key by hostname", `{"kind":"key","value":"` + strings.ToUpper(label) + `.localhost"}`, "key", label, ""},
			{"name by hostname, until", `{"kind":"name","value":"MyApp.localhost","until":"` + until.Format(time.RFC3339) + `"}`, "name", "myapp", until.Format(time.RFC3339)},
			{"generated token ID", `{"kind":"token","value":"` + tokenID + `"}`, "token", tokenID, time.Unix(1900000000, 0).Add(proxy.TokenLeeway).UTC().Format(time.RFC3339)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, _, reply := post(t, onAdmin, "POST", bearer, tc.body)
				// Proxy.Revoke is the lead's, a stub until then that fails:
				// its error must come back as 503 with the reason. Once it
				// works, the answer is 200 with the normalised revocation.
				// Either proves the request got past the checks.
				switch code {
				case http.StatusOK:
					var got proxy.RevokeRequest
					if err := json.Unmarshal([]byte(reply), &got); err != nil {
						t.Fatalf("answer %q: %v", reply, err)
					}
					want := proxy.RevokeRequest{Kind: proxy.RevocationKind(tc.wantKind), Value: tc.wantVal, Until: tc.wantUntil}
					if got != want {
						t.Errorf("answer %+v, want %+v", got, want)
					}
				case http.StatusServiceUnavailable:
					if !strings.HasPrefix(reply, "revoke failed: ") {
						t.Errorf("503 %q: want the reason Revoke gave", reply)
					}
				default:
					t.Errorf("%d %q, want 200, or 503 from the stub", code, reply)
				}
			})
		}
	})
}

func TestRevokeRequestRevocation(t *testing.T) {
	label := clientLabel(t)
	now := tokenNow
	for _, tc := range []struct {
		name string
		req  proxy.RevokeRequest
		want proxy.Revocation
	}{
		{"key label", proxy.RevokeRequest{Kind: proxy.RevokeKey, Value: " " + label + " "}, proxy.Revocation{Kind: proxy.RevokeKey, Value: label}},
		{"key hostname", proxy.RevokeRequest{Kind: proxy.RevokeKey, Value: strings.ToUpper(label) + ".tunnel.example.com"}, proxy.Revocation{Kind: proxy.RevokeKey, Value: label}},
		{"name", proxy.RevokeRequest{Kind: proxy.RevokeName, Value: "Docs"}, proxy.Revocation{Kind: proxy.RevokeName, Value: "docs"}},
		{"token until", proxy.RevokeRequest{Kind: proxy.RevokeToken, Value: "ops-1", Until: "2031-03-04T05:06:07+01:00"}, proxy.Revocation{Kind: proxy.RevokeToken, Value: "ops-1", Until: time.Date(2031, 3, 4, 4, 6, 7, 0, time.UTC)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.req.Revocation(now)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.want.Kind || got.Value != tc.want.Value || !got.Until.Equal(tc.want.Until) {
				t.Errorf("%+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("until exactly now", func(t *testing.T) {
		if _, err := (proxy.RevokeRequest{Kind: proxy.RevokeKey, Value: label, Until: now.UTC().Format(time.RFC3339)}).Revocation(now); err == nil {
			t.Error("a revocation lapsing at once accepted")
		}
	})
}
