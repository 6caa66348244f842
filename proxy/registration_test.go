package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func TestRegistrationRefused(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	ed := newEd25519(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := func(ch messages.Challenge) string {
		jws, err := messages.SignRegistration(ed, ch, messages.RegistrationClaims{})
		if err != nil {
			t.Fatal(err)
		}
		return jws
	}
	registration := func(jws string) []byte {
		return messages.Encode(&messages.RegistrationRequest{JWS: jws})
	}
	const beforeReg = "registration required before any other message"

	for _, tc := range []struct {
		name   string
		typ    websocket.MessageType // default binary
		frame  func(ch messages.Challenge) []byte
		reason string
	}{
		{name: "alg none", reason: `alg "none" not allowed`, frame: func(ch messages.Challenge) []byte {
			return registration(handJWS(t, regHeader("none", jwkJSON(t, ed.Public()), ch), []byte(`{}`), nil))
		}},
		{name: "HS256", reason: `alg "HS256" not allowed`, frame: func(ch messages.Challenge) []byte {
			return registration(joseSign(t, jose.HS256, make([]byte, 32), map[jose.HeaderKey]any{
				"jwk": jose.JSONWebKey{Key: ed.Public()}, "nonce": ch.Nonce, "keyhole-domain": ch.Domain,
			}, false))
		}},
		{name: "ES256 header signed with an Ed25519 key", reason: "alg does not match key type", frame: func(ch messages.Challenge) []byte {
			return registration(handJWS(t, regHeader("ES256", jwkJSON(t, ed.Public()), ch), []byte(`{}`), edSign(ed)))
		}},
		{name: "EdDSA header signed with a P-256 key", reason: "alg does not match key type", frame: func(ch messages.Challenge) []byte {
			return registration(handJWS(t, regHeader("EdDSA", jwkJSON(t, ec.Public()), ch), []byte(`{}`), es256Sign(t, ec)))
		}},
		{name: "embedded private Ed25519 key", reason: "embedded key must be a public key", frame: func(ch messages.Challenge) []byte {
			return registration(handJWS(t, regHeader("EdDSA", jwkJSON(t, ed), ch), []byte(`{}`), edSign(ed)))
		}},
		{name: "embedded private P-256 key", reason: "embedded key must be a public key", frame: func(ch messages.Challenge) []byte {
			return registration(handJWS(t, regHeader("ES256", jwkJSON(t, ec), ch), []byte(`{}`), es256Sign(t, ec)))
		}},
		{name: "RSA key, RS256", reason: `alg "RS256" not allowed`, frame: func(ch messages.Challenge) []byte {
			return registration(joseSign(t, jose.RS256, rsaKey, map[jose.HeaderKey]any{"nonce": ch.Nonce, "keyhole-domain": ch.Domain}, true))
		}},
		{name: "RSA key under ES256", reason: "key type not allowed", frame: func(ch messages.Challenge) []byte {
			return registration(handJWS(t, regHeader("ES256", jwkJSON(t, rsaKey.Public()), ch), []byte(`{}`), es256Sign(t, ec)))
		}},
		{name: "JWS of 16 KiB + 1", reason: "larger than 16384 bytes", frame: func(ch messages.Challenge) []byte {
			return registration(sizedJWS(t, ed, ch, messages.MaxJWS+1))
		}},
		{name: "JWS of 40 KB", reason: "larger than 16384 bytes", frame: func(ch messages.Challenge) []byte {
			return registration(sizedJWS(t, ed, ch, 40<<10))
		}},
		// Larger than the websocket's registration read limit, too.
		{name: "JWS of 100 KB", reason: "larger than 16384 bytes", frame: func(ch messages.Challenge) []byte {
			return registration(sizedJWS(t, ed, ch, 100<<10))
		}},
		{name: "bad signature", reason: "bad signature", frame: func(ch messages.Challenge) []byte {
			jws := good(ch)
			i := strings.LastIndexByte(jws, '.')
			sig, _ := b64.DecodeString(jws[i+1:])
			sig[0] ^= 1
			return registration(jws[:i+1] + b64.EncodeToString(sig))
		}},
		{name: "nonce of another challenge", reason: "nonce does not match", frame: func(ch messages.Challenge) []byte {
			return registration(good(messages.Challenge{Nonce: "0123456789abcdef0123456789abcdef", Domain: ch.Domain}))
		}},
		{name: "signed for another domain", reason: "signed for another domain", frame: func(ch messages.Challenge) []byte {
			return registration(good(messages.Challenge{Nonce: ch.Nonce, Domain: "evil.example"}))
		}},
		{name: "not a JWS", reason: "malformed JWS", frame: func(ch messages.Challenge) []byte {
			return registration("hello")
		}},
		{name: "Ping first", reason: beforeReg, frame: func(messages.Challenge) []byte {
			return messages.Encode(&messages.Ping{})
		}},
		{name: "HTTPResponse first", reason: beforeReg, frame: func(messages.Challenge) []byte {
			return messages.Encode(&messages.HTTPResponse{ID: messages.NewID(), Status: 200})
		}},
		{name: "Error first", reason: beforeReg, frame: func(messages.Challenge) []byte {
			return messages.Encode(&messages.Error{Code: messages.CodeGoingAway})
		}},
		{name: "RegistrationResponse first", reason: beforeReg, frame: func(messages.Challenge) []byte {
			return messages.Encode(&messages.RegistrationResponse{Hostname: "x.localhost"})
		}},
		{name: "unknown message type first", reason: beforeReg, frame: func(messages.Challenge) []byte {
			return []byte{messages.Version, 0x7f}
		}},
		{name: "truncated frame", reason: beforeReg, frame: func(messages.Challenge) []byte {
			return registration(good(messages.Challenge{}))[:10]
		}},
		{name: "empty binary message", reason: beforeReg, frame: func(messages.Challenge) []byte { return nil }},
		{name: "another protocol version", reason: "unsupported protocol version", frame: func(ch messages.Challenge) []byte {
			f := registration(good(ch))
			f[0] = messages.Version + 1
			return f
		}},
		// A valid registration, but in a text message.
		{name: "text message", typ: websocket.MessageText, reason: beforeReg, frame: func(ch messages.Challenge) []byte {
			return registration(good(ch))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, env)
			typ := tc.typ
			if typ == 0 {
				typ = websocket.MessageBinary
			}
			rc.sendFrame(typ, tc.frame(rc.ch))
			wantClose(t, rc.readErr(), websocket.StatusPolicyViolation, tc.reason)
		})
	}

	// The fixtures are sound: the same key, signed properly, registers.
	t.Run("control: a good registration", func(t *testing.T) {
		rc := dialRaw(t, env)
		rc.registerJWS(good(rc.ch))
		if label, _ := messages.Hostname(ed.Public()); rc.label != label {
			t.Fatalf("registered %q, want %q", rc.label, label)
		}
	})
}

// A JWS of exactly MaxJWS bytes registers; one byte more is refused.
func TestRegistrationSizeEdge(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	key := newEd25519(t)
	rc := dialRaw(t, env)
	rc.registerJWS(sizedJWS(t, key, rc.ch, messages.MaxJWS))
	if want, _ := messages.Hostname(key.Public()); rc.label != want {
		t.Fatalf("label %q, want %q", rc.label, want)
	}
	rc2 := dialRaw(t, env)
	rc2.send(&messages.RegistrationRequest{JWS: sizedJWS(t, newEd25519(t), rc2.ch, messages.MaxJWS+1)})
	wantClose(t, rc2.readErr(), websocket.StatusPolicyViolation, "larger than 16384 bytes")
}

// A registration captured on one connection is useless on another.
func TestRegistrationReplayedNonce(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	key := newEd25519(t)
	first := dialRaw(t, env)
	jws, err := messages.SignRegistration(key, first.ch, messages.RegistrationClaims{})
	if err != nil {
		t.Fatal(err)
	}
	second := dialRaw(t, env)
	if second.ch.Nonce == first.ch.Nonce {
		t.Fatal("two connections got the same nonce")
	}
	first.registerJWS(jws)
	second.send(&messages.RegistrationRequest{JWS: jws})
	wantClose(t, second.readErr(), websocket.StatusPolicyViolation, "nonce does not match this connection's challenge")

	// The replay took nothing from the first connection.
	ch := goDo(env, first.request(http.MethodGet, "/still-mine", nil))
	req := first.nextRequest()
	first.respond(req.ID, 200, nil, []byte("first"))
	if r := await(t, ch, 10*time.Second); r.status != 200 || r.body != "first" {
		t.Fatalf("got %d %q", r.status, r.body)
	}

	// Nor may it be replayed on the connection it was made for, once used
	// there: the connection is registered and a second registration is a
	// protocol violation.
	first.send(&messages.RegistrationRequest{JWS: jws})
	wantClose(t, first.closed(10*time.Second), websocket.StatusPolicyViolation, "unexpected RegistrationRequest")
}

func TestRegistrationExpiredNonce(t *testing.T) {
	cfg := proxy.Config{}
	proxy.SetChallengeTTL(&cfg, time.Nanosecond)
	env := tunneltest.StartProxy(t, cfg)
	rc := dialRaw(t, env)
	jws, err := messages.SignRegistration(newEd25519(t), rc.ch, messages.RegistrationClaims{})
	if err != nil {
		t.Fatal(err)
	}
	rc.send(&messages.RegistrationRequest{JWS: jws})
	wantClose(t, rc.readErr(), websocket.StatusPolicyViolation, "challenge expired")

	// The real client gives up and reports the reason.
	err = runClient(t, &client.Client{Proxy: env.ProxyURL(), Key: tunneltest.NewKey(t), Handler: http.NotFoundHandler()})
	var refused *client.RefusedError
	if !errors.As(err, &refused) || !strings.Contains(refused.Reason, "challenge expired") {
		t.Fatalf("Run = %v, want a RefusedError naming the expired challenge", err)
	}
}

// runClient runs c until it returns by itself, which a refused client does
// at once.
func runClient(t *testing.T, c *client.Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Run(ctx)
	if ctx.Err() != nil {
		t.Fatal("client still running after 10s")
	}
	return err
}

func TestRegistrationToken(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{RegistrationToken: "s3cret"})
	const reason = "a valid registration token is required"
	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"wrong token", "guess"},
		{"prefix of the token", "s3cre"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runClient(t, &client.Client{Proxy: env.ProxyURL(), Key: tunneltest.NewKey(t), Token: tc.token, Handler: http.NotFoundHandler()})
			var refused *client.RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("Run = %v, want *client.RefusedError", err)
			}
			if !strings.Contains(refused.Reason, reason) || !strings.Contains(err.Error(), reason) {
				t.Fatalf("reason %q (error %q) does not say %q", refused.Reason, err, reason)
			}
		})
	}
	t.Run("raw client without token", func(t *testing.T) {
		rc := dialRaw(t, env)
		jws, err := messages.SignRegistration(newEd25519(t), rc.ch, messages.RegistrationClaims{})
		if err != nil {
			t.Fatal(err)
		}
		rc.send(&messages.RegistrationRequest{JWS: jws})
		wantClose(t, rc.readErr(), websocket.StatusPolicyViolation, reason)
	})
	t.Run("right token", func(t *testing.T) {
		tun := env.Connect(&client.Client{Token: "s3cret", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("in")) })})
		if r := get(t, env, tun.URL+"/"); r.status != 200 || r.body != "in" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
	})
}

// The control endpoint refuses requests that carry a browser Origin.
func TestControlRefusesOrigin(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	_, port, _ := strings.Cut(env.Addr, ":")
	for _, origin := range []string{"https://evil.example", "http://localhost:" + port, "null"} {
		t.Run(origin, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, resp, err := websocket.Dial(ctx, "ws://"+env.Addr+proxy.ControlPath, &websocket.DialOptions{
				HTTPClient: env.HTTP,
				HTTPHeader: http.Header{"Origin": {origin}},
			})
			if err == nil {
				ws.CloseNow()
				t.Fatal("websocket upgrade accepted with an Origin")
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get("Upgrade") != "" {
				t.Fatalf("response %+v", resp)
			}
		})
	}
	t.Run("plain GET", func(t *testing.T) {
		req := newRequest(t, http.MethodGet, "http://"+env.Addr+proxy.ControlPath, nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		r := mustDo(t, env, req)
		wantPublicError(t, r, http.StatusForbidden)
		if r.header.Get("Sec-WebSocket-Accept") != "" {
			t.Fatal("upgrade headers in a refusal")
		}
	})
	// Without an Origin the same endpoint upgrades: the refusal is the
	// Origin's doing.
	t.Run("no origin", func(t *testing.T) {
		dialRaw(t, env)
	})
}
