package messages_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/keyhole-tunnel/keyhole/messages"
)

var (
	b64 = base64.RawURLEncoding
	b32 = base32.StdEncoding.WithPadding(base32.NoPadding)
)

// rfc8037Key is the Ed25519 key of RFC 8037 Appendix A.1 (and RFC 8032
// test 1), whose RFC 7638 thumbprint RFC 8037 A.3 gives, so the worked
// example in docs/PROTOCOL.md can be checked against an outside source.
func rfc8037Key(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	seed, err := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

var testChallenge = messages.Challenge{Nonce: "q0lA9zXcVw2gXKQ3PHrKsQ", Domain: "tunnel.example"}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func newECDSA(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func jwkJSON(t testing.TB, key any) json.RawMessage {
	t.Helper()
	j, err := jose.JSONWebKey{Key: key}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// handJWS builds a compact JWS from a protected header and payload, signing
// the signing input with sign (nil for an empty signature).
func handJWS(t testing.TB, header map[string]any, payload []byte, sign func([]byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	return rawJWS(string(h), payload, sign)
}

// rawJWS is handJWS for header JSON written out, member order and all.
func rawJWS(header string, payload []byte, sign func([]byte) []byte) string {
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString(payload)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + b64.EncodeToString(sig)
}

func edSign(priv ed25519.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte { return ed25519.Sign(priv, in) }
}

// es256Sign signs as JWS ES256 does: SHA-256, then r||s, each as wide as
// the curve's order (32 bytes for P-256).
func es256Sign(t testing.TB, priv *ecdsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		r, s, err := ecdsa.Sign(rand.Reader, priv, d[:])
		if err != nil {
			t.Fatal(err)
		}
		n := (priv.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*n)
		r.FillBytes(out[:n])
		s.FillBytes(out[n:])
		return out
	}
}

// header returns a correct protected header for ch, with the given alg and
// embedded key.
func header(alg string, jwk json.RawMessage, ch messages.Challenge) map[string]any {
	return map[string]any{"alg": alg, "jwk": jwk, "nonce": ch.Nonce, "keyhole-domain": ch.Domain}
}

func TestHostname(t *testing.T) {
	ed := newEd25519(t)
	ec := newECDSA(t, elliptic.P256())
	for name, pub := range map[string]crypto.PublicKey{
		"Ed25519": ed.Public(),
		"P-256":   ec.Public(),
	} {
		t.Run(name, func(t *testing.T) {
			label, err := messages.Hostname(pub)
			if err != nil {
				t.Fatal(err)
			}
			if len(label) != messages.HostnameLen || !messages.IsHostnameLabel(label) {
				t.Fatalf("label %q is not a hostname label", label)
			}
			if again, _ := messages.Hostname(pub); again != label {
				t.Fatalf("label changed: %q, then %q", label, again)
			}
			// The same key, parsed back from JSON with its members in
			// another order, gives the same label: it comes from the
			// parsed key, not the text.
			var members map[string]any
			if err := json.Unmarshal(jwkJSON(t, pub), &members); err != nil {
				t.Fatal(err)
			}
			members["kid"] = "ignored"
			reordered, _ := json.Marshal(members)
			var k jose.JSONWebKey
			if err := k.UnmarshalJSON(reordered); err != nil {
				t.Fatal(err)
			}
			if again, _ := messages.Hostname(k.Key); again != label {
				t.Fatalf("label from re-parsed JWK: %q, want %q", again, label)
			}
		})
	}
	a, _ := messages.Hostname(newEd25519(t).Public())
	b, _ := messages.Hostname(newEd25519(t).Public())
	if a == b {
		t.Fatal("two keys gave one label")
	}
}

// The worked example in docs/PROTOCOL.md.
func TestHostnameWorkedExample(t *testing.T) {
	priv := rfc8037Key(t)
	pub := priv.Public().(ed25519.PublicKey)
	if got := string(jwkJSON(t, pub)); got != `{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}` {
		t.Fatalf("JWK = %s", got)
	}
	// RFC 7638: SHA-256 over the required members in lexicographic order,
	// no whitespace.
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`
	sum := sha256.Sum256([]byte(canonical))
	if got := b64.EncodeToString(sum[:]); got != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" { // RFC 8037 A.3
		t.Fatalf("thumbprint = %s", got)
	}
	if got := hex.EncodeToString(sum[:]); got != "90facafea9b1556698540f70c0117a22ea37bd5cf3ed3c47093c1707282b4b89" {
		t.Fatalf("thumbprint hex = %s", got)
	}
	label, err := messages.Hostname(pub)
	if err != nil {
		t.Fatal(err)
	}
	if label != "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq" {
		t.Fatalf("label = %s", label)
	}
}

// The registration example in docs/PROTOCOL.md, built the way a client in
// another language would: header JSON by hand, then an Ed25519 signature
// (deterministic, so the whole JWS is fixed).
func TestRegistrationWorkedExample(t *testing.T) {
	priv := rfc8037Key(t)
	protected := `{"alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},"nonce":"q0lA9zXcVw2gXKQ3PHrKsQ","keyhole-domain":"tunnel.example"}`
	payload := `{"token":"s3cret"}`
	input := b64.EncodeToString([]byte(protected)) + "." + b64.EncodeToString([]byte(payload))
	jws := input + "." + b64.EncodeToString(ed25519.Sign(priv, []byte(input)))
	const want = "eyJhbGciOiJFZERTQSIsImp3ayI6eyJrdHkiOiJPS1AiLCJjcnYiOiJFZDI1NTE5IiwieCI6IjExcVlBWUt4Q3JmVlNfN1R5V1FIT2c3aGN2UGFwaU1scndJYWFQY0hVUm8ifSwibm9uY2UiOiJxMGxBOXpYY1Z3MmdYS1EzUEhyS3NRIiwia2V5aG9sZS1kb21haW4iOiJ0dW5uZWwuZXhhbXBsZSJ9" +
		".eyJ0b2tlbiI6InMzY3JldCJ9" +
		".644LK0QZcC-1n51y2eddeJZA8AK6TnCYS328bgi8ebZu8pa2PAKDrZDm1W8Ro6s1QRFW2bRm12w20EaUEdpGDA"
	if jws != want {
		t.Fatalf("JWS =\n%s\nwant\n%s", jws, want)
	}
	reg, err := messages.VerifyRegistration(jws, testChallenge)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Label != "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq" || reg.Claims.Token != "s3cret" {
		t.Fatalf("got %+v", reg)
	}
}

func TestIsHostnameLabel(t *testing.T) {
	good := "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq"
	tests := []struct {
		s  string
		ok bool
	}{
		{good, true},
		{strings.Repeat("a", 52), true},
		{strings.Repeat("7", 52), true},
		{"", false},
		{good[:51], false},
		{good + "a", false},
		{strings.ToUpper(good), false},
		{good[:51] + "0", false}, // 0, 1, 8, 9 are not base32
		{good[:51] + "1", false},
		{good[:51] + "8", false},
		{good[:51] + "9", false},
		{good[:51] + "=", false},
		{good[:51] + "-", false},
		{good[:51] + ".", false},
		{good[:50] + "é", false}, // 52 bytes, not 52 base32 characters
	}
	for _, tc := range tests {
		if got := messages.IsHostnameLabel(tc.s); got != tc.ok {
			t.Errorf("IsHostnameLabel(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}

func TestSignVerify(t *testing.T) {
	for name, key := range map[string]crypto.Signer{
		"Ed25519":    newEd25519(t),
		"ES256":      newECDSA(t, elliptic.P256()),
		"RFC8037Key": rfc8037Key(t),
	} {
		t.Run(name, func(t *testing.T) {
			for _, claims := range []messages.RegistrationClaims{{}, {Token: "s3cret"}, {Token: "s3cret", Names: []string{"myapp", "docs"}}} {
				jws, err := messages.SignRegistration(key, testChallenge, claims)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Count(jws, ".") != 2 {
					t.Fatalf("not a compact JWS: %s", jws)
				}
				reg, err := messages.VerifyRegistration(jws, testChallenge)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := messages.Hostname(key.Public())
				if reg.Label != want {
					t.Fatalf("label %q, want %q", reg.Label, want)
				}
				if got := strings.ToLower(b32.EncodeToString(reg.Thumbprint)); got != want {
					t.Fatalf("thumbprint %x does not give the label", reg.Thumbprint)
				}
				if !reflect.DeepEqual(reg.Claims, claims) {
					t.Fatalf("claims %+v, want %+v", reg.Claims, claims)
				}
			}
		})
	}
}

func TestSignRegistrationRejectsKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{
		"P-384": newECDSA(t, elliptic.P384()),
		"P-521": newECDSA(t, elliptic.P521()),
		"RSA":   rsaKey,
	} {
		if _, err := messages.SignRegistration(key, testChallenge, messages.RegistrationClaims{}); err == nil {
			t.Errorf("%s: SignRegistration succeeded", name)
		}
	}
}

func mustSign(t testing.TB, key crypto.Signer, ch messages.Challenge, claims messages.RegistrationClaims) string {
	t.Helper()
	jws, err := messages.SignRegistration(key, ch, claims)
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

// joseSign signs with go-jose under any algorithm, with the registration's
// header fields set by hand.
func joseSign(t testing.TB, alg jose.SignatureAlgorithm, key any, extra map[jose.HeaderKey]any, embed bool) string {
	t.Helper()
	opts := &jose.SignerOptions{EmbedJWK: embed}
	for k, v := range extra {
		opts = opts.WithHeader(k, v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// flipSignature changes one bit of the decoded signature.
func flipSignature(t testing.TB, jws string) string {
	i := strings.LastIndexByte(jws, '.')
	sig, err := b64.DecodeString(jws[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	sig[0] ^= 1
	return jws[:i+1] + b64.EncodeToString(sig)
}

// paddedJWS signs a registration whose whole JWS is exactly size bytes, by
// growing the token and, for the base64 lengths the token cannot reach, the
// nonce.
func paddedJWS(t testing.TB, key ed25519.PrivateKey, size int) (string, messages.Challenge) {
	t.Helper()
	for extra := range 4 {
		ch := messages.Challenge{Nonce: testChallenge.Nonce + strings.Repeat("n", extra), Domain: testChallenge.Domain}
		base := len(mustSign(t, key, ch, messages.RegistrationClaims{Token: "x"}))
		// Each 3 token bytes add 4 characters; start a little short.
		n := max(1, (size-base)*3/4-4)
		for ; n < (size-base)*3/4+4; n++ {
			jws := mustSign(t, key, ch, messages.RegistrationClaims{Token: strings.Repeat("t", n)})
			if len(jws) == size {
				return jws, ch
			}
		}
	}
	t.Fatalf("cannot build a JWS of exactly %d bytes", size)
	return "", messages.Challenge{}
}

func TestVerifyRegistrationSizeLimit(t *testing.T) {
	key := newEd25519(t)
	at, ch := paddedJWS(t, key, messages.MaxJWS)
	if _, err := messages.VerifyRegistration(at, ch); err != nil {
		t.Fatalf("JWS of exactly MaxJWS bytes: %v", err)
	}
	over, ch := paddedJWS(t, key, messages.MaxJWS+1)
	_, err := messages.VerifyRegistration(over, ch)
	if !errors.Is(err, messages.ErrRefused) || !strings.Contains(err.Error(), "larger than 16384 bytes") {
		t.Fatalf("JWS of MaxJWS+1 bytes: err = %v", err)
	}
}

type refusal struct {
	name   string
	jws    string
	ch     messages.Challenge
	reason string // a substring of the error
}

func TestVerifyRegistrationRefusals(t *testing.T) {
	ed := newEd25519(t)
	edPub := ed.Public()
	ec := newECDSA(t, elliptic.P256())
	p384 := newECDSA(t, elliptic.P384())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ch := testChallenge
	good := mustSign(t, ed, ch, messages.RegistrationClaims{})
	regHeaders := map[jose.HeaderKey]any{"nonce": ch.Nonce, "keyhole-domain": ch.Domain}

	tests := []refusal{
		{"empty", "", ch, "malformed JWS"},
		{"not a JWS", "hello", ch, "malformed JWS"},
		{"header not base64", "!!!.e30.AAAA", ch, "malformed JWS"},
		{"header not JSON", b64.EncodeToString([]byte("nope")) + ".e30.AAAA", ch, "malformed JWS"},
		{"four parts", good + ".AAAA", ch, "malformed JWS"},
		{"alg none",
			handJWS(t, header("none", jwkJSON(t, edPub), ch), []byte(`{}`), nil),
			ch, `alg "none" not allowed`},
		{"alg missing",
			handJWS(t, map[string]any{"jwk": jwkJSON(t, edPub), "nonce": ch.Nonce, "keyhole-domain": ch.Domain}, []byte(`{}`), edSign(ed)),
			ch, `alg "" not allowed`},
		{"alg lowercase",
			handJWS(t, header("eddsa", jwkJSON(t, edPub), ch), []byte(`{}`), edSign(ed)),
			ch, `alg "eddsa" not allowed`},
		{"HS256",
			joseSign(t, jose.HS256, make([]byte, 32), map[jose.HeaderKey]any{
				"jwk": jose.JSONWebKey{Key: edPub}, "nonce": ch.Nonce, "keyhole-domain": ch.Domain,
			}, false),
			ch, `alg "HS256" not allowed`},
		{"ES256 header, Ed25519 key",
			handJWS(t, header("ES256", jwkJSON(t, edPub), ch), []byte(`{}`), edSign(ed)),
			ch, "alg does not match key type"},
		{"EdDSA header, P-256 key",
			handJWS(t, header("EdDSA", jwkJSON(t, ec.Public()), ch), []byte(`{}`), es256Sign(t, ec)),
			ch, "alg does not match key type"},
		// encoding/json reads "EdDSA" here (names match case-insensitively
		// and the last wins); go-jose reads and verifies ES256.
		{"alg shadowed by ALG",
			rawJWS(`{"alg":"ES256","ALG":"EdDSA","jwk":`+string(jwkJSON(t, edPub))+`,"nonce":"`+ch.Nonce+`","keyhole-domain":"`+ch.Domain+`"}`, []byte(`{}`), edSign(ed)),
			ch, "alg does not match key type"},
		{"embedded private Ed25519 key",
			handJWS(t, header("EdDSA", jwkJSON(t, ed), ch), []byte(`{}`), edSign(ed)),
			ch, "embedded key must be a public key"},
		{"embedded private P-256 key",
			handJWS(t, header("ES256", jwkJSON(t, ec), ch), []byte(`{}`), es256Sign(t, ec)),
			ch, "embedded key must be a public key"},
		{"embedded symmetric key",
			handJWS(t, header("EdDSA", json.RawMessage(`{"kty":"oct","k":"AAAA"}`), ch), []byte(`{}`), edSign(ed)),
			ch, "embedded key must be a public key"},
		{"RS256",
			joseSign(t, jose.RS256, rsaKey, regHeaders, true),
			ch, `alg "RS256" not allowed`},
		{"PS256",
			joseSign(t, jose.PS256, rsaKey, regHeaders, true),
			ch, `alg "PS256" not allowed`},
		{"ES256 header, RSA key",
			handJWS(t, header("ES256", jwkJSON(t, rsaKey.Public()), ch), []byte(`{}`), es256Sign(t, ec)),
			ch, "key type not allowed"},
		{"EdDSA header, RSA key",
			handJWS(t, header("EdDSA", jwkJSON(t, rsaKey.Public()), ch), []byte(`{}`), edSign(ed)),
			ch, "key type not allowed"},
		{"ES384 with P-384 key",
			joseSign(t, jose.ES384, p384, regHeaders, true),
			ch, `alg "ES384" not allowed`},
		{"ES256 header, P-384 key",
			handJWS(t, header("ES256", jwkJSON(t, p384.Public()), ch), []byte(`{}`), es256Sign(t, p384)),
			ch, "alg does not match key type"},
		{"missing jwk",
			handJWS(t, map[string]any{"alg": "EdDSA", "nonce": ch.Nonce, "keyhole-domain": ch.Domain}, []byte(`{}`), edSign(ed)),
			ch, "must embed the public key"},
		{"jwk by reference only",
			joseSign(t, jose.EdDSA, ed, map[jose.HeaderKey]any{"kid": "k1", "nonce": ch.Nonce, "keyhole-domain": ch.Domain}, false),
			ch, "must embed the public key"},
		{"bad signature", flipSignature(t, good), ch, "bad signature"},
		{"empty signature", good[:strings.LastIndexByte(good, '.')+1], ch, "bad signature"},
		{"payload swapped",
			func() string {
				p := strings.Split(good, ".")
				return p[0] + "." + b64.EncodeToString([]byte(`{"token":"x"}`)) + "." + p[2]
			}(),
			ch, "bad signature"},
		{"signed by another key",
			handJWS(t, header("EdDSA", jwkJSON(t, edPub), ch), []byte(`{}`), edSign(newEd25519(t))),
			ch, "bad signature"},
		{"wrong nonce (replay onto another challenge)",
			good, messages.Challenge{Nonce: "another-connection", Domain: ch.Domain}, "nonce does not match"},
		{"nonce missing",
			handJWS(t, map[string]any{"alg": "EdDSA", "jwk": jwkJSON(t, edPub), "keyhole-domain": ch.Domain}, []byte(`{}`), edSign(ed)),
			ch, "nonce does not match"},
		{"empty nonce, empty challenge",
			mustSign(t, ed, messages.Challenge{Domain: ch.Domain}, messages.RegistrationClaims{}),
			messages.Challenge{Domain: ch.Domain}, "nonce does not match"},
		{"nonce not a string",
			handJWS(t, map[string]any{"alg": "EdDSA", "jwk": jwkJSON(t, edPub), "nonce": 7, "keyhole-domain": ch.Domain}, []byte(`{}`), edSign(ed)),
			ch, "malformed JWS"},
		{"wrong domain",
			good, messages.Challenge{Nonce: ch.Nonce, Domain: "other.example"}, "signed for another domain"},
		{"domain missing",
			handJWS(t, map[string]any{"alg": "EdDSA", "jwk": jwkJSON(t, edPub), "nonce": ch.Nonce}, []byte(`{}`), edSign(ed)),
			ch, "signed for another domain"},
		{"domain not a string",
			handJWS(t, map[string]any{"alg": "EdDSA", "jwk": jwkJSON(t, edPub), "nonce": ch.Nonce, "keyhole-domain": []string{ch.Domain}}, []byte(`{}`), edSign(ed)),
			ch, "signed for another domain"},
		{"payload not JSON",
			handJWS(t, header("EdDSA", jwkJSON(t, edPub), ch), []byte("token"), edSign(ed)),
			ch, "payload is not a JSON object"},
		{"payload a JSON string",
			handJWS(t, header("EdDSA", jwkJSON(t, edPub), ch), []byte(`"token"`), edSign(ed)),
			ch, "payload is not a JSON object"},
	}
	// JSON serialization is refused: only compact is accepted, so there is
	// exactly one signature and no unprotected header.
	multi, err := jose.NewMultiSigner([]jose.SigningKey{
		{Algorithm: jose.EdDSA, Key: ed},
		{Algorithm: jose.ES256, Key: ec},
	}, (&jose.SignerOptions{EmbedJWK: true}).WithHeader("nonce", ch.Nonce).WithHeader("keyhole-domain", ch.Domain))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := multi.Sign([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	single, err := jose.ParseSignedCompact(good, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	tests = append(tests,
		refusal{"two signatures (JSON serialization)", obj.FullSerialize(), ch, "malformed JWS"},
		refusal{"one signature (flattened JSON serialization)", single.FullSerialize(), ch, "malformed JWS"},
		refusal{"JSON serialization after whitespace", " \n" + single.FullSerialize(), ch, "malformed JWS"},
	)

	// The fixtures are sound: each refused case differs from an accepted
	// one only in what its name says.
	if _, err := messages.VerifyRegistration(good, ch); err != nil {
		t.Fatalf("good JWS refused: %v", err)
	}
	if _, err := messages.VerifyRegistration(handJWS(t, header("EdDSA", jwkJSON(t, edPub), ch), []byte(`{}`), edSign(ed)), ch); err != nil {
		t.Fatalf("hand-built EdDSA JWS refused: %v", err)
	}
	if _, err := messages.VerifyRegistration(handJWS(t, header("ES256", jwkJSON(t, ec.Public()), ch), []byte(`{}`), es256Sign(t, ec)), ch); err != nil {
		t.Fatalf("hand-built ES256 JWS refused: %v", err)
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg, err := messages.VerifyRegistration(tc.jws, tc.ch)
			if !errors.Is(err, messages.ErrRefused) {
				t.Fatalf("VerifyRegistration = %+v, %v; want ErrRefused", reg, err)
			}
			if reg != nil {
				t.Fatalf("registration returned with an error: %+v", reg)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("reason %q does not contain %q", err, tc.reason)
			}
		})
	}
}
