package messages_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// The wire values below are part of the protocol (docs/PROTOCOL.md). A
// failure here means a change that breaks every deployed peer: add a new
// value instead, or bump Version.
func TestWireValuesPinned(t *testing.T) {
	if messages.Version != 1 {
		t.Errorf("Version = %d, want 1", messages.Version)
	}
	if messages.HeaderSize != 2 {
		t.Errorf("HeaderSize = %d, want 2", messages.HeaderSize)
	}
	types := []struct {
		typ  messages.Type
		want uint8
		name string
	}{
		{messages.TypeChallenge, 0x01, "Challenge"},
		{messages.TypeRegistrationRequest, 0x02, "RegistrationRequest"},
		{messages.TypeRegistrationResponse, 0x03, "RegistrationResponse"},
		{messages.TypeHTTPRequest, 0x10, "HTTPRequest"},
		{messages.TypeHTTPResponse, 0x11, "HTTPResponse"},
		{messages.TypeWSRequest, 0x20, "WSRequest"},
		{messages.TypeWSResponse, 0x21, "WSResponse"},
		{messages.TypeWSMessage, 0x22, "WSMessage"},
		{messages.TypeWSTeardown, 0x23, "WSTeardown"},
		{messages.TypePing, 0x30, "Ping"},
		{messages.TypeError, 0x31, "Error"},
		{messages.TypeEnvelope, 0x40, "Envelope"},
		{messages.TypeTakeover, 0x41, "Takeover"},
	}
	for _, tc := range types {
		if uint8(tc.typ) != tc.want {
			t.Errorf("Type%s = 0x%02x, want 0x%02x", tc.name, uint8(tc.typ), tc.want)
		}
		if got := tc.typ.String(); got != tc.name {
			t.Errorf("Type(0x%02x).String() = %q, want %q", tc.want, got, tc.name)
		}
	}
	// Every sample must be covered above, so a new type cannot skip pinning.
	pinned := map[messages.Type]bool{}
	for _, tc := range types {
		pinned[tc.typ] = true
	}
	for _, s := range samples() {
		if !pinned[s.msg.Type()] {
			t.Errorf("%s: type 0x%02x is not pinned", s.name, uint8(s.msg.Type()))
		}
	}
	if got := messages.Type(0x7f).String(); got != "Type(0x7f)" {
		t.Errorf("Type(0x7f).String() = %q", got)
	}

	codes := []struct {
		code messages.ErrorCode
		want uint16
	}{
		{messages.CodeCanceled, 1},
		{messages.CodeUnavailable, 2},
		{messages.CodeRateLimited, 3},
		{messages.CodeTooLarge, 4},
		{messages.CodeBadResponse, 5},
		{messages.CodeUpstream, 6},
		{messages.CodeOverloaded, 7},
		{messages.CodeReplaced, 8},
		{messages.CodeGoingAway, 9},
		{messages.CodePolicy, 10},
		{messages.CodeTimeout, 11},
	}
	for _, tc := range codes {
		if uint16(tc.code) != tc.want {
			t.Errorf("error code %d, want %d", tc.code, tc.want)
		}
	}

	if messages.OpText != 1 || messages.OpBinary != 2 {
		t.Errorf("opcodes = %d, %d; want 1, 2 (RFC 6455)", messages.OpText, messages.OpBinary)
	}
	if messages.MaxJWS != 8192 {
		t.Errorf("MaxJWS = %d, want 8192", messages.MaxJWS)
	}
	if messages.HostnameLen != 52 {
		t.Errorf("HostnameLen = %d, want 52", messages.HostnameLen)
	}
}

var testID = messages.ID{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}

// allBytes holds every byte value once, so a body survives only if the
// framing is binary-clean.
func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

type sample struct {
	name string
	msg  messages.Message
}

// samples returns at least one message of every type, in the form Decode
// returns it: empty headers, bodies and lists are nil.
func samples() []sample {
	id := testID
	return []sample{
		{"Challenge", &messages.Challenge{Nonce: "q0lA9zXcVw2gXKQ3PHrKsQ", Domain: "tunnel.example"}},
		{"Challenge/empty", &messages.Challenge{}},
		{"RegistrationRequest", &messages.RegistrationRequest{JWS: "eyJhbGciOiJFZERTQSJ9.e30.c2ln"}},
		{"RegistrationResponse", &messages.RegistrationResponse{
			Hostname:      "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			URL:           "https://sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			PingMillis:    10000,
			MaxBody:       500 << 10,
			TimeoutMillis: 30000,
		}},
		{"RegistrationResponse/max", &messages.RegistrationResponse{PingMillis: ^uint32(0), MaxBody: ^uint32(0), TimeoutMillis: ^uint32(0)}},
		{"HTTPRequest", &messages.HTTPRequest{
			ID:     id,
			Method: "POST",
			URI:    "/upload?name=a%20b&x=1",
			Host:   "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			Header: messages.Header{
				"Content-Type": {"application/octet-stream"},
				"Accept":       {"text/html", "*/*;q=0.8"},
				"X-Empty":      {""},
			},
			Body: allBytes(),
		}},
		{"HTTPRequest/HEAD-no-body", &messages.HTTPRequest{ID: id, Method: "HEAD", URI: "/", Host: "h"}},
		{"HTTPRequest/PATCH", &messages.HTTPRequest{ID: id, Method: "PATCH", URI: "/r/1", Host: "h", Body: []byte(`{"a":1}`)}},
		{"HTTPResponse", &messages.HTTPResponse{
			ID:     id,
			Status: 200,
			Header: messages.Header{
				// Two values of one name: both kept, in order.
				"Set-Cookie":   {"b=2; Path=/", "a=1; Path=/"},
				"Content-Type": {"application/octet-stream"},
			},
			Body: allBytes(),
		}},
		{"HTTPResponse/204-empty", &messages.HTTPResponse{ID: id, Status: 204}},
		{"WSRequest", &messages.WSRequest{
			ID:           id,
			URI:          "/socket?room=1",
			Host:         "h.tunnel.example",
			Header:       messages.Header{"Origin": {"https://app.example"}, "Cookie": {"s=1"}},
			Subprotocols: []string{"graphql-transport-ws", "graphql-ws", "chat.v2"},
		}},
		{"WSRequest/one-empty-subprotocol", &messages.WSRequest{ID: id, URI: "/", Host: "h", Subprotocols: []string{""}}},
		{"WSRequest/bare", &messages.WSRequest{ID: id}},
		{"WSResponse/101", &messages.WSResponse{ID: id, Status: 101, Subprotocol: "graphql-ws"}},
		{"WSResponse/refused", &messages.WSResponse{
			ID:     id,
			Status: 403,
			Header: messages.Header{"Content-Type": {"text/plain"}},
			Body:   []byte("no"),
		}},
		{"WSMessage/text", &messages.WSMessage{ID: id, Opcode: messages.OpText, Data: []byte("héllo")}},
		{"WSMessage/binary", &messages.WSMessage{ID: id, Opcode: messages.OpBinary, Data: allBytes()}},
		{"WSMessage/empty", &messages.WSMessage{ID: id, Opcode: messages.OpText}},
		{"WSTeardown", &messages.WSTeardown{ID: id, Code: 1000, Reason: "bye"}},
		{"WSTeardown/no-reason", &messages.WSTeardown{ID: id, Code: 1005}},
		{"Ping", &messages.Ping{}},
		{"Error", &messages.Error{ID: id, Code: messages.CodeRateLimited, RetryAfter: 7, Reason: "slow down"}},
		{"Error/zero-ID", &messages.Error{Code: messages.CodeGoingAway, Reason: "shutting down"}},
		{"Envelope", &messages.Envelope{
			ReplyTo: "proxy-7f3a",
			Conn:    "conn-19",
			Frame:   messages.Encode(&messages.WSMessage{ID: id, Opcode: messages.OpBinary, Data: allBytes()}),
		}},
		{"Envelope/empty", &messages.Envelope{}},
		{"Takeover", &messages.Takeover{Hostname: "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example"}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			frame := messages.Encode(s.msg)
			if frame[0] != messages.Version || frame[1] != byte(s.msg.Type()) {
				t.Fatalf("frame starts % x, want %02x %02x", frame[:2], messages.Version, byte(s.msg.Type()))
			}
			got, err := messages.Decode(frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, s.msg) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, s.msg)
			}
			// Equal messages encode to equal bytes, whatever the map order.
			for range 5 {
				if again := messages.Encode(got); !bytes.Equal(again, frame) {
					t.Fatalf("re-encoding differs:\n% x\n% x", again, frame)
				}
			}
			// Append adds to what is there and nothing else.
			prefix := []byte("prefix")
			if out := messages.Append(prefix, s.msg); !bytes.Equal(out, append([]byte("prefix"), frame...)) {
				t.Fatalf("Append did not extend its argument")
			}
		})
	}
}

func TestHeaderValueOrder(t *testing.T) {
	in := &messages.HTTPResponse{ID: testID, Status: 200, Header: messages.Header{
		"Set-Cookie": {"z=26", "a=1", "m=13"},
		"Vary":       {"Origin", "Accept-Encoding"},
	}}
	out, err := messages.Decode(messages.Encode(in))
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*messages.HTTPResponse).Header["Set-Cookie"]
	if want := []string{"z=26", "a=1", "m=13"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Set-Cookie = %q, want %q", got, want)
	}
}

// Decode normalises empty to nil: an empty or nil header, body, data, frame
// or subprotocol list all decode as nil, and a name with no values is
// dropped. docs/PROTOCOL.md documents this.
func TestDecodeNormalisesEmptyToNil(t *testing.T) {
	tests := []struct {
		name    string
		in, out messages.Message
	}{
		{"HTTPRequest",
			&messages.HTTPRequest{ID: testID, Method: "GET", Header: messages.Header{}, Body: []byte{}},
			&messages.HTTPRequest{ID: testID, Method: "GET"}},
		{"HTTPResponse/name-without-values",
			&messages.HTTPResponse{ID: testID, Status: 200, Header: messages.Header{"X-None": {}, "X-One": {"1"}}, Body: []byte{}},
			&messages.HTTPResponse{ID: testID, Status: 200, Header: messages.Header{"X-One": {"1"}}}},
		{"HTTPResponse/only-names-without-values",
			&messages.HTTPResponse{ID: testID, Status: 200, Header: messages.Header{"X-None": nil}},
			&messages.HTTPResponse{ID: testID, Status: 200}},
		{"WSRequest",
			&messages.WSRequest{ID: testID, Header: messages.Header{}, Subprotocols: []string{}},
			&messages.WSRequest{ID: testID}},
		{"WSResponse",
			&messages.WSResponse{ID: testID, Status: 101, Header: messages.Header{}, Body: []byte{}},
			&messages.WSResponse{ID: testID, Status: 101}},
		{"WSMessage",
			&messages.WSMessage{ID: testID, Opcode: messages.OpBinary, Data: []byte{}},
			&messages.WSMessage{ID: testID, Opcode: messages.OpBinary}},
		{"Envelope",
			&messages.Envelope{ReplyTo: "a", Conn: "b", Frame: []byte{}},
			&messages.Envelope{ReplyTo: "a", Conn: "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frame := messages.Encode(tc.in)
			if nilFrame := messages.Encode(tc.out); !bytes.Equal(frame, nilFrame) {
				t.Fatalf("empty and nil encode differently:\n% x\n% x", frame, nilFrame)
			}
			got, err := messages.Decode(frame)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.out) {
				t.Fatalf("got %#v\nwant %#v", got, tc.out)
			}
		})
	}
}

// frameBuilder writes frames by hand, as a peer in another language would.
type frameBuilder struct{ b []byte }

func newFrame(t messages.Type) *frameBuilder {
	return &frameBuilder{b: []byte{messages.Version, byte(t)}}
}

func (f *frameBuilder) raw(b ...byte) *frameBuilder     { f.b = append(f.b, b...); return f }
func (f *frameBuilder) id(id messages.ID) *frameBuilder { return f.raw(id[:]...) }
func (f *frameBuilder) u16(v uint16) *frameBuilder {
	f.b = binary.BigEndian.AppendUint16(f.b, v)
	return f
}
func (f *frameBuilder) u32(v uint32) *frameBuilder {
	f.b = binary.BigEndian.AppendUint32(f.b, v)
	return f
}
func (f *frameBuilder) str(s string) *frameBuilder { return f.u32(uint32(len(s))).raw([]byte(s)...) }

// A decoder must accept header pairs in any order; only the encoder sorts.
func unsortedHeaderFrame() []byte {
	return newFrame(messages.TypeHTTPResponse).id(testID).u16(200).
		u32(4).
		str("Set-Cookie").str("b=2").
		str("Content-Type").str("text/plain").
		str("Set-Cookie").str("a=1").
		str("Accept").str("x").
		u32(0).b
}

func TestDecodeAcceptsUnsortedHeader(t *testing.T) {
	m, err := messages.Decode(unsortedHeaderFrame())
	if err != nil {
		t.Fatal(err)
	}
	want := &messages.HTTPResponse{ID: testID, Status: 200, Header: messages.Header{
		"Set-Cookie":   {"b=2", "a=1"},
		"Content-Type": {"text/plain"},
		"Accept":       {"x"},
	}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %#v\nwant %#v", m, want)
	}
	// Re-encoding sorts by name and keeps the values' order.
	sorted := newFrame(messages.TypeHTTPResponse).id(testID).u16(200).
		u32(4).
		str("Accept").str("x").
		str("Content-Type").str("text/plain").
		str("Set-Cookie").str("b=2").
		str("Set-Cookie").str("a=1").
		u32(0).b
	if got := messages.Encode(m); !bytes.Equal(got, sorted) {
		t.Fatalf("re-encoded:\n% x\nwant\n% x", got, sorted)
	}
}

// Decoded byte slices alias the frame but cannot be appended into it.
func TestDecodedBytesDoNotGrowIntoFrame(t *testing.T) {
	frame := messages.Encode(&messages.HTTPRequest{ID: testID, Method: "GET", Body: []byte("ab")})
	frame = append(frame, 0xEE) // trailing byte is malformed, so decode the real prefix
	m, err := messages.Decode(frame[:len(frame)-1])
	if err != nil {
		t.Fatal(err)
	}
	body := m.(*messages.HTTPRequest).Body
	_ = append(body, 'X')
	if frame[len(frame)-1] != 0xEE {
		t.Fatal("appending to a decoded body overwrote the frame")
	}
}

// envelopeFrameStart is where an Envelope's inner frame begins.
func envelopeFrameStart(e *messages.Envelope) int {
	return messages.HeaderSize + 4 + len(e.ReplyTo) + 4 + len(e.Conn)
}

func TestDecodeTruncated(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			frame := messages.Encode(s.msg)
			end := len(frame)
			if e, ok := s.msg.(*messages.Envelope); ok {
				// The inner frame runs to the end of the envelope and has
				// no length of its own: cutting it leaves a valid envelope
				// whose inner frame then fails to decode. Only the part
				// before it can be truncated.
				end = envelopeFrameStart(e)
			}
			for n := range end {
				m, err := messages.Decode(frame[:n:n])
				if !errors.Is(err, messages.ErrMalformed) {
					t.Fatalf("Decode(first %d of %d bytes) = %v, %v; want ErrMalformed", n, len(frame), m, err)
				}
				if m != nil {
					t.Fatalf("Decode returned a message with an error")
				}
			}
		})
	}
}

func TestDecodeTruncatedEnvelopeFrame(t *testing.T) {
	inner := messages.Encode(&messages.WSTeardown{ID: testID, Code: 1000, Reason: "bye"})
	env := &messages.Envelope{ReplyTo: "p1", Conn: "c1", Frame: inner}
	frame := messages.Encode(env)
	m, err := messages.Decode(frame[:len(frame)-1])
	if err != nil {
		t.Fatalf("envelope with a cut inner frame: %v", err)
	}
	if _, err := messages.Decode(m.(*messages.Envelope).Frame); !errors.Is(err, messages.ErrMalformed) {
		t.Fatalf("cut inner frame: err = %v, want ErrMalformed", err)
	}
}

func TestDecodeTrailingBytes(t *testing.T) {
	for _, s := range samples() {
		if s.msg.Type() == messages.TypeEnvelope {
			continue // the inner frame absorbs them; see TestDecodeTruncatedEnvelopeFrame
		}
		t.Run(s.name, func(t *testing.T) {
			for _, extra := range [][]byte{{0}, {0, 0, 0, 0}, []byte("junk")} {
				frame := append(messages.Encode(s.msg), extra...)
				if _, err := messages.Decode(frame); !errors.Is(err, messages.ErrMalformed) {
					t.Fatalf("Decode with %d trailing bytes: err = %v, want ErrMalformed", len(extra), err)
				}
			}
		})
	}
}

func TestDecodeVersion(t *testing.T) {
	for _, s := range samples() {
		frame := messages.Encode(s.msg)
		for _, v := range []byte{0, 2, 0xff} {
			frame[0] = v
			if _, err := messages.Decode(frame); !errors.Is(err, messages.ErrVersion) {
				t.Errorf("%s, version %d: err = %v, want ErrVersion", s.name, v, err)
			}
			if _, err := messages.Peek(frame); !errors.Is(err, messages.ErrVersion) {
				t.Errorf("%s, version %d: Peek err = %v, want ErrVersion", s.name, v, err)
			}
		}
	}
}

func TestDecodeUnknownType(t *testing.T) {
	for _, typ := range []byte{0x00, 0x04, 0x12, 0x24, 0x32, 0x42, 0x7f, 0xff} {
		for _, frame := range [][]byte{{messages.Version, typ}, {messages.Version, typ, 1, 2, 3}} {
			m, err := messages.Decode(frame)
			if !errors.Is(err, messages.ErrUnknownType) || m != nil {
				t.Errorf("Decode(% x) = %v, %v; want ErrUnknownType", frame, m, err)
			}
			if errors.Is(err, messages.ErrMalformed) {
				t.Errorf("Decode(% x): unknown type must not be ErrMalformed, so receivers can skip it", frame)
			}
			// Peek succeeds, so a receiver can tell "skip" from "close".
			if got, err := messages.Peek(frame); err != nil || got != messages.Type(typ) {
				t.Errorf("Peek(% x) = %v, %v", frame, got, err)
			}
		}
	}
}

func TestDecodeBadOpcode(t *testing.T) {
	for _, op := range []byte{0, 3, 8, 9, 10, 0xff} {
		frame := newFrame(messages.TypeWSMessage).id(testID).raw(op).u32(1).raw('x').b
		if _, err := messages.Decode(frame); !errors.Is(err, messages.ErrMalformed) {
			t.Errorf("opcode %d: err = %v, want ErrMalformed", op, err)
		}
	}
}

// Lengths and counts that claim more than the frame holds fail before
// anything is allocated for them.
func TestDecodeHostileLengths(t *testing.T) {
	for _, tc := range hostileFrames() {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := messages.Decode(tc.frame); !errors.Is(err, messages.ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			allocs := testing.AllocsPerRun(runs, func() { messages.Decode(tc.frame) })
			runtime.ReadMemStats(&after)
			// The message struct, a few short strings and the wrapped
			// error; nothing sized by the claimed length.
			if allocs > 8 {
				t.Errorf("%v allocations per Decode", allocs)
			}
			if per := (after.TotalAlloc - before.TotalAlloc) / (runs + 1); per > 4<<10 {
				t.Errorf("%d bytes allocated per Decode", per)
			}
		})
	}
}

type namedFrame struct {
	name  string
	frame []byte
}

// hostileFrames claim more bytes than they hold.
func hostileFrames() []namedFrame {
	const huge = 0xFFFFFFFF
	return []namedFrame{
		{"string length", newFrame(messages.TypeChallenge).u32(huge).raw('a', 'b', 'c').b},
		{"second string length", newFrame(messages.TypeChallenge).str("n").u32(huge).b},
		{"header count", newFrame(messages.TypeHTTPRequest).id(testID).str("GET").str("/").str("h").u32(huge).raw(make([]byte, 64)...).b},
		{"header count just over", newFrame(messages.TypeHTTPResponse).id(testID).u16(200).u32(2).str("a").str("b").b},
		{"header count 2^28", newFrame(messages.TypeHTTPResponse).id(testID).u16(200).u32(1 << 28).raw(make([]byte, 64)...).b},
		{"header name length", newFrame(messages.TypeHTTPResponse).id(testID).u16(200).u32(1).u32(huge).u32(0).b},
		{"body length", newFrame(messages.TypeHTTPRequest).id(testID).str("GET").str("/").str("h").u32(0).u32(huge).raw('a', 'b', 'c').b},
		{"body length one over", newFrame(messages.TypeHTTPResponse).id(testID).u16(200).u32(0).u32(4).raw('a', 'b', 'c').b},
		{"ws data length", newFrame(messages.TypeWSMessage).id(testID).raw(byte(messages.OpBinary)).u32(huge).b},
		{"subprotocol count", newFrame(messages.TypeWSRequest).id(testID).str("/").str("h").u32(0).u32(huge).raw(make([]byte, 16)...).b},
		{"subprotocol count 2^28", newFrame(messages.TypeWSRequest).id(testID).str("/").str("h").u32(0).u32(1 << 28).raw(make([]byte, 16)...).b},
		{"envelope reply-to", newFrame(messages.TypeEnvelope).u32(huge).b},
	}
}

func TestPeek(t *testing.T) {
	for _, s := range samples() {
		got, err := messages.Peek(messages.Encode(s.msg))
		if err != nil || got != s.msg.Type() {
			t.Errorf("%s: Peek = %v, %v", s.name, got, err)
		}
	}
	for _, frame := range [][]byte{nil, {}, {messages.Version}} {
		if _, err := messages.Peek(frame); !errors.Is(err, messages.ErrMalformed) {
			t.Errorf("Peek(% x): err = %v, want ErrMalformed", frame, err)
		}
	}
}

func TestPeekID(t *testing.T) {
	hasID := map[messages.Type]bool{
		messages.TypeHTTPRequest: true, messages.TypeHTTPResponse: true,
		messages.TypeWSRequest: true, messages.TypeWSResponse: true,
		messages.TypeWSMessage: true, messages.TypeWSTeardown: true,
		messages.TypeError: true,
	}
	for _, s := range samples() {
		frame := messages.Encode(s.msg)
		id, ok := messages.PeekID(frame)
		if ok != hasID[s.msg.Type()] {
			t.Errorf("%s: PeekID ok = %v", s.name, ok)
			continue
		}
		want := messages.ID{}
		if ok {
			want = reflect.ValueOf(s.msg).Elem().FieldByName("ID").Interface().(messages.ID)
		}
		if id != want {
			t.Errorf("%s: PeekID = %v, want %v", s.name, id, want)
		}
		if ok {
			// Too short to hold an ID, or from another version: no ID.
			if _, ok := messages.PeekID(frame[:messages.HeaderSize+15]); ok {
				t.Errorf("%s: PeekID found an ID in a 17-byte frame", s.name)
			}
			if id, ok := messages.PeekID(frame[:messages.HeaderSize+16]); !ok || id != want {
				t.Errorf("%s: PeekID on an 18-byte prefix = %v, %v", s.name, id, ok)
			}
			other := bytes.Clone(frame)
			other[0] = messages.Version + 1
			if _, ok := messages.PeekID(other); ok {
				t.Errorf("%s: PeekID accepted another version", s.name)
			}
		}
	}
	for _, frame := range [][]byte{nil, {messages.Version}, append([]byte{messages.Version, 0x7f}, testID[:]...)} {
		if _, ok := messages.PeekID(frame); ok {
			t.Errorf("PeekID(% x) found an ID", frame)
		}
	}
}

func TestID(t *testing.T) {
	if got := testID.String(); got != "000102030405060708090a0b0c0d0e0f" {
		t.Errorf("String() = %q", got)
	}
	if !(messages.ID{}).IsZero() || testID.IsZero() {
		t.Error("IsZero wrong")
	}
	a, b := messages.NewID(), messages.NewID()
	if a == b || a.IsZero() {
		t.Errorf("NewID gave %v and %v", a, b)
	}
}

func TestValidateHeader(t *testing.T) {
	tests := []struct {
		name string
		h    messages.Header
		ok   bool
	}{
		{"nil", nil, true},
		{"plain", messages.Header{"Content-Type": {"text/html; charset=utf-8"}}, true},
		{"tab in value", messages.Header{"X-A": {"a\tb"}}, true},
		{"empty value", messages.Header{"X-A": {""}}, true},
		{"non-ASCII value", messages.Header{"X-A": {"héllo"}}, true},
		{"token punctuation", messages.Header{"!#$%&'*+-.^_`|~09azAZ": {"v"}}, true},
		{"CR in value", messages.Header{"X-A": {"a\rb"}}, false},
		{"LF in value", messages.Header{"X-A": {"a\nSet-Cookie: x=1"}}, false},
		{"CRLF in value", messages.Header{"X-A": {"a\r\n"}}, false},
		{"NUL in value", messages.Header{"X-A": {"a\x00b"}}, false},
		{"other control in value", messages.Header{"X-A": {"a\x01b"}}, false},
		{"DEL in value", messages.Header{"X-A": {"a\x7fb"}}, false},
		{"bad second value", messages.Header{"X-A": {"ok", "bad\n"}}, false},
		{"empty name", messages.Header{"": {"v"}}, false},
		{"space in name", messages.Header{"X A": {"v"}}, false},
		{"colon in name", messages.Header{"X-A:": {"v"}}, false},
		{"CR in name", messages.Header{"X-A\r": {"v"}}, false},
		{"LF in name", messages.Header{"X\nA": {"v"}}, false},
		{"NUL in name", messages.Header{"X\x00A": {"v"}}, false},
		{"non-ASCII name", messages.Header{"Xé": {"v"}}, false},
		{"separator in name", messages.Header{"X(A)": {"v"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := messages.ValidateHeader(tc.h)
			if tc.ok && err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, messages.ErrBadHeader) {
				t.Fatalf("err = %v, want ErrBadHeader", err)
			}
		})
	}
}

// wireExamples are the frames in section 13 of docs/PROTOCOL.md.
func wireExamples() []struct {
	name string
	msg  messages.Message
	hex  string
} {
	return []struct {
		name string
		msg  messages.Message
		hex  string
	}{
		{"Ping", &messages.Ping{}, "0130"},
		{"Challenge", &messages.Challenge{Nonce: "q0lA9zXcVw2gXKQ3PHrKsQ", Domain: "tunnel.example"},
			"01 01" +
				" 00000016 71306c41397a586356773267584b51335048724b7351" +
				" 0000000e 74756e6e656c2e6578616d706c65"},
		{"Error", &messages.Error{ID: testID, Code: messages.CodeCanceled, Reason: "gone"},
			"01 31" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 0001" +
				" 00000000" +
				" 00000004 676f6e65"},
		{"WSTeardown", &messages.WSTeardown{ID: testID, Code: 1000, Reason: "bye"},
			"01 23" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 03e8" +
				" 00000003 627965"},
		{"HTTPRequest", &messages.HTTPRequest{
			ID:     testID,
			Method: "GET",
			URI:    "/?q=1",
			Host:   "a.example",
			Header: messages.Header{"Accept": {"*/*"}, "Cookie": {"a=1", "b=2"}},
		},
			"01 10" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 00000003 474554" +
				" 00000005 2f3f713d31" +
				" 00000009 612e6578616d706c65" +
				" 00000003" +
				" 00000006 416363657074 00000003 2a2f2a" +
				" 00000006 436f6f6b6965 00000003 613d31" +
				" 00000006 436f6f6b6965 00000003 623d32" +
				" 00000000"},
	}
}

// The worked examples in docs/PROTOCOL.md, byte for byte.
func TestWireExamples(t *testing.T) {
	for _, tc := range wireExamples() {
		t.Run(tc.name, func(t *testing.T) {
			want, err := hex.DecodeString(strings.ReplaceAll(tc.hex, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			if got := messages.Encode(tc.msg); !bytes.Equal(got, want) {
				t.Fatalf("Encode:\n got % x\nwant % x", got, want)
			}
			got, err := messages.Decode(want)
			if err != nil || !reflect.DeepEqual(got, tc.msg) {
				t.Fatalf("Decode = %#v, %v", got, err)
			}
		})
	}
}

func TestRemoveHopByHop(t *testing.T) {
	tests := []struct {
		name    string
		in, out messages.Header
	}{
		{"nil", nil, nil},
		{"end-to-end kept",
			messages.Header{"Content-Type": {"text/plain"}, "Set-Cookie": {"a=1", "b=2"}},
			messages.Header{"Content-Type": {"text/plain"}, "Set-Cookie": {"a=1", "b=2"}}},
		{"hop-by-hop removed",
			messages.Header{
				"Connection": {"keep-alive"}, "Proxy-Connection": {"x"}, "Keep-Alive": {"timeout=5"},
				"Proxy-Authenticate": {"x"}, "Proxy-Authorization": {"x"}, "Te": {"trailers"},
				"Trailer": {"X"}, "Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"},
				"Accept": {"*/*"},
			},
			messages.Header{"Accept": {"*/*"}}},
		{"named by Connection",
			messages.Header{"Connection": {"X-Hop, x-other", " X-Third "}, "X-Hop": {"1"}, "X-Other": {"2"}, "X-Third": {"3"}, "X-Keep": {"4"}},
			messages.Header{"X-Keep": {"4"}}},
		// A peer's header keeps the peer's spelling of each name.
		{"any case",
			messages.Header{"connection": {"x-hop"}, "x-HOP": {"1"}, "transfer-encoding": {"chunked"}, "UPGRADE": {"websocket"}, "accept": {"*/*"}},
			messages.Header{"accept": {"*/*"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			messages.RemoveHopByHop(tc.in)
			if len(tc.in) != len(tc.out) || (len(tc.out) > 0 && !reflect.DeepEqual(tc.in, tc.out)) {
				t.Fatalf("got %v, want %v", tc.in, tc.out)
			}
		})
	}
}

func TestAppendEnvelope(t *testing.T) {
	for _, s := range samples() {
		want := messages.Encode(&messages.Envelope{ReplyTo: "proxy-1", Conn: "conn-2", Frame: messages.Encode(s.msg)})
		if got := messages.AppendEnvelope([]byte("p"), "proxy-1", "conn-2", s.msg); !bytes.Equal(got, append([]byte("p"), want...)) {
			t.Errorf("%s: AppendEnvelope:\n% x\nwant\n% x", s.name, got, want)
		}
		if got := messages.AppendEnvelopeFrame(nil, "proxy-1", "conn-2", messages.Encode(s.msg)); !bytes.Equal(got, want) {
			t.Errorf("%s: AppendEnvelopeFrame:\n% x\nwant\n% x", s.name, got, want)
		}
	}
}

// docSection returns section n of docs/PROTOCOL.md, from its "## n." heading
// to the next heading of that level.
func docSection(t *testing.T, n int) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "\n## "+strconv.Itoa(n)+". ")
	if !ok {
		t.Fatalf("docs/PROTOCOL.md has no section %d", n)
	}
	sec, _, _ := strings.Cut(rest, "\n## ")
	return sec
}

// codeAfter returns the indented code block that follows marker in s.
func codeAfter(t *testing.T, s, marker string) []string {
	t.Helper()
	i := strings.Index(s, marker)
	if i < 0 {
		t.Fatalf("%q not found", marker)
	}
	var code []string
	for _, line := range strings.Split(s[i:], "\n")[1:] {
		if strings.HasPrefix(line, "    ") {
			code = append(code, strings.TrimSpace(line))
		} else if len(code) > 0 {
			break
		}
	}
	return code
}

// The hex in the protocol document is the hex the tests check: in each
// line of a frame example, what comes before a run of two spaces is hex.
func TestProtocolDocFrames(t *testing.T) {
	sec := docSection(t, 13)
	comment := regexp.MustCompile(`\s{2,}`)
	for _, tc := range wireExamples() {
		var hexs strings.Builder
		for _, line := range codeAfter(t, sec, "**"+tc.name+"**") {
			hexs.WriteString(strings.ReplaceAll(comment.Split(line, 2)[0], " ", ""))
		}
		if got, want := hexs.String(), strings.ReplaceAll(tc.hex, " ", ""); got != want {
			t.Errorf("%s: docs/PROTOCOL.md has\n%s\nwant\n%s", tc.name, got, want)
		}
	}
}

func TestProtocolDocRegistration(t *testing.T) {
	sec := docSection(t, 5)
	jws := strings.Join(codeAfter(t, sec, "JWS (one line, split here at the dots):"), "")
	reg, err := messages.VerifyRegistration(jws, messages.Challenge{Nonce: "q0lA9zXcVw2gXKQ3PHrKsQ", Domain: "tunnel.example"})
	if err != nil {
		t.Fatalf("the document's JWS: %v", err)
	}
	if reg.Claims.Token != "s3cret" {
		t.Errorf("token %q", reg.Claims.Token)
	}
	for _, want := range []string{
		"| label | `" + reg.Label + "` |",
		"| hostname, domain `tunnel.example` | `" + reg.Label + ".tunnel.example` |",
		"| thumbprint (hex) | `" + hex.EncodeToString(reg.Thumbprint) + "` |",
		"The proxy registers it as `" + reg.Label + ".tunnel.example`.",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("docs/PROTOCOL.md lacks %q", want)
		}
	}
}

func TestEnvelopeFrame(t *testing.T) {
	inner := messages.Encode(&messages.Error{ID: messages.ID{1}, Code: messages.CodeUnavailable, Reason: "r"})
	payload := messages.AppendEnvelopeFrame(nil, "inst", "inst/conn", inner)
	got, err := messages.EnvelopeFrame(payload)
	if err != nil || !bytes.Equal(got, inner) {
		t.Fatalf("EnvelopeFrame = %x, %v; want %x", got, err, inner)
	}
	if n := testing.AllocsPerRun(100, func() { messages.EnvelopeFrame(payload) }); n != 0 {
		t.Fatalf("EnvelopeFrame allocates %v times", n)
	}
	for i := range len(payload) - len(inner) {
		if _, err := messages.EnvelopeFrame(payload[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := messages.EnvelopeFrame(inner); !errors.Is(err, messages.ErrMalformed) {
		t.Fatalf("not an envelope: %v", err)
	}
}
