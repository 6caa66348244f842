package messages

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxJWS is the largest RegistrationRequest JWS the proxy accepts, in bytes.
const MaxJWS = 16 << 10

// HostnameLen is the length of a hostname label: unpadded base32 of a
// SHA-256 digest.
const HostnameLen = 52

// Protected header names signed into every registration, besides "alg" and
// "jwk".
const (
	headerNonce  = "nonce"
	headerDomain = "keyhole-domain"
)

// ErrRefused is wrapped by every error [VerifyRegistration] returns; the
// rest of the message is a reason fit to show the client.
var ErrRefused = errors.New("registration refused")

func refused(reason string) error { return fmt.Errorf("%w: %s", ErrRefused, reason) }

// allowedAlgs is the algorithm allow-list: exactly these, nothing else.
var allowedAlgs = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256}

// AllowedAlgs returns the signature algorithm allow-list, EdDSA and ES256,
// which registrations and the proxy's access tokens share. The slice is a
// copy.
func AllowedAlgs() []jose.SignatureAlgorithm { return slices.Clone(allowedAlgs) }

// RegistrationClaims is the JSON payload of a registration JWS.
type RegistrationClaims struct {
	// Token is what the proxy requires to register, if anything: its
	// shared registration token, or an access token (a JWT) signed by its
	// operator.
	Token string `json:"token,omitempty"`
	// Names are the friendly names the client asks to be served at as
	// well, each "<name>.<domain>"; each must be granted by Token. At most
	// [MaxNames].
	Names []string `json:"names,omitempty"`
	// Protect is who may visit the tunnel: basic auth users and IP lists
	// the proxy enforces before a request reaches the tunnel. Signed with
	// the rest, so no one in between can take it away. nil admits
	// everyone.
	Protect *Protection `json:"protect,omitempty"`
	// Pool says the client shares its key's hostname with the other
	// connections of the same key that say so too: requests are spread
	// over all of them. Without it the newest connection of a key takes
	// the hostname over.
	Pool bool `json:"pool,omitempty"`
	// TCP says the tunnel carries raw TCP streams (TCPRequest), not HTTP:
	// the proxy answers its HTTP visitors itself, with a page saying how
	// to reach it, and refuses TCP streams to a tunnel without it.
	TCP bool `json:"tcp,omitempty"`
	// RemotePort, with TCP, asks the proxy to expose the tunnel on this
	// public TCP port too, which the operator must allow; 0 asks for none.
	RemotePort int `json:"remote_port,omitempty"`
}

// Registration is a verified registration.
type Registration struct {
	// Label is the hostname label derived from the key: the first part of
	// the public hostname.
	Label string
	// Thumbprint is the RFC 7638 SHA-256 thumbprint of the public key.
	Thumbprint []byte
	Claims     RegistrationClaims
}

// Hostname returns the hostname label of a public key: the lowercase,
// unpadded base32 encoding of its RFC 7638 SHA-256 thumbprint, computed from
// the parsed key.
func Hostname(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	return labelOf(tp), nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func labelOf(thumbprint []byte) string { return strings.ToLower(b32.EncodeToString(thumbprint)) }

// IsHostnameLabel reports whether s has the shape of a hostname label.
func IsHostnameLabel(s string) bool {
	if len(s) != HostnameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// SignRegistration answers ch with a compact JWS signed by key, which must
// be an ed25519.PrivateKey (EdDSA) or a P-256 *ecdsa.PrivateKey (ES256). The
// public key, the nonce and the domain travel in the protected header.
func SignRegistration(key crypto.Signer, ch Challenge, claims RegistrationClaims) (string, error) {
	var alg jose.SignatureAlgorithm
	switch k := key.(type) {
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("sign registration: ECDSA keys must use P-256")
		}
		alg = jose.ES256
	default:
		return "", fmt.Errorf("sign registration: unsupported key type %T", key)
	}
	opts := (&jose.SignerOptions{EmbedJWK: true}).
		WithHeader(headerNonce, ch.Nonce).
		WithHeader(headerDomain, ch.Domain)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return "", fmt.Errorf("sign registration: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("sign registration: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign registration: %w", err)
	}
	return obj.CompactSerialize()
}

// VerifyRegistration checks a registration JWS against the challenge the
// proxy sent on this connection. Every failure wraps [ErrRefused]. It does
// not check the challenge's age; the caller knows when it was issued.
func VerifyRegistration(jws string, ch Challenge) (*Registration, error) {
	if len(jws) > MaxJWS {
		return nil, refused(fmt.Sprintf("registration larger than %d bytes", MaxJWS))
	}
	// Read "alg" ourselves first, so the refusal names the reason rather
	// than a library's message.
	if _, err := peekAlg(jws); err != nil {
		return nil, err
	}
	// Compact serialization only: it holds exactly one signature and no
	// unprotected header.
	obj, err := jose.ParseSignedCompact(jws, allowedAlgs)
	if err != nil {
		// go-jose has no sentinel for this; its messages are "JWK contains
		// private parameters" and "invalid embedded jwk, must be public key".
		if msg := err.Error(); strings.Contains(msg, "private parameters") || strings.Contains(msg, "must be public key") {
			return nil, refused("embedded key must be a public key")
		}
		return nil, refused("malformed JWS")
	}
	if len(obj.Signatures) != 1 {
		return nil, refused("exactly one signature required")
	}
	h := obj.Signatures[0].Protected
	// Match the key against the alg go-jose will verify with, not the one
	// peekAlg read: encoding/json matches names case-insensitively, so the
	// two can differ ({"alg":"ES256","ALG":"EdDSA"}).
	alg := jose.SignatureAlgorithm(h.Algorithm)
	jwk := h.JSONWebKey
	if jwk == nil {
		return nil, refused("protected header must embed the public key (jwk)")
	}
	if !jwk.IsPublic() {
		return nil, refused("embedded key must be a public key")
	}
	switch k := jwk.Key.(type) {
	case ed25519.PublicKey:
		if alg != jose.EdDSA {
			return nil, refused("alg does not match key type")
		}
	case *ecdsa.PublicKey:
		if alg != jose.ES256 || k.Curve != elliptic.P256() {
			return nil, refused("alg does not match key type")
		}
	default:
		return nil, refused("key type not allowed: use Ed25519 or P-256")
	}
	payload, err := obj.Verify(jwk.Key)
	if err != nil {
		return nil, refused("bad signature")
	}
	if h.Nonce == "" || h.Nonce != ch.Nonce {
		return nil, refused("nonce does not match this connection's challenge")
	}
	if d, _ := h.ExtraHeaders[headerDomain].(string); d != ch.Domain {
		return nil, refused("signed for another domain")
	}
	var claims RegistrationClaims
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, refused("payload is not a JSON object")
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, refused("bad key")
	}
	return &Registration{Label: labelOf(tp), Thumbprint: tp, Claims: claims}, nil
}

func peekAlg(jws string) (jose.SignatureAlgorithm, error) {
	protected, _, ok := strings.Cut(jws, ".")
	if !ok {
		return "", refused("malformed JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(protected)
	if err != nil {
		return "", refused("malformed JWS")
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", refused("malformed JWS")
	}
	for _, a := range allowedAlgs {
		if string(a) == h.Alg {
			return a, nil
		}
	}
	return "", refused(fmt.Sprintf("alg %q not allowed: use EdDSA or ES256", h.Alg))
}
