package messages_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to a
// frame that decodes to the same message. A Batch it accepts holds only
// frames of at least a header and never a Batch, so unpacking one is safe.
func FuzzDecode(f *testing.F) {
	for _, s := range samples() {
		f.Add(messages.Encode(s.msg))
	}
	for _, h := range hostileFrames() {
		f.Add(h.frame)
	}
	for _, e := range wireExamples() {
		f.Add(messages.Encode(e.msg))
	}
	f.Add(unsortedHeaderFrame())
	f.Add(newFrame(messages.TypeWSMessage).id(testID).raw(3, 1).u32(1).raw('x').b)
	f.Add([]byte{messages.Version, 0x7f, 0, 0})
	f.Add([]byte{messages.Version, byte(messages.TypePing), 0})
	f.Add([]byte{1, byte(messages.TypePing)})
	f.Add(messages.Encode(&messages.Envelope{ReplyTo: "p", Conn: "c", Frame: messages.Encode(&messages.Envelope{
		ReplyTo: "q", Conn: "d", Frame: messages.Encode(&messages.Ping{}),
	})}))
	// Flags: unknown bits on each flagged type.
	f.Add(newFrame(messages.TypeHTTPRequest).id(testID).raw(0x04).u32(1).str("GET").str("/").str("h").u32(0).b)
	f.Add(newFrame(messages.TypeHTTPResponse).id(testID).raw(messages.FlagExpectContinue).u16(200).u32(0).b)
	f.Add(newFrame(messages.TypeWSMessage).id(testID).raw(byte(messages.OpText), 0x80).u32(0).b)
	f.Add(newFrame(messages.TypeData).id(testID).raw(0x03).u32(0).b)
	// Batches: nested, with short or cut inner frames, of every sample.
	ping := messages.Encode(&messages.Ping{})
	f.Add(newFrame(messages.TypeBatch).frame(newFrame(messages.TypeBatch).frame(ping).b).b)
	f.Add(newFrame(messages.TypeBatch).frame(ping[:1]).b)
	f.Add(newFrame(messages.TypeBatch).frame(ping).raw(0, 0, 0).b)
	var all [][]byte
	for _, s := range samples() {
		if s.msg.Type() != messages.TypeBatch {
			all = append(all, messages.Encode(s.msg))
		}
	}
	f.Add(messages.AppendBatch(nil, all))
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := messages.Decode(frame)
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned %#v with error %v", m, err)
			}
			return
		}
		if b, ok := m.(*messages.Batch); ok {
			for _, inner := range b.Frames {
				if len(inner) < messages.HeaderSize || messages.Type(inner[1]) == messages.TypeBatch {
					t.Fatalf("Batch accepted inner frame % x", inner)
				}
				messages.Decode(inner) // must not panic, whatever it says
			}
		}
		if messages.Type(frame[1]).HasID() {
			if id, ok := messages.PeekID(frame); !ok || id != reflect.ValueOf(m).Elem().FieldByName("ID").Interface().(messages.ID) {
				t.Fatalf("PeekID = %v, %v; the decoded ID differs", id, ok)
			}
		}
		again := messages.Encode(m)
		m2, err := messages.Decode(again)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v\n% x", err, again)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%#v\n%#v", m, m2)
		}
		// The encoding is canonical: encoding the re-decoded message
		// gives the same bytes.
		if third := messages.Encode(m2); !bytes.Equal(third, again) {
			t.Fatalf("encoding is not stable:\n% x\n% x", again, third)
		}
	})
}

// FuzzCloseReason: whatever a peer sends as a close reason, what is passed
// on fits a close frame, and a valid reason is only ever cut, at the last
// character boundary that fits.
func FuzzCloseReason(f *testing.F) {
	for _, s := range []string{"", "bye", strings.Repeat("a", 200), strings.Repeat("é", 70), strings.Repeat("a", 122) + "€", "a\xffb", strings.Repeat("\xff", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := messages.CloseReason(in)
		if !utf8.ValidString(out) || len(out) > messages.MaxCloseReason {
			t.Fatalf("CloseReason(%q) = %q: %d bytes, valid %v", in, out, len(out), utf8.ValidString(out))
		}
		if !utf8.ValidString(in) {
			return
		}
		if !strings.HasPrefix(in, out) {
			t.Fatalf("CloseReason(%q) = %q, not a prefix", in, out)
		}
		if rest := in[len(out):]; rest != "" {
			if r, n := utf8.DecodeRuneInString(rest); r == utf8.RuneError && n <= 1 {
				t.Fatalf("CloseReason(%q) cut inside a character", in)
			} else if len(out)+n <= messages.MaxCloseReason {
				t.Fatalf("CloseReason(%q) = %q: cut more than needed", in, out)
			}
		}
	})
}

// FuzzVerifyRegistration: VerifyRegistration never panics, and anything it
// accepts was signed for this challenge and names a well-formed label.
func FuzzVerifyRegistration(f *testing.F) {
	ed := rfc8037Key(f)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ch := testChallenge
	good := mustSign(f, ed, ch, messages.RegistrationClaims{Token: "s3cret"})
	seeds := []string{
		good,
		mustSign(f, ec, ch, messages.RegistrationClaims{}),
		mustSign(f, ed, messages.Challenge{Nonce: "other", Domain: ch.Domain}, messages.RegistrationClaims{}),
		flipSignature(f, good),
		good[:len(good)/2],
		handJWS(f, header("none", jwkJSON(f, ed.Public()), ch), []byte(`{}`), nil),
		handJWS(f, header("ES256", jwkJSON(f, ed.Public()), ch), []byte(`{}`), edSign(ed)),
		handJWS(f, header("EdDSA", jwkJSON(f, ed), ch), []byte(`{}`), edSign(ed)),
		"",
		"..",
		`{"payload":"e30","signatures":[]}`,
	}
	for _, s := range seeds {
		f.Add(s, ch.Nonce, ch.Domain)
	}
	f.Fuzz(func(t *testing.T, jws, nonce, domain string) {
		ch := messages.Challenge{Nonce: nonce, Domain: domain}
		reg, err := messages.VerifyRegistration(jws, ch)
		if err != nil {
			if reg != nil {
				t.Fatalf("registration %+v returned with error %v", reg, err)
			}
			return
		}
		if len(jws) > messages.MaxJWS {
			t.Fatalf("accepted a %d-byte JWS", len(jws))
		}
		if len(reg.Label) != messages.HostnameLen || !messages.IsHostnameLabel(reg.Label) {
			t.Fatalf("label %q", reg.Label)
		}
		// Check what was signed independently of VerifyRegistration.
		obj, err := jose.ParseSignedCompact(jws, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
		if err != nil {
			t.Fatalf("accepted, but go-jose cannot parse it: %v", err)
		}
		h := obj.Signatures[0].Protected
		if h.Nonce != nonce || h.Nonce == "" {
			t.Fatalf("accepted nonce %q for challenge nonce %q", h.Nonce, nonce)
		}
		if d, _ := h.ExtraHeaders["keyhole-domain"].(string); d != domain {
			t.Fatalf("accepted domain %q for challenge domain %q", d, domain)
		}
		if h.JSONWebKey == nil {
			t.Fatal("accepted without an embedded key")
		}
		if _, err := obj.Verify(h.JSONWebKey.Key); err != nil {
			t.Fatalf("accepted, but the signature does not verify: %v", err)
		}
		label, err := messages.Hostname(h.JSONWebKey.Key)
		if err != nil || label != reg.Label {
			t.Fatalf("label %q, but the key gives %q (%v)", reg.Label, label, err)
		}
		if strings.ToLower(b32.EncodeToString(reg.Thumbprint)) != reg.Label {
			t.Fatalf("thumbprint %x does not give label %q", reg.Thumbprint, reg.Label)
		}
	})
}
