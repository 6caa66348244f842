package proxy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// Access tokens are JWTs an operator signs (see [IssueToken]) and a proxy
// checks against the operator's public keys (see [TokenKeys.Verify]).
//
// Besides the registered claims aud, exp, nbf, iat and jti, a token may
// carry "cnf": {"jkt": "<thumbprint>"} (RFC 7800, with the RFC 9449
// member), which binds it to one client key: the base64url SHA-256 JWK
// thumbprint of that key, the same thumbprint a hostname label encodes in
// base32. What the token grants travels in a "keyhole" object:
//
//	"keyhole": {"names": ["myapp"], "rate": 10, "burst": 20, "max_body": 1000000, "streams": 8}
//
// A member of "keyhole" or "cnf" that this proxy does not know refuses the
// token: an older proxy must not read a token made for a newer one as
// granting more than it says.

// TokenLeeway is how far a proxy's clock may be from the issuer's: a token
// is accepted until TokenLeeway after its exp, from TokenLeeway before its
// nbf, and its iat may be up to TokenLeeway in the future.
const TokenLeeway = 30 * time.Second

// MaxTokenLen is the longest access token [TokenKeys.Verify] reads.
const MaxTokenLen = 8 << 10

// maxTokenNames bounds the names one token may grant, which bounds the
// token's size too.
const maxTokenNames = 64

// maxTokenIDLen bounds a token ID, which revocations store and logs show.
const maxTokenIDLen = 128

// Reasons a token is refused. Each error's text is short enough to be the
// refusal reason a client is shown, and none quotes the token.
var (
	ErrTokenMalformed   = errors.New("malformed token")
	ErrTokenTooLarge    = fmt.Errorf("token larger than %d bytes", MaxTokenLen)
	ErrTokenAlgorithm   = errors.New("token algorithm not allowed")
	ErrTokenNoKeyID     = errors.New("token names no signing key (kid)")
	ErrTokenUnknownKey  = errors.New("token signed by an unknown key")
	ErrTokenSignature   = errors.New("token signature invalid")
	ErrTokenNoID        = errors.New("token has no ID")
	ErrTokenBadID       = errors.New("token ID invalid")
	ErrTokenNoIssuedAt  = errors.New("token has no issue time")
	ErrTokenFuture      = errors.New("token issued in the future")
	ErrTokenAudience    = errors.New("token for another domain")
	ErrTokenExpired     = errors.New("token expired")
	ErrTokenNotYetValid = errors.New("token not yet valid")
	ErrTokenWrongKey    = errors.New("token not valid for this key")
	ErrTokenBinding     = errors.New("token key binding not understood")
	ErrTokenLimits      = errors.New("token has a negative limit")
	ErrTokenClaims      = errors.New("token has claims this proxy does not understand")
	ErrNoTokenKeys      = errors.New("this proxy accepts no access tokens")
)

// Grant is what a valid token allows.
type Grant struct {
	ID        string    // jti, required
	Key       string    // hostname label of the key the token is bound to, "" for any key
	Names     []string  // friendly names granted
	IssuedAt  time.Time // iat (required: "newest grant wins" compares it)
	NotBefore time.Time // zero if none
	Expires   time.Time // exp; zero means never
	Rate      float64   // requests/s cap for the tunnel, 0 = the proxy's
	Burst     int
	MaxBody   int64 // 0 = the proxy's
	Streams   int   // concurrent streams cap, 0 = the proxy's
}

// TokenKeys is the set of operator public keys a proxy trusts for access
// tokens, each selected by its kid. Safe for concurrent use; Set swaps the
// whole set at once. The zero value is an empty set, which refuses every
// token.
type TokenKeys struct {
	set atomic.Pointer[keySet]
}

// keySet is one immutable generation of a [TokenKeys].
type keySet struct {
	byID map[string]jose.JSONWebKey
	ids  []string // sorted
}

// NewTokenKeys checks set and returns it as a TokenKeys. Only public
// Ed25519 (EdDSA) and P-256 (ES256) keys are accepted, each with a unique,
// non-empty kid; a key with private material is refused, since a proxy
// never needs it. A nil or empty set is allowed and refuses every token.
func NewTokenKeys(set *jose.JSONWebKeySet) (*TokenKeys, error) {
	k := new(TokenKeys)
	if err := k.Set(set); err != nil {
		return nil, err
	}
	return k, nil
}

// LoadTokenKeys reads a JWK set file, such as the one `proxy token keygen
// --public` writes, into a new TokenKeys.
func LoadTokenKeys(path string) (*TokenKeys, error) {
	k := new(TokenKeys)
	if err := k.Load(path); err != nil {
		return nil, err
	}
	return k, nil
}

// Set replaces the whole set, or returns why set cannot be used and keeps
// the current one. Tokens verified from then on use the new set.
func (k *TokenKeys) Set(set *jose.JSONWebKeySet) error {
	ks, err := buildKeySet(set)
	if err != nil {
		return fmt.Errorf("token keys: %w", err)
	}
	k.set.Store(ks)
	return nil
}

func buildKeySet(set *jose.JSONWebKeySet) (*keySet, error) {
	ks := &keySet{byID: make(map[string]jose.JSONWebKey)}
	if set == nil {
		return ks, nil
	}
	for i, key := range set.Keys {
		if err := checkPublicKey(&key); err != nil {
			if key.KeyID == "" {
				return nil, fmt.Errorf("key %d: %w", i+1, err)
			}
			return nil, fmt.Errorf("key %q: %w", key.KeyID, err)
		}
		if _, dup := ks.byID[key.KeyID]; dup {
			return nil, fmt.Errorf("kid %q appears twice", key.KeyID)
		}
		ks.byID[key.KeyID] = key
		ks.ids = append(ks.ids, key.KeyID)
	}
	slices.Sort(ks.ids)
	return ks, nil
}

// Load reads the JWK set file at path and makes it the set. On any error
// the current set stays in force.
func (k *TokenKeys) Load(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("token keys: %w", err)
	}
	return k.setFile(path, b)
}

// setFile makes the JWK set JSON b, read from path, the set.
func (k *TokenKeys) setFile(path string, b []byte) error {
	set, err := decodeKeySet(b)
	if err != nil {
		return fmt.Errorf("token keys: %s: %w", path, err)
	}
	ks, err := buildKeySet(set)
	if err != nil {
		return fmt.Errorf("token keys: %s: %w", path, err)
	}
	k.set.Store(ks)
	return nil
}

// ParseTokenKeys decodes a JWK set's JSON, {"keys": [...]}, without
// checking the keys; [TokenKeys.Set] does that.
func ParseTokenKeys(b []byte) (*jose.JSONWebKeySet, error) {
	set, err := decodeKeySet(b)
	if err != nil {
		return nil, fmt.Errorf("token keys: %w", err)
	}
	return set, nil
}

func decodeKeySet(b []byte) (*jose.JSONWebKeySet, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, ok := probe["keys"]; !ok {
		if _, ok := probe["kty"]; ok {
			return nil, errors.New(`a single key, not the JWK set {"keys": [...]} that "proxy token keygen --public" writes`)
		}
		return nil, errors.New(`not a JWK set: no "keys"`)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	return &set, nil
}

// checkPublicKey accepts a public Ed25519 or P-256 key with a kid.
func checkPublicKey(key *jose.JSONWebKey) error {
	if key.KeyID == "" {
		return errors.New("no kid")
	}
	switch pub := key.Key.(type) {
	case ed25519.PrivateKey, *ecdsa.PrivateKey:
		return errors.New("a private key: give the proxy only the public key set (proxy token keygen --public)")
	case ed25519.PublicKey:
		if key.Algorithm != "" && key.Algorithm != string(jose.EdDSA) {
			return fmt.Errorf("alg %q does not fit an Ed25519 key", key.Algorithm)
		}
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return errors.New("only Ed25519 (EdDSA) and P-256 (ES256) keys are allowed")
		}
		if key.Algorithm != "" && key.Algorithm != string(jose.ES256) {
			return fmt.Errorf("alg %q does not fit a P-256 key", key.Algorithm)
		}
	default:
		return errors.New("only Ed25519 (EdDSA) and P-256 (ES256) keys are allowed")
	}
	if key.Use != "" && key.Use != "sig" {
		return fmt.Errorf("use %q: want sig", key.Use)
	}
	if !key.Valid() {
		return errors.New("invalid key")
	}
	return nil
}

// KeyIDs returns the kids of the keys in force, sorted.
func (k *TokenKeys) KeyIDs() []string {
	if k == nil {
		return nil
	}
	if ks := k.set.Load(); ks != nil {
		return slices.Clone(ks.ids)
	}
	return nil
}

func (k *TokenKeys) lookup(kid string) (jose.JSONWebKey, bool) {
	if k == nil {
		return jose.JSONWebKey{}, false
	}
	ks := k.set.Load()
	if ks == nil {
		return jose.JSONWebKey{}, false
	}
	key, ok := ks.byID[kid]
	return key, ok
}

// IsJWT reports whether token has the shape of a JWT (three base64url
// parts, the first a JSON object naming an algorithm), as an access token
// does and a shared registration token is not expected to.
func IsJWT(token string) bool {
	_, err := peekTokenAlg(token)
	return err == nil || errors.Is(err, ErrTokenAlgorithm)
}

// tokenClaims is a token's payload.
type tokenClaims struct {
	jwt.Claims
	Cnf     json.RawMessage `json:"cnf,omitempty"`
	Keyhole json.RawMessage `json:"keyhole,omitempty"`
}

// keyholeClaims are what a token grants.
type keyholeClaims struct {
	Names   []string `json:"names,omitempty"`
	Rate    float64  `json:"rate,omitempty"`
	Burst   int      `json:"burst,omitempty"`
	MaxBody int64    `json:"max_body,omitempty"`
	Streams int      `json:"streams,omitempty"`
}

// confirmation is a token's key binding.
type confirmation struct {
	JKT string `json:"jkt"`
}

// Verify checks an access token for a client whose key has the hostname
// label keyLabel, on the proxy whose domain is audience, at now (zero:
// the current time), and returns what it grants. The signature must be by
// a key in the set, chosen by the token's kid, with EdDSA or ES256; aud
// must include audience; exp, nbf and iat are compared with
// [TokenLeeway]; jti and iat are required. A token bound to a key is valid
// only for that key. A name that [messages.CheckName] refuses, or a negative limit,
// refuses the whole token. Reserved names are the proxy's to check.
//
// The error's text is fit to show the client; see the ErrToken values.
func (k *TokenKeys) Verify(token, audience, keyLabel string, now time.Time) (*Grant, error) {
	if now.IsZero() {
		now = time.Now()
	}
	if len(token) > MaxTokenLen {
		return nil, ErrTokenTooLarge
	}
	if _, err := peekTokenAlg(token); err != nil {
		return nil, err
	}
	tok, err := jwt.ParseSigned(token, messages.AllowedAlgs())
	if err != nil || len(tok.Headers) != 1 {
		return nil, ErrTokenMalformed
	}
	h := tok.Headers[0]
	if h.KeyID == "" {
		return nil, ErrTokenNoKeyID
	}
	if k == nil || k.set.Load() == nil {
		return nil, ErrNoTokenKeys
	}
	key, ok := k.lookup(h.KeyID)
	if !ok {
		return nil, ErrTokenUnknownKey
	}
	// Match the algorithm go-jose will verify with to the key's type, so
	// that a key is only ever used with its own algorithm.
	switch key.Key.(type) {
	case ed25519.PublicKey:
		if h.Algorithm != string(jose.EdDSA) {
			return nil, ErrTokenAlgorithm
		}
	case *ecdsa.PublicKey:
		if h.Algorithm != string(jose.ES256) {
			return nil, ErrTokenAlgorithm
		}
	}
	var c tokenClaims
	if err := tok.Claims(key.Key, &c); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return nil, ErrTokenSignature
		}
		return nil, ErrTokenMalformed
	}
	return c.grant(audience, keyLabel, now)
}

// grant checks verified claims and returns their Grant.
func (c *tokenClaims) grant(audience, keyLabel string, now time.Time) (*Grant, error) {
	if c.ID == "" {
		return nil, ErrTokenNoID
	}
	if checkTokenID(c.ID) != nil {
		return nil, ErrTokenBadID
	}
	if c.IssuedAt == nil {
		return nil, ErrTokenNoIssuedAt
	}
	if !slices.ContainsFunc(c.Audience, func(a string) bool { return strings.EqualFold(a, audience) }) {
		return nil, ErrTokenAudience
	}
	g := &Grant{ID: c.ID, IssuedAt: c.IssuedAt.Time()}
	if c.NotBefore != nil {
		g.NotBefore = c.NotBefore.Time()
	}
	if c.Expiry != nil {
		g.Expires = c.Expiry.Time()
	}
	// An ID that IssueToken made says when the token expires, so that a
	// revocation by ID can lapse then; it must not say otherwise.
	if lapse, ok := TokenIDExpiry(c.ID); ok && (g.Expires.IsZero() || !lapse.Equal(g.Expires.Add(TokenLeeway))) {
		return nil, ErrTokenBadID
	}
	switch {
	case !g.Expires.IsZero() && now.After(g.Expires.Add(TokenLeeway)):
		return nil, ErrTokenExpired
	case !g.NotBefore.IsZero() && now.Add(TokenLeeway).Before(g.NotBefore):
		return nil, ErrTokenNotYetValid
	case now.Add(TokenLeeway).Before(g.IssuedAt):
		return nil, ErrTokenFuture
	}
	if len(c.Cnf) > 0 && !bytes.Equal(c.Cnf, []byte("null")) {
		var cnf confirmation
		if err := strictJSON(c.Cnf, &cnf); err != nil || cnf.JKT == "" {
			return nil, ErrTokenBinding
		}
		label, err := labelFromJKT(cnf.JKT)
		if err != nil {
			return nil, ErrTokenBinding
		}
		if label != keyLabel {
			return nil, ErrTokenWrongKey
		}
		g.Key = label
	}
	if len(c.Keyhole) > 0 && !bytes.Equal(c.Keyhole, []byte("null")) {
		var kc keyholeClaims
		if err := strictJSON(c.Keyhole, &kc); err != nil {
			return nil, ErrTokenClaims
		}
		if len(kc.Names) > maxTokenNames {
			return nil, fmt.Errorf("token grants more than %d names", maxTokenNames)
		}
		for _, n := range kc.Names {
			if err := messages.CheckName(n); err != nil {
				// The reason must fit a close frame (123 bytes).
				if msg := "token grants an invalid name: " + err.Error(); len(msg) <= 100 {
					return nil, errors.New(msg)
				}
				return nil, errors.New("token grants an invalid name")
			}
			if !slices.Contains(g.Names, n) {
				g.Names = append(g.Names, n)
			}
		}
		if kc.Rate < 0 || kc.Burst < 0 || kc.MaxBody < 0 || kc.Streams < 0 {
			return nil, ErrTokenLimits
		}
		g.Rate, g.Burst, g.MaxBody, g.Streams = kc.Rate, kc.Burst, kc.MaxBody, kc.Streams
	}
	return g, nil
}

// strictJSON decodes one JSON object into v, refusing members v lacks.
func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

// peekTokenAlg reads a compact JWS's "alg" before go-jose does, so that a
// refusal names the reason rather than a library's message.
func peekTokenAlg(token string) (jose.SignatureAlgorithm, error) {
	if strings.Count(token, ".") != 2 {
		return "", ErrTokenMalformed
	}
	protected, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(protected)
	if err != nil {
		return "", ErrTokenMalformed
	}
	var h struct {
		Alg *string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &h); err != nil || h.Alg == nil {
		return "", ErrTokenMalformed
	}
	for _, a := range messages.AllowedAlgs() {
		if string(a) == *h.Alg {
			return a, nil
		}
	}
	return "", ErrTokenAlgorithm
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// labelFromJKT turns a base64url SHA-256 thumbprint into a hostname label.
func labelFromJKT(jkt string) (string, error) {
	tp, err := base64.RawURLEncoding.DecodeString(jkt)
	if err != nil || len(tp) != 32 {
		return "", errors.New("not a base64url SHA-256 thumbprint")
	}
	return strings.ToLower(b32.EncodeToString(tp)), nil
}

// jktFromLabel turns a hostname label, or a tunnel hostname, into the
// base64url thumbprint a token's cnf.jkt holds.
func jktFromLabel(s string) (string, error) {
	label, err := parseLabel(s)
	if err != nil {
		return "", err
	}
	tp, err := b32.DecodeString(strings.ToUpper(label))
	if err != nil || len(tp) != 32 {
		return "", fmt.Errorf("%q is not a tunnel hostname or its 52-character label", s)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// NewSigningKey makes an Ed25519 key for signing access tokens, as a
// private JWK whose kid is its RFC 7638 thumbprint (base64url), with alg
// EdDSA and use sig. Its Public() half belongs in the proxy's key set.
func NewSigningKey() (*jose.JSONWebKey, error) { return NewSigningKeyFor(jose.EdDSA) }

// NewSigningKeyFor is [NewSigningKey] for a chosen algorithm: jose.EdDSA
// (Ed25519) or jose.ES256 (P-256).
func NewSigningKeyFor(alg jose.SignatureAlgorithm) (*jose.JSONWebKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("signing key: algorithm %q not allowed: use EdDSA or ES256", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key := &jose.JSONWebKey{Key: priv, Algorithm: string(alg), Use: "sig"}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	key.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return key, nil
}

// TokenSpec is what [IssueToken] puts in a token.
type TokenSpec struct {
	// Audience is the domain of the proxies that accept the token.
	// Required.
	Audience string
	// Key binds the token to one client key: its hostname label (52
	// characters) or a full tunnel hostname. Empty: any key.
	Key string
	// Names are the friendly names the token grants.
	Names []string
	// IssuedAt is the token's iat. Zero: now.
	IssuedAt time.Time
	// Expires is the token's exp. Zero: it never expires.
	Expires time.Time
	// NotBefore is the token's nbf. Zero: none.
	NotBefore time.Time
	// Rate and Burst cap the tunnel's requests per second, MaxBody its
	// bodies and messages, Streams its concurrent streams. Zero: the
	// proxy's own limit. A proxy applies a token's limit only where it is
	// lower than its own.
	Rate    float64
	Burst   int
	MaxBody int64
	Streams int
	// ID is the token's jti, which a revocation names. Empty: a random ID
	// that also encodes Expires (see [TokenIDExpiry]).
	ID string
}

// IssueToken signs a token for spec with key, a private Ed25519 or P-256
// JWK with a kid such as [NewSigningKey] makes. Times are whole seconds
// in the token. A name that [messages.CheckName] refuses, or a negative limit,
// refuses to issue.
func IssueToken(key *jose.JSONWebKey, spec TokenSpec) (string, error) {
	if key == nil {
		return "", errors.New("issue token: no signing key")
	}
	var alg jose.SignatureAlgorithm
	switch k := key.Key.(type) {
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("issue token: ECDSA signing keys must use P-256")
		}
		alg = jose.ES256
	default:
		return "", errors.New("issue token: the signing key must be a private Ed25519 or P-256 key")
	}
	if key.Algorithm != "" && key.Algorithm != string(alg) {
		return "", fmt.Errorf("issue token: the signing key says alg %q but is a %s key", key.Algorithm, alg)
	}
	if key.KeyID == "" {
		return "", errors.New("issue token: the signing key has no kid")
	}
	aud := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(spec.Audience)), ".")
	if aud == "" || strings.ContainsAny(aud, "/: ") {
		return "", fmt.Errorf("issue token: audience %q: want the proxy's domain, like tunnel.example.com", spec.Audience)
	}
	if spec.IssuedAt.IsZero() {
		spec.IssuedAt = time.Now()
	}
	if !spec.Expires.IsZero() && spec.Expires.Unix() <= spec.IssuedAt.Unix() {
		return "", errors.New("issue token: it would expire before it is issued")
	}
	if !spec.NotBefore.IsZero() && !spec.Expires.IsZero() && spec.NotBefore.Unix() >= spec.Expires.Unix() {
		return "", errors.New("issue token: not-before must be before it expires")
	}
	if math.IsNaN(spec.Rate) || math.IsInf(spec.Rate, 0) || spec.Rate < 0 || spec.Burst < 0 || spec.MaxBody < 0 || spec.Streams < 0 {
		return "", errors.New("issue token: limits must be finite and not negative")
	}
	if len(spec.Names) > maxTokenNames {
		return "", fmt.Errorf("issue token: at most %d names", maxTokenNames)
	}
	var names []string
	for _, n := range spec.Names {
		if err := messages.CheckName(n); err != nil {
			return "", fmt.Errorf("issue token: %w", err)
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if spec.ID == "" {
		spec.ID = newTokenID(spec.Expires)
	} else {
		if err := checkTokenID(spec.ID); err != nil {
			return "", fmt.Errorf("issue token: %w", err)
		}
		// An ID in the generated shape tells revocations when to lapse; it
		// must tell the truth.
		if lapse, ok := TokenIDExpiry(spec.ID); ok && (spec.Expires.IsZero() || lapse.Unix() != spec.Expires.Unix()+int64(TokenLeeway/time.Second)) {
			return "", fmt.Errorf("issue token: ID %q encodes an expiry other than the token's", spec.ID)
		}
	}
	c := tokenClaims{Claims: jwt.Claims{
		Audience:  jwt.Audience{aud},
		IssuedAt:  jwt.NewNumericDate(spec.IssuedAt),
		Expiry:    jwt.NewNumericDate(spec.Expires),
		NotBefore: jwt.NewNumericDate(spec.NotBefore),
		ID:        spec.ID,
	}}
	if spec.Key != "" {
		jkt, err := jktFromLabel(spec.Key)
		if err != nil {
			return "", fmt.Errorf("issue token: key: %w", err)
		}
		if c.Cnf, err = json.Marshal(confirmation{JKT: jkt}); err != nil {
			return "", fmt.Errorf("issue token: %w", err)
		}
	}
	kc := keyholeClaims{Names: names, Rate: spec.Rate, Burst: spec.Burst, MaxBody: spec.MaxBody, Streams: spec.Streams}
	if len(kc.Names) > 0 || kc.Rate != 0 || kc.Burst != 0 || kc.MaxBody != 0 || kc.Streams != 0 {
		var err error
		if c.Keyhole, err = json.Marshal(kc); err != nil {
			return "", fmt.Errorf("issue token: %w", err)
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	if len(tok) > MaxTokenLen {
		return "", fmt.Errorf("issue token: the token would be over %d bytes", MaxTokenLen)
	}
	return tok, nil
}

// checkTokenID accepts 1 to 128 characters of letters, digits and
// "-._~:+/=@", which can go into logs and registry keys as they are.
func checkTokenID(id string) error {
	if id == "" || len(id) > maxTokenIDLen {
		return fmt.Errorf("token ID must be 1 to %d characters", maxTokenIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && !strings.ContainsRune("-._~:+/=@", rune(c)) {
			return fmt.Errorf("token ID has %q: use letters, digits and -._~:+/=@", c)
		}
	}
	return nil
}

// A generated token ID is 26 characters of base32 (128 random bits), then
// for a token that expires, "." and its exp in Unix seconds.
const tokenIDRandLen = 26

func newTokenID(expires time.Time) string {
	b := make([]byte, 16)
	rand.Read(b)
	id := strings.ToLower(b32.EncodeToString(b))
	if !expires.IsZero() {
		id += "." + strconv.FormatInt(expires.Unix(), 10)
	}
	return id
}

// TokenIDExpiry reads the expiry an ID that [IssueToken] generated
// encodes, so that a revocation by ID can lapse when the token would have.
// It returns the first instant at which [TokenKeys.Verify] refuses the
// token anyway: its exp plus [TokenLeeway]. It reports false for any
// other ID, including a generated ID of a token that never expires.
func TokenIDExpiry(jti string) (time.Time, bool) {
	random, secs, ok := strings.Cut(jti, ".")
	if !ok || len(random) != tokenIDRandLen || !isBase32Lower(random) {
		return time.Time{}, false
	}
	if secs == "" || len(secs) > 12 || secs[0] == '0' || strings.Trim(secs, "0123456789") != "" {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0).Add(TokenLeeway), true
}

func isBase32Lower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}
