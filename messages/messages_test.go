package messages_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// pinnedTypes are the message types of docs/PROTOCOL.md section 4, with
// whether their payload starts with a stream ID.
var pinnedTypes = []struct {
	typ   messages.Type
	want  uint8
	name  string
	hasID bool
}{
	{messages.TypeChallenge, 0x01, "Challenge", false},
	{messages.TypeRegistrationRequest, 0x02, "RegistrationRequest", false},
	{messages.TypeRegistrationResponse, 0x03, "RegistrationResponse", false},
	{messages.TypeHTTPRequest, 0x10, "HTTPRequest", true},
	{messages.TypeHTTPResponse, 0x11, "HTTPResponse", true},
	{messages.TypeWSRequest, 0x20, "WSRequest", true},
	{messages.TypeWSResponse, 0x21, "WSResponse", true},
	{messages.TypeWSMessage, 0x22, "WSMessage", true},
	{messages.TypeWSTeardown, 0x23, "WSTeardown", true},
	{messages.TypePing, 0x30, "Ping", false},
	{messages.TypeError, 0x31, "Error", true},
	{messages.TypeBatch, 0x32, "Batch", false},
	{messages.TypeEnvelope, 0x40, "Envelope", false},
	{messages.TypeTakeover, 0x41, "Takeover", false},
	{messages.TypeReply, 0x42, "Reply", false},
	{messages.TypeRevoke, 0x43, "Revoke", false},
	{messages.TypeData, 0x50, "Data", true},
	{messages.TypeCredit, 0x51, "Credit", true},
	{messages.TypeTrailer, 0x52, "Trailer", true},
	{messages.TypeTCPRequest, 0x60, "TCPRequest", true},
	{messages.TypeTCPResponse, 0x61, "TCPResponse", true},
}

// The wire values below are part of the protocol (docs/PROTOCOL.md). A
// failure here means a change that breaks every deployed peer: add a new
// value instead, or bump Version.
func TestWireValuesPinned(t *testing.T) {
	if messages.Version != 2 {
		t.Errorf("Version = %d, want 2", messages.Version)
	}
	if messages.HeaderSize != 2 {
		t.Errorf("HeaderSize = %d, want 2", messages.HeaderSize)
	}
	pinned := map[messages.Type]bool{}
	for _, tc := range pinnedTypes {
		pinned[tc.typ] = true
		if uint8(tc.typ) != tc.want {
			t.Errorf("Type%s = 0x%02x, want 0x%02x", tc.name, uint8(tc.typ), tc.want)
		}
		if got := tc.typ.String(); got != tc.name {
			t.Errorf("Type(0x%02x).String() = %q, want %q", tc.want, got, tc.name)
		}
		if got := tc.typ.HasID(); got != tc.hasID {
			t.Errorf("%s.HasID() = %v, want %v", tc.name, got, tc.hasID)
		}
	}
	// Every type the package knows by name must be pinned above, so a new
	// type cannot skip pinning; and an unknown one has no ID to route by.
	for v := range 256 {
		typ := messages.Type(v)
		if named := !strings.HasPrefix(typ.String(), "Type("); named != pinned[typ] {
			t.Errorf("Type(0x%02x) = %q: named %v, pinned %v", v, typ, named, pinned[typ])
		}
		if !pinned[typ] && typ.HasID() {
			t.Errorf("unknown Type(0x%02x).HasID() = true", v)
		}
	}
	if got := messages.Type(0x7f).String(); got != "Type(0x7f)" {
		t.Errorf("Type(0x7f).String() = %q", got)
	}
	// ... and every pinned type has a sample, so the round-trip,
	// truncation and trailing-byte tests cover all of them.
	sampled := map[messages.Type]bool{}
	for _, s := range samples() {
		sampled[s.msg.Type()] = true
	}
	for _, tc := range pinnedTypes {
		if !sampled[tc.typ] {
			t.Errorf("%s has no sample", tc.name)
		}
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
		{messages.CodeGone, 12},
		{messages.CodeNameLost, 13},
		{messages.CodeRefused, 14},
	}
	for _, tc := range codes {
		if uint16(tc.code) != tc.want {
			t.Errorf("error code %d, want %d", tc.code, tc.want)
		}
	}

	if messages.OpText != 1 || messages.OpBinary != 2 {
		t.Errorf("opcodes = %d, %d; want 1, 2 (RFC 6455)", messages.OpText, messages.OpBinary)
	}
	if messages.FlagBody != 1 || messages.FlagExpectContinue != 2 {
		t.Errorf("FlagBody = %d, FlagExpectContinue = %d; want 1, 2", messages.FlagBody, messages.FlagExpectContinue)
	}
	// FIN and END are not exported; pin them by where they land on the
	// wire: the byte after the ID (Data) or after the opcode (WSMessage).
	if f := messages.Encode(&messages.Data{ID: testID, End: true}); f[18] != 0x01 {
		t.Errorf("Data END flag byte = 0x%02x, want 0x01", f[18])
	}
	if f := messages.Encode(&messages.WSMessage{ID: testID, Opcode: messages.OpText, Fin: true}); f[19] != 0x01 {
		t.Errorf("WSMessage FIN flag byte = 0x%02x, want 0x01", f[19])
	}

	ints := []struct {
		name      string
		got, want int
	}{
		{"MaxJWS", messages.MaxJWS, 16_384},
		{"HostnameLen", messages.HostnameLen, 52},
		{"MaxFrame", messages.MaxFrame, 500_000},
		{"MaxData", messages.MaxData, 65_536},
		{"MaxHead", messages.MaxHead, 65_536},
		{"MaxPreRegistration", messages.MaxPreRegistration, 65_536},
		{"MaxHandshakeRead", messages.MaxHandshakeRead, 65_536},
		{"InitialWindow", messages.InitialWindow, 262_144},
		{"InitialConnWindow", messages.InitialConnWindow, 1_048_576},
		{"MaxCloseReason", messages.MaxCloseReason, 123},
		{"CloseReplaced", int(messages.CloseReplaced), 4000},
	}
	for _, tc := range ints {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	if messages.ControlPath != "/_keyhole/v2/connect" {
		t.Errorf("ControlPath = %q", messages.ControlPath)
	}
	if messages.LegacyControlPath != "/_keyhole/v1/connect" {
		t.Errorf("LegacyControlPath = %q", messages.LegacyControlPath)
	}
	if messages.TCPPath != "/_keyhole/v2/tcp" {
		t.Errorf("TCPPath = %q", messages.TCPPath)
	}
}

var testID = messages.ID{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}

// allBytes holds every byte value once, so data survives only if the
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
// returns it: empty headers, data and lists are nil.
func samples() []sample {
	id := testID
	return []sample{
		{"Challenge", &messages.Challenge{Nonce: "q0lA9zXcVw2gXKQ3PHrKsQ", Domain: "tunnel.example"}},
		{"Challenge/empty", &messages.Challenge{}},
		{"RegistrationRequest", &messages.RegistrationRequest{JWS: "eyJhbGciOiJFZERTQSJ9.e30.c2ln"}},
		{"RegistrationResponse", &messages.RegistrationResponse{
			Hostname:          "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			URL:               "https://sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			PingMillis:        10000,
			TimeoutMillis:     30000,
			IdleTimeoutMillis: 60000,
			MaxBody:           500_000,
			MaxWindow:         8 << 20,
			ConnBudget:        16 << 20,
		}},
		// Distinct values in every field, so a swap of two fields fails.
		{"RegistrationResponse/distinct", &messages.RegistrationResponse{
			Hostname: "h", URL: "u", PingMillis: 1, TimeoutMillis: 2, IdleTimeoutMillis: 3, MaxBody: 4, MaxWindow: 5, ConnBudget: 6,
		}},
		{"RegistrationResponse/max", &messages.RegistrationResponse{
			PingMillis: ^uint32(0), TimeoutMillis: ^uint32(0), IdleTimeoutMillis: ^uint32(0),
			MaxBody: ^uint32(0), MaxWindow: ^uint32(0), ConnBudget: ^uint32(0),
		}},
		{"HTTPRequest", &messages.HTTPRequest{
			ID:     id,
			Body:   true,
			Window: messages.InitialWindow,
			Method: "POST",
			URI:    "/upload?name=a%20b&x=1",
			Host:   "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			Header: messages.Header{
				"Content-Type":   {"application/octet-stream"},
				"Content-Length": {"256"},
				"Accept":         {"text/html", "*/*;q=0.8"},
				"X-Empty":        {""},
			},
		}},
		{"HTTPRequest/HEAD-no-body", &messages.HTTPRequest{ID: id, Method: "HEAD", URI: "/", Host: "h"}},
		{"HTTPRequest/expect-continue", &messages.HTTPRequest{ID: id, Body: true, ExpectContinue: true, Window: 1, Method: "PUT", URI: "/r/1", Host: "h"}},
		// The flag without a body is meaningless, but the framing keeps
		// the bits apart.
		{"HTTPRequest/expect-continue-only", &messages.HTTPRequest{ID: id, ExpectContinue: true, Method: "PATCH"}},
		{"HTTPRequest/max-window", &messages.HTTPRequest{ID: id, Window: ^uint32(0), Method: "GET", URI: "/", Host: "h"}},
		{"HTTPResponse", &messages.HTTPResponse{
			ID:     id,
			Body:   true,
			Status: 200,
			Header: messages.Header{
				// Two values of one name: both kept, in order.
				"Set-Cookie":   {"b=2; Path=/", "a=1; Path=/"},
				"Content-Type": {"application/octet-stream"},
				"Trailer":      {"Grpc-Status, Grpc-Message"},
			},
		}},
		{"HTTPResponse/204-empty", &messages.HTTPResponse{ID: id, Status: 204}},
		{"WSRequest", &messages.WSRequest{
			ID:           id,
			Window:       messages.InitialWindow,
			URI:          "/socket?room=1",
			Host:         "h.tunnel.example",
			Header:       messages.Header{"Origin": {"https://app.example"}, "Cookie": {"s=1"}},
			Subprotocols: []string{"graphql-transport-ws", "graphql-ws", "chat.v2"},
		}},
		{"WSRequest/one-empty-subprotocol", &messages.WSRequest{ID: id, Window: 7, URI: "/", Host: "h", Subprotocols: []string{""}}},
		{"WSRequest/bare", &messages.WSRequest{ID: id}},
		{"WSResponse/101", &messages.WSResponse{ID: id, Status: 101, Subprotocol: "graphql-ws"}},
		{"WSResponse/refused", &messages.WSResponse{
			ID:     id,
			Status: 403,
			Header: messages.Header{"Content-Type": {"text/plain"}},
			Body:   []byte("no"),
		}},
		{"WSMessage/text", &messages.WSMessage{ID: id, Opcode: messages.OpText, Fin: true, Data: []byte("héllo")}},
		{"WSMessage/binary", &messages.WSMessage{ID: id, Opcode: messages.OpBinary, Fin: true, Data: allBytes()}},
		{"WSMessage/fragment", &messages.WSMessage{ID: id, Opcode: messages.OpBinary, Data: allBytes()}},
		{"WSMessage/empty", &messages.WSMessage{ID: id, Opcode: messages.OpText, Fin: true}},
		{"WSTeardown", &messages.WSTeardown{ID: id, Code: 1000, Reason: "bye"}},
		{"WSTeardown/no-reason", &messages.WSTeardown{ID: id, Code: 1005}},
		{"Ping", &messages.Ping{}},
		{"Error", &messages.Error{ID: id, Code: messages.CodeRateLimited, RetryAfter: 7, Reason: "slow down"}},
		{"Error/zero-ID", &messages.Error{Code: messages.CodeGoingAway, Reason: "shutting down"}},
		{"Batch", &messages.Batch{Frames: [][]byte{
			messages.Encode(&messages.Credit{ID: id, Increment: 1}),
			messages.Encode(&messages.Ping{}),
			messages.Encode(&messages.Data{ID: id, End: true, Data: allBytes()}),
		}}},
		// A Batch does not decode its frames: one of a type unknown here
		// is carried as it is, for the receiver to skip.
		{"Batch/unknown-inner-type", &messages.Batch{Frames: [][]byte{{messages.Version, 0x7f}}}},
		{"Batch/empty", &messages.Batch{}},
		{"Envelope", &messages.Envelope{
			ReplyTo: "proxy-7f3a",
			Conn:    "proxy-7f3a/conn-19",
			Frame:   messages.Encode(&messages.WSMessage{ID: id, Opcode: messages.OpBinary, Fin: true, Data: allBytes()}),
		}},
		{"Envelope/empty", &messages.Envelope{}},
		{"Revoke", &messages.Revoke{Kind: "name", Value: "myapp"}},
		{"Takeover", &messages.Takeover{Hostname: "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq", Successor: "b1d68a83fb84b590/4e2f0c1d9a8b7c6d"}},
		{"Reply", &messages.Reply{Conn: "b1d68a83fb84b590/4e2f0c1d9a8b7c6d", Frame: messages.Encode(&messages.Credit{ID: testID, Increment: 4096})}},
		{"Reply/empty", &messages.Reply{}},
		{"Data", &messages.Data{ID: id, Data: allBytes()}},
		{"Data/end", &messages.Data{ID: id, End: true, Data: []byte("last")}},
		{"Data/end-only", &messages.Data{ID: id, End: true}},
		{"Credit", &messages.Credit{ID: id, Increment: messages.InitialWindow}},
		{"Credit/connection", &messages.Credit{Increment: ^uint32(0)}},
		{"Trailer", &messages.Trailer{ID: id, Header: messages.Header{"Grpc-Status": {"0"}, "Grpc-Message": {""}}}},
		{"Trailer/empty", &messages.Trailer{ID: id}},
		{"TCPRequest", &messages.TCPRequest{ID: id, Window: messages.InitialWindow, Host: "h.tunnel.example", Token: "s3cret"}},
		{"TCPRequest/bare", &messages.TCPRequest{ID: id}},
		{"TCPResponse", &messages.TCPResponse{ID: id}},
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

// Decode normalises empty to nil: an empty or nil header, body, data,
// frame, frame list or subprotocol list all decode as nil, and a name with
// no values is dropped. docs/PROTOCOL.md documents this.
func TestDecodeNormalisesEmptyToNil(t *testing.T) {
	tests := []struct {
		name    string
		in, out messages.Message
	}{
		{"HTTPRequest",
			&messages.HTTPRequest{ID: testID, Method: "GET", Header: messages.Header{}},
			&messages.HTTPRequest{ID: testID, Method: "GET"}},
		{"HTTPResponse/name-without-values",
			&messages.HTTPResponse{ID: testID, Status: 200, Header: messages.Header{"X-None": {}, "X-One": {"1"}}},
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
		{"Data",
			&messages.Data{ID: testID, End: true, Data: []byte{}},
			&messages.Data{ID: testID, End: true}},
		{"Trailer",
			&messages.Trailer{ID: testID, Header: messages.Header{"X-None": {}}},
			&messages.Trailer{ID: testID}},
		{"Batch",
			&messages.Batch{Frames: [][]byte{}},
			&messages.Batch{}},
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

// frame appends a length-prefixed inner frame, as a Batch holds them.
func (f *frameBuilder) frame(b []byte) *frameBuilder { return f.u32(uint32(len(b))).raw(b...) }

// A decoder must accept header pairs in any order; only the encoder sorts.
func unsortedHeaderFrame() []byte {
	return newFrame(messages.TypeHTTPResponse).id(testID).raw(messages.FlagBody).u16(200).
		u32(4).
		str("Set-Cookie").str("b=2").
		str("Content-Type").str("text/plain").
		str("Set-Cookie").str("a=1").
		str("Accept").str("x").b
}

func TestDecodeAcceptsUnsortedHeader(t *testing.T) {
	m, err := messages.Decode(unsortedHeaderFrame())
	if err != nil {
		t.Fatal(err)
	}
	want := &messages.HTTPResponse{ID: testID, Body: true, Status: 200, Header: messages.Header{
		"Set-Cookie":   {"b=2", "a=1"},
		"Content-Type": {"text/plain"},
		"Accept":       {"x"},
	}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %#v\nwant %#v", m, want)
	}
	// Re-encoding sorts by name and keeps the values' order.
	sorted := newFrame(messages.TypeHTTPResponse).id(testID).raw(messages.FlagBody).u16(200).
		u32(4).
		str("Accept").str("x").
		str("Content-Type").str("text/plain").
		str("Set-Cookie").str("b=2").
		str("Set-Cookie").str("a=1").b
	if got := messages.Encode(m); !bytes.Equal(got, sorted) {
		t.Fatalf("re-encoded:\n% x\nwant\n% x", got, sorted)
	}
}

// Decoded byte slices alias the frame but cannot be appended into it.
func TestDecodedBytesDoNotGrowIntoFrame(t *testing.T) {
	for _, tc := range []struct {
		msg  messages.Message
		data func(messages.Message) []byte
	}{
		{&messages.Data{ID: testID, Data: []byte("ab")}, func(m messages.Message) []byte { return m.(*messages.Data).Data }},
		{&messages.WSMessage{ID: testID, Opcode: messages.OpBinary, Data: []byte("ab")}, func(m messages.Message) []byte { return m.(*messages.WSMessage).Data }},
		{&messages.Batch{Frames: [][]byte{messages.Encode(&messages.Ping{})}}, func(m messages.Message) []byte { return m.(*messages.Batch).Frames[0] }},
	} {
		frame := messages.Encode(tc.msg)
		frame = append(frame, 0xEE) // trailing byte is malformed, so decode the real prefix
		m, err := messages.Decode(frame[:len(frame)-1])
		if err != nil {
			t.Fatal(err)
		}
		_ = append(tc.data(m), 'X')
		if frame[len(frame)-1] != 0xEE {
			t.Fatalf("%v: appending to decoded bytes overwrote the frame", tc.msg.Type())
		}
	}
}

// envelopeFrameStart is where an Envelope's inner frame begins.
func envelopeFrameStart(e *messages.Envelope) int {
	return messages.HeaderSize + 4 + len(e.ReplyTo) + 4 + len(e.Conn)
}

// batchBoundaries are the lengths at which a Batch's encoding ends between
// two inner frames: cut there, it is a shorter Batch, not a broken one.
func batchBoundaries(b *messages.Batch) map[int]int {
	at := map[int]int{messages.HeaderSize: 0}
	n := messages.HeaderSize
	for i, f := range b.Frames {
		n += 4 + len(f)
		at[n] = i + 1
	}
	return at
}

func TestDecodeTruncated(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			frame := messages.Encode(s.msg)
			end := len(frame)
			var boundaries map[int]int
			switch m := s.msg.(type) {
			case *messages.Envelope:
				// The inner frame runs to the end of the envelope and has
				// no length of its own: cutting it leaves a valid envelope
				// whose inner frame then fails to decode. Only the part
				// before it can be truncated.
				end = envelopeFrameStart(m)
			case *messages.Reply:
				end = messages.HeaderSize + 4 + len(m.Conn) // likewise
			case *messages.Batch:
				boundaries = batchBoundaries(m)
			}
			for n := range end {
				m, err := messages.Decode(frame[:n:n])
				if k, ok := boundaries[n]; ok {
					if err != nil {
						t.Fatalf("Batch cut after %d frames: %v", k, err)
					}
					if got := m.(*messages.Batch).Frames; len(got) != k {
						t.Fatalf("Batch cut after %d frames decodes to %d", k, len(got))
					}
					continue
				}
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
		if s.msg.Type() == messages.TypeEnvelope || s.msg.Type() == messages.TypeReply {
			continue // the inner frame absorbs them; see TestDecodeTruncatedEnvelopeFrame
		}
		t.Run(s.name, func(t *testing.T) {
			// For a Batch, these are a cut length, an inner frame of
			// length 0 and a length far past the end: all malformed.
			for _, extra := range [][]byte{{0}, {0, 0, 0, 0}, []byte("junk")} {
				frame := append(messages.Encode(s.msg), extra...)
				if _, err := messages.Decode(frame); !errors.Is(err, messages.ErrMalformed) {
					t.Fatalf("Decode with %d trailing bytes: err = %v, want ErrMalformed", len(extra), err)
				}
			}
		})
	}
}

// Version 1's proxy accepted a Ping with trailing bytes although the
// document said its payload was empty. Any payload byte makes it
// malformed, so every implementation reads it the same way.
func TestPingWithPayloadIsMalformed(t *testing.T) {
	if _, err := messages.Decode([]byte{messages.Version, byte(messages.TypePing)}); err != nil {
		t.Fatalf("empty Ping: %v", err)
	}
	for _, payload := range [][]byte{{0}, {1}, {0xff, 0xff}, make([]byte, 16)} {
		frame := append([]byte{messages.Version, byte(messages.TypePing)}, payload...)
		if m, err := messages.Decode(frame); !errors.Is(err, messages.ErrMalformed) {
			t.Errorf("Ping with payload % x = %v, %v; want ErrMalformed", payload, m, err)
		}
	}
}

func TestDecodeVersion(t *testing.T) {
	for _, s := range samples() {
		frame := messages.Encode(s.msg)
		// 1 is the version before this one: its frames must be told apart
		// from this version's, not misread.
		for _, v := range []byte{0, 1, 3, 0xff} {
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
	for _, typ := range []byte{0x00, 0x04, 0x12, 0x24, 0x33, 0x44, 0x53, 0x7f, 0xff} {
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
		frame := newFrame(messages.TypeWSMessage).id(testID).raw(op, 1).u32(1).raw('x').b
		if _, err := messages.Decode(frame); !errors.Is(err, messages.ErrMalformed) {
			t.Errorf("opcode %d: err = %v, want ErrMalformed", op, err)
		}
	}
}

// A flags byte with a bit the receiver does not know is malformed, so that
// a flag added later is never silently ignored. Every value of the byte is
// tried: the known combinations decode to their booleans, the rest fail.
func TestDecodeUnknownFlags(t *testing.T) {
	tests := []struct {
		name  string
		msg   messages.Message
		at    int   // offset of the flags byte
		known uint8 // the bits defined for this type
		check func(m messages.Message, f uint8) bool
	}{
		{"HTTPRequest", &messages.HTTPRequest{ID: testID, Method: "GET"}, 18, messages.FlagBody | messages.FlagExpectContinue,
			func(m messages.Message, f uint8) bool {
				r := m.(*messages.HTTPRequest)
				return r.Body == (f&messages.FlagBody != 0) && r.ExpectContinue == (f&messages.FlagExpectContinue != 0)
			}},
		// EXPECT_CONTINUE is a request flag: on a response it is unknown.
		{"HTTPResponse", &messages.HTTPResponse{ID: testID, Status: 200}, 18, messages.FlagBody,
			func(m messages.Message, f uint8) bool { return m.(*messages.HTTPResponse).Body == (f&1 != 0) }},
		{"WSMessage", &messages.WSMessage{ID: testID, Opcode: messages.OpBinary, Data: []byte("x")}, 19, 1,
			func(m messages.Message, f uint8) bool { return m.(*messages.WSMessage).Fin == (f&1 != 0) }},
		{"Data", &messages.Data{ID: testID, Data: []byte("x")}, 18, 1,
			func(m messages.Message, f uint8) bool { return m.(*messages.Data).End == (f&1 != 0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frame := messages.Encode(tc.msg)
			if frame[tc.at] != 0 {
				t.Fatalf("byte %d is 0x%02x, not the (clear) flags byte", tc.at, frame[tc.at])
			}
			for f := range 256 {
				frame[tc.at] = byte(f)
				m, err := messages.Decode(frame)
				if uint8(f)&^tc.known != 0 {
					if !errors.Is(err, messages.ErrMalformed) {
						t.Errorf("flags 0x%02x: %v, %v; want ErrMalformed", f, m, err)
					}
					continue
				}
				if err != nil || !tc.check(m, uint8(f)) {
					t.Errorf("flags 0x%02x: %#v, %v", f, m, err)
				}
			}
		})
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
	req := func() *frameBuilder {
		return newFrame(messages.TypeHTTPRequest).id(testID).raw(messages.FlagBody).u32(messages.InitialWindow)
	}
	resp := func() *frameBuilder {
		return newFrame(messages.TypeHTTPResponse).id(testID).raw(messages.FlagBody).u16(200)
	}
	wsreq := func() *frameBuilder {
		return newFrame(messages.TypeWSRequest).id(testID).u32(messages.InitialWindow).str("/").str("h").u32(0)
	}
	ping := messages.Encode(&messages.Ping{})
	return []namedFrame{
		{"string length", newFrame(messages.TypeChallenge).u32(huge).raw('a', 'b', 'c').b},
		{"second string length", newFrame(messages.TypeChallenge).str("n").u32(huge).b},
		{"method length", req().u32(huge).raw(make([]byte, 64)...).b},
		{"header count", req().str("GET").str("/").str("h").u32(huge).raw(make([]byte, 64)...).b},
		{"header count just over", resp().u32(2).str("a").str("b").b},
		{"header count 2^28", resp().u32(1 << 28).raw(make([]byte, 64)...).b},
		{"header name length", resp().u32(1).u32(huge).u32(0).b},
		{"header value length", resp().u32(1).str("a").u32(huge).b},
		{"upgrade body length", newFrame(messages.TypeWSResponse).id(testID).u16(403).str("").u32(0).u32(huge).raw('a', 'b', 'c').b},
		{"data length", newFrame(messages.TypeData).id(testID).raw(0).u32(huge).raw('a', 'b', 'c').b},
		{"data length one over", newFrame(messages.TypeData).id(testID).raw(1).u32(4).raw('a', 'b', 'c').b},
		{"ws data length", newFrame(messages.TypeWSMessage).id(testID).raw(byte(messages.OpBinary), 1).u32(huge).b},
		{"subprotocol count", wsreq().u32(huge).raw(make([]byte, 16)...).b},
		{"subprotocol count 2^28", wsreq().u32(1 << 28).raw(make([]byte, 16)...).b},
		{"trailer header count", newFrame(messages.TypeTrailer).id(testID).u32(huge).raw(make([]byte, 64)...).b},
		{"batch frame length", newFrame(messages.TypeBatch).u32(huge).raw(ping...).b},
		{"batch second frame length", newFrame(messages.TypeBatch).frame(ping).u32(huge).raw(ping...).b},
		{"envelope reply-to", newFrame(messages.TypeEnvelope).u32(huge).b},
		{"envelope conn", newFrame(messages.TypeEnvelope).str("p").u32(huge).b},
	}
}

func TestBatch(t *testing.T) {
	ping := messages.Encode(&messages.Ping{})
	credit := messages.Encode(&messages.Credit{ID: testID, Increment: 9})
	tests := []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"two frames", newFrame(messages.TypeBatch).frame(credit).frame(ping).b, true},
		{"empty", newFrame(messages.TypeBatch).b, true},
		// The receiver decodes each frame on its own: a Batch carries one
		// of another version without looking, and Decode of it then says
		// ErrVersion (TestBatchInnerFrames).
		{"inner frame of another version", newFrame(messages.TypeBatch).frame([]byte{1, byte(messages.TypePing)}).b, true},
		// A Batch never holds a Batch, so unpacking never recurses.
		{"nested Batch", newFrame(messages.TypeBatch).frame(newFrame(messages.TypeBatch).frame(ping).b).b, false},
		{"nested empty Batch", newFrame(messages.TypeBatch).frame(ping).frame(newFrame(messages.TypeBatch).b).b, false},
		{"nested Batch of another version", newFrame(messages.TypeBatch).frame([]byte{1, byte(messages.TypeBatch)}).b, false},
		// Every inner frame has at least its version and type.
		{"inner frame of 0 bytes", newFrame(messages.TypeBatch).frame(nil).b, false},
		{"inner frame of 1 byte", newFrame(messages.TypeBatch).frame(ping).frame(ping[:1]).b, false},
		{"length cut", newFrame(messages.TypeBatch).frame(ping).raw(0, 0).b, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := messages.Decode(tc.frame)
			if !tc.ok {
				if !errors.Is(err, messages.ErrMalformed) {
					t.Fatalf("Decode = %v, %v; want ErrMalformed", m, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if again := messages.Encode(m); !bytes.Equal(again, tc.frame) {
				t.Fatalf("re-encoded:\n% x\nwant\n% x", again, tc.frame)
			}
		})
	}
}

// The frames of a Batch decode one by one, as if each had come alone.
func TestBatchInnerFrames(t *testing.T) {
	inner := []messages.Message{
		&messages.Credit{ID: testID, Increment: 65536},
		&messages.Data{ID: testID, End: true, Data: []byte("hello")},
		&messages.Ping{},
	}
	var frames [][]byte
	for _, m := range inner {
		frames = append(frames, messages.Encode(m))
	}
	frames = append(frames, []byte{messages.Version, 0x7f, 1, 2}, []byte{1, byte(messages.TypePing)})
	m, err := messages.Decode(messages.AppendBatch(nil, frames))
	if err != nil {
		t.Fatal(err)
	}
	got := m.(*messages.Batch).Frames
	if len(got) != len(frames) {
		t.Fatalf("%d frames, want %d", len(got), len(frames))
	}
	for i, want := range inner {
		m, err := messages.Decode(got[i])
		if err != nil || !reflect.DeepEqual(m, want) {
			t.Errorf("frame %d = %#v, %v; want %#v", i, m, err, want)
		}
	}
	// An unknown type is skipped like an unknown frame; a frame of another
	// version is a violation, as it would be alone.
	if _, err := messages.Decode(got[3]); !errors.Is(err, messages.ErrUnknownType) {
		t.Errorf("unknown inner type: %v, want ErrUnknownType", err)
	}
	if _, err := messages.Decode(got[4]); !errors.Is(err, messages.ErrVersion) {
		t.Errorf("inner frame of version 1: %v, want ErrVersion", err)
	}
}

func TestBatchOverhead(t *testing.T) {
	frames := [][]byte{
		messages.Encode(&messages.Ping{}),
		messages.Encode(&messages.Credit{Increment: 1}),
		messages.Encode(&messages.Data{ID: testID, Data: allBytes()}),
	}
	for n := range len(frames) + 1 {
		sum := 0
		for _, f := range frames[:n] {
			sum += len(f)
		}
		batch := messages.AppendBatch([]byte("p"), frames[:n])
		if !bytes.HasPrefix(batch, []byte("p")) {
			t.Fatalf("AppendBatch did not extend its argument")
		}
		if got, want := messages.BatchOverhead(n), len(batch)-1-sum; got != want {
			t.Errorf("BatchOverhead(%d) = %d, encoded overhead %d", n, got, want)
		}
		if !bytes.Equal(batch[1:], messages.Encode(&messages.Batch{Frames: frames[:n]})) {
			t.Errorf("AppendBatch of %d frames differs from Encode", n)
		}
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
	hasID := map[messages.Type]bool{}
	for _, tc := range pinnedTypes {
		hasID[tc.typ] = tc.hasID
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
	// A distinctive ID in every ID-carrying type, at offset 2.
	other := messages.ID{0xfe, 1: 0xed, 15: 0x01}
	for _, m := range []messages.Message{
		&messages.Data{ID: other}, &messages.Credit{ID: other}, &messages.Trailer{ID: other},
		&messages.WSMessage{ID: other, Opcode: messages.OpText}, &messages.Error{ID: other},
	} {
		if id, ok := messages.PeekID(messages.Encode(m)); !ok || id != other {
			t.Errorf("%v: PeekID = %v, %v; want %v", m.Type(), id, ok, other)
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
	if !(messages.ID{}).IsZero() || testID.IsZero() || (messages.ID{15: 1}).IsZero() {
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

// HeaderBlockSize is how MaxHead is applied before a head is encoded; it
// must be the size the encoder really writes.
func TestHeaderBlockSize(t *testing.T) {
	tests := []struct {
		name string
		h    messages.Header
	}{
		{"nil", nil},
		{"empty", messages.Header{}},
		{"one", messages.Header{"Content-Type": {"text/plain"}}},
		{"several values", messages.Header{"Set-Cookie": {"a=1", "b=2", ""}, "Vary": {"Origin"}}},
		{"name without values", messages.Header{"X-None": {}, "X-One": {"1"}}},
		{"empty value", messages.Header{"X-Empty": {""}}},
		{"non-ASCII", messages.Header{"X-A": {"héllo wörld"}}},
		{"large", messages.Header{"X-Big": {strings.Repeat("v", 70_000)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := messages.HeaderBlockSize(tc.h)
			// An HTTPResponse is id, flags and status, then the block; a
			// Trailer is id, then the block.
			if want := len(messages.Encode(&messages.HTTPResponse{ID: testID, Status: 200, Header: tc.h})) - (messages.HeaderSize + 16 + 1 + 2); got != want {
				t.Errorf("HeaderBlockSize = %d, encoded in an HTTPResponse %d", got, want)
			}
			if want := len(messages.Encode(&messages.Trailer{ID: testID, Header: tc.h})) - (messages.HeaderSize + 16); got != want {
				t.Errorf("HeaderBlockSize = %d, encoded in a Trailer %d", got, want)
			}
		})
	}
}

func TestValidStatus(t *testing.T) {
	tests := []struct {
		status            uint16
		response, upgrade bool
	}{
		{0, false, false},
		{100, false, false},
		{101, false, true}, // an accepted upgrade, never an HTTP answer
		{102, false, false},
		{199, false, false},
		{200, true, true},
		{404, true, true},
		{599, true, true},
		{600, false, false}, // version 1 allowed up to 999 and passed 600 to the public
		{999, false, false},
		{65535, false, false},
	}
	for _, tc := range tests {
		if got := messages.ValidResponseStatus(tc.status); got != tc.response {
			t.Errorf("ValidResponseStatus(%d) = %v, want %v", tc.status, got, tc.response)
		}
		if got := messages.ValidUpgradeStatus(tc.status); got != tc.upgrade {
			t.Errorf("ValidUpgradeStatus(%d) = %v, want %v", tc.status, got, tc.upgrade)
		}
	}
}

func TestCloseReason(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "bye", "bye"},
		{"non-ASCII", "au revoir, à bientôt", "au revoir, à bientôt"},
		{"exactly 123", a(123), a(123)},
		{"124 bytes", a(124), a(123)},
		{"200 bytes", a(200), a(123)},
		// A character that would straddle byte 123 goes whole.
		{"2-byte rune at 122", a(122) + "é", a(122)},
		{"3-byte rune at 121", a(121) + "€", a(121)},
		{"4-byte rune at 120", a(120) + "😀", a(120)},
		{"4-byte rune ending at 123", a(119) + "😀", a(119) + "😀"},
		// Invalid UTF-8 becomes U+FFFD, a run of invalid bytes one of them.
		{"invalid byte", "a\xffb", "a\uFFFDb"},
		{"invalid run", "a\xff\xfe\xfdb", "a\uFFFDb"},
		{"truncated rune", "caf\xc3", "caf\uFFFD"},
		{"surrogate", "x\xed\xa0\x80y", "x\uFFFDy"},
		// The replacement is 3 bytes, so it can push the text past the
		// limit; it is cut like any other character.
		{"replacement at 122", a(122) + "\xff", a(122)},
		{"long invalid", a(100) + strings.Repeat("\xff", 200) + a(100), a(100) + "\uFFFD" + a(20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := messages.CloseReason(tc.in)
			if got != tc.want {
				t.Fatalf("CloseReason(%q) =\n%q, want\n%q", tc.in, got, tc.want)
			}
			if !utf8.ValidString(got) || len(got) > messages.MaxCloseReason {
				t.Fatalf("CloseReason(%q) = %q: %d bytes, valid %v", tc.in, got, len(got), utf8.ValidString(got))
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
				"Proxy-Authenticate": {"x"}, "Proxy-Authorization": {"x"}, "Te": {"gzip"},
				"Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"},
				"Accept": {"*/*"},
			},
			messages.Header{"Accept": {"*/*"}}},
		// Trailer declares the message's own trailer fields: it crosses.
		{"Trailer kept",
			messages.Header{"Trailer": {"Grpc-Status, Grpc-Message"}, "Transfer-Encoding": {"chunked"}},
			messages.Header{"Trailer": {"Grpc-Status, Grpc-Message"}}},
		// "TE: trailers" says the caller accepts trailers (gRPC needs it);
		// it crosses as exactly that, whatever else TE listed.
		{"TE trailers kept", messages.Header{"Te": {"trailers"}}, messages.Header{"Te": {"trailers"}}},
		{"TE trailers among codings",
			messages.Header{"Te": {"gzip, trailers;q=1"}, "Accept": {"*/*"}},
			messages.Header{"Te": {"trailers"}, "Accept": {"*/*"}}},
		{"TE trailers in a second value", messages.Header{"Te": {"gzip", "Trailers"}}, messages.Header{"Te": {"trailers"}}},
		{"TE lower case", messages.Header{"te": {"trailers"}}, messages.Header{"Te": {"trailers"}}},
		// RFC 9110 has the sender of TE list it in Connection too.
		{"TE named by Connection",
			messages.Header{"Connection": {"TE"}, "Te": {"trailers"}},
			messages.Header{"Te": {"trailers"}}},
		{"TE without trailers", messages.Header{"Te": {"gzip", "deflate;q=0.5"}, "X-A": {"1"}}, messages.Header{"X-A": {"1"}}},
		{"TE trailers-like token", messages.Header{"Te": {"trailersx"}}, messages.Header{}},
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
		frame := messages.Encode(s.msg)
		want := messages.Encode(&messages.Envelope{ReplyTo: "proxy-1", Conn: "proxy-1/conn-2", Frame: frame})
		if got := messages.AppendEnvelope([]byte("p"), "proxy-1", "proxy-1/conn-2", s.msg); !bytes.Equal(got, append([]byte("p"), want...)) {
			t.Errorf("%s: AppendEnvelope:\n% x\nwant\n% x", s.name, got, want)
		}
		if got := messages.AppendEnvelopeFrame(nil, "proxy-1", "proxy-1/conn-2", frame); !bytes.Equal(got, want) {
			t.Errorf("%s: AppendEnvelopeFrame:\n% x\nwant\n% x", s.name, got, want)
		}
		if got := messages.EnvelopeSize("proxy-1", "proxy-1/conn-2", len(frame)); got != len(want) {
			t.Errorf("%s: EnvelopeSize = %d, encoded %d", s.name, got, len(want))
		}
	}
}

func TestOpenEnvelope(t *testing.T) {
	inner := messages.Encode(&messages.Error{ID: messages.ID{1}, Code: messages.CodeUnavailable, Reason: "r"})
	payload := messages.AppendEnvelopeFrame(nil, "inst", "inst/conn", inner)
	replyTo, conn, frame, err := messages.OpenEnvelope(payload)
	if err != nil || replyTo != "inst" || conn != "inst/conn" || !bytes.Equal(frame, inner) {
		t.Fatalf("OpenEnvelope = %q, %q, %x, %v; want inst, inst/conn, %x", replyTo, conn, frame, err, inner)
	}
	// The frame is not copied: routing a reply costs the two names only.
	if &frame[0] != &payload[len(payload)-len(inner)] {
		t.Error("OpenEnvelope copied the frame")
	}
	if n := testing.AllocsPerRun(100, func() { messages.OpenEnvelope(payload) }); n > 2 {
		t.Errorf("OpenEnvelope allocates %v times, want at most 2 (the names)", n)
	}
	// It agrees with Decode on every frame an envelope can carry.
	for _, s := range samples() {
		payload := messages.AppendEnvelope(nil, "a", "a/b", s.msg)
		_, _, frame, err := messages.OpenEnvelope(payload)
		if err != nil || !bytes.Equal(frame, messages.Encode(s.msg)) {
			t.Errorf("%s: OpenEnvelope = %x, %v", s.name, frame, err)
		}
	}
	if _, _, frame, err := messages.OpenEnvelope(messages.Encode(&messages.Envelope{ReplyTo: "a", Conn: "b"})); err != nil || len(frame) != 0 {
		t.Errorf("empty envelope: %x, %v", frame, err)
	}
	for i := range len(payload) - len(inner) {
		if _, _, _, err := messages.OpenEnvelope(payload[:i]); !errors.Is(err, messages.ErrMalformed) {
			t.Fatalf("truncated to %d bytes: err = %v, want ErrMalformed", i, err)
		}
	}
	if _, _, _, err := messages.OpenEnvelope(inner); !errors.Is(err, messages.ErrMalformed) {
		t.Errorf("not an envelope: %v", err)
	}
	other := bytes.Clone(payload)
	other[0] = 1
	if _, _, _, err := messages.OpenEnvelope(other); !errors.Is(err, messages.ErrVersion) {
		t.Errorf("version 1 envelope: %v, want ErrVersion", err)
	}
}

type wireExample struct {
	name string
	msg  messages.Message
	hex  string
}

// wireExamples are the frames in section 14 of docs/PROTOCOL.md. The hex
// is written out here, not computed, so that the document, this list and
// the encoder are three independent witnesses.
func wireExamples() []wireExample {
	return []wireExample{
		{"Ping", &messages.Ping{}, "0230"},
		{"Challenge", &messages.Challenge{Nonce: "q0lA9zXcVw2gXKQ3PHrKsQ", Domain: "tunnel.example"},
			"02 01" +
				" 00000016 71306c41397a586356773267584b51335048724b7351" +
				" 0000000e 74756e6e656c2e6578616d706c65"},
		{"RegistrationResponse", &messages.RegistrationResponse{
			Hostname:          "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			URL:               "https://sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example",
			PingMillis:        10000,
			TimeoutMillis:     30000,
			IdleTimeoutMillis: 60000,
			MaxBody:           500000,
			MaxWindow:         8 << 20,
			ConnBudget:        16 << 20,
		},
			"02 03" +
				" 00000043" +
				" 7364356d7637766a77666b776e6763756235796d61656c32656c766470706b3436" +
				" 7077747972796a68716c716f6b626c6a6f65712e74756e6e656c2e6578616d706c65" +
				" 0000004b" +
				" 68747470733a2f2f" +
				" 7364356d7637766a77666b776e6763756235796d61656c32656c766470706b3436" +
				" 7077747972796a68716c716f6b626c6a6f65712e74756e6e656c2e6578616d706c65" +
				" 00002710" +
				" 00007530" +
				" 0000ea60" +
				" 0007a120" +
				" 00800000" +
				" 01000000"},
		{"HTTPRequest", &messages.HTTPRequest{
			ID:     testID,
			Window: 262144,
			Method: "GET",
			URI:    "/?q=1",
			Host:   "a.example",
			Header: messages.Header{"Accept": {"*/*"}, "Cookie": {"a=1", "b=2"}},
		},
			"02 10" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 00" +
				" 00040000" +
				" 00000003 474554" +
				" 00000005 2f3f713d31" +
				" 00000009 612e6578616d706c65" +
				" 00000003" +
				" 00000006 416363657074 00000003 2a2f2a" +
				" 00000006 436f6f6b6965 00000003 613d31" +
				" 00000006 436f6f6b6965 00000003 623d32"},
		{"HTTPRequest with a body", &messages.HTTPRequest{
			ID:             testID,
			Body:           true,
			ExpectContinue: true,
			Window:         262144,
			Method:         "POST",
			URI:            "/upload",
			Host:           "a.example",
			Header:         messages.Header{"Content-Length": {"5"}, "Expect": {"100-continue"}},
		},
			"02 10" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 03" +
				" 00040000" +
				" 00000004 504f5354" +
				" 00000007 2f75706c6f6164" +
				" 00000009 612e6578616d706c65" +
				" 00000002" +
				" 0000000e 436f6e74656e742d4c656e677468 00000001 35" +
				" 00000006 457870656374 0000000c 3130302d636f6e74696e7565"},
		{"Credit", &messages.Credit{ID: testID, Increment: 262144},
			"02 51" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 00040000"},
		{"Data", &messages.Data{ID: testID, End: true, Data: []byte("hello")},
			"02 50" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 01" +
				" 00000005 68656c6c6f"},
		{"HTTPResponse", &messages.HTTPResponse{
			ID:     testID,
			Body:   true,
			Status: 200,
			Header: messages.Header{"Content-Type": {"text/plain"}, "Trailer": {"Grpc-Status"}},
		},
			"02 11" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 01" +
				" 00c8" +
				" 00000002" +
				" 0000000c 436f6e74656e742d54797065 0000000a 746578742f706c61696e" +
				" 00000007 547261696c6572 0000000b 477270632d537461747573"},
		{"Data, not the end", &messages.Data{ID: testID, Data: []byte("hello")},
			"02 50" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 00" +
				" 00000005 68656c6c6f"},
		{"Trailer", &messages.Trailer{ID: testID, Header: messages.Header{"Grpc-Status": {"0"}}},
			"02 52" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 00000001" +
				" 0000000b 477270632d537461747573 00000001 30"},
		{"Data, end only", &messages.Data{ID: testID, End: true},
			"02 50" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 01" +
				" 00000000"},
		{"Credit, connection", &messages.Credit{Increment: 262144},
			"02 51" +
				" 00000000000000000000000000000000" +
				" 00040000"},
		{"WSRequest", &messages.WSRequest{
			ID:           testID,
			Window:       262144,
			URI:          "/chat",
			Host:         "a.example",
			Header:       messages.Header{"Origin": {"https://a.example"}},
			Subprotocols: []string{"chat.v1"},
		},
			"02 20" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 00040000" +
				" 00000005 2f63686174" +
				" 00000009 612e6578616d706c65" +
				" 00000001" +
				" 00000006 4f726967696e 00000011 68747470733a2f2f612e6578616d706c65" +
				" 00000001" +
				" 00000007 636861742e7631"},
		{"WSResponse", &messages.WSResponse{ID: testID, Status: 101, Subprotocol: "chat.v1"},
			"02 21" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 0065" +
				" 00000007 636861742e7631" +
				" 00000000" +
				" 00000000"},
		{"WSMessage, first fragment", &messages.WSMessage{ID: testID, Opcode: messages.OpText, Data: []byte("hel")},
			"02 22" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 01" +
				" 00" +
				" 00000003 68656c"},
		{"WSMessage, last fragment", &messages.WSMessage{ID: testID, Opcode: messages.OpText, Fin: true, Data: []byte("lo")},
			"02 22" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 01" +
				" 01" +
				" 00000002 6c6f"},
		{"WSTeardown", &messages.WSTeardown{ID: testID, Code: 1000, Reason: "bye"},
			"02 23" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 03e8" +
				" 00000003 627965"},
		{"Error", &messages.Error{ID: testID, Code: messages.CodeCanceled, Reason: "gone"},
			"02 31" +
				" 000102030405060708090a0b0c0d0e0f" +
				" 0001" +
				" 00000000" +
				" 00000004 676f6e65"},
		{"Batch", &messages.Batch{Frames: [][]byte{
			messages.Encode(&messages.Credit{ID: testID, Increment: 65536}),
			messages.Encode(&messages.Ping{}),
		}},
			"02 32" +
				" 00000016" +
				" 02 51 000102030405060708090a0b0c0d0e0f 00010000" +
				" 00000002" +
				" 02 30"},
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

// frameExamplesSection is the number of the "Worked frame examples"
// section of docs/PROTOCOL.md.
const frameExamplesSection = 14

// The hex in the protocol document is the hex the tests check: in each
// line of a frame example, what comes before a run of two spaces is hex.
// Every example in the section must be one of wireExamples, so none goes
// unchecked.
func TestProtocolDocFrames(t *testing.T) {
	sec := docSection(t, frameExamplesSection)
	if !strings.HasPrefix(sec, "Worked frame examples") {
		t.Fatalf("section %d is not the worked frame examples: %.40q", frameExamplesSection, sec)
	}
	comment := regexp.MustCompile(`\s{2,}`)
	known := map[string]bool{}
	for _, tc := range wireExamples() {
		known[tc.name] = true
		var hexs strings.Builder
		for _, line := range codeAfter(t, sec, "**"+tc.name+"**") {
			hexs.WriteString(strings.ReplaceAll(comment.Split(line, 2)[0], " ", ""))
		}
		if got, want := hexs.String(), strings.ReplaceAll(tc.hex, " ", ""); got != want {
			t.Errorf("%s: docs/PROTOCOL.md has\n%s\nwant\n%s", tc.name, got, want)
		}
	}
	headings := regexp.MustCompile(`(?m)^\*\*([^*]+)\*\*`).FindAllStringSubmatch(sec, -1)
	seen := map[string]bool{}
	for _, h := range headings {
		if !known[h[1]] {
			t.Errorf("docs/PROTOCOL.md example %q is not checked by wireExamples", h[1])
		}
		if seen[h[1]] {
			t.Errorf("docs/PROTOCOL.md has two examples named %q", h[1])
		}
		seen[h[1]] = true
	}
	if len(seen) != len(known) {
		t.Errorf("docs/PROTOCOL.md has %d examples, wireExamples %d", len(seen), len(known))
	}
}

// Section 4's table of messages gives every type its pinned value.
func TestProtocolDocMessageTable(t *testing.T) {
	sec := docSection(t, 4)
	for _, tc := range pinnedTypes {
		if row := fmt.Sprintf("| `0x%02x` | %s |", tc.want, tc.name); !strings.Contains(sec, row) {
			t.Errorf("docs/PROTOCOL.md section 4 lacks the row %q", row)
		}
	}
}

// The document names the paths and the version byte this package uses.
func TestProtocolDocTransport(t *testing.T) {
	sec := docSection(t, 1)
	for _, want := range []string{messages.ControlPath, messages.LegacyControlPath} {
		if !strings.Contains(sec, want) {
			t.Errorf("docs/PROTOCOL.md section 1 lacks %q", want)
		}
	}
	if want := fmt.Sprintf("`version` is `0x%02x`", messages.Version); !strings.Contains(docSection(t, 2), want) {
		t.Errorf("docs/PROTOCOL.md section 2 lacks %q", want)
	}
}

// Section 11's table gives each limit the value this package uses.
func TestProtocolDocLimits(t *testing.T) {
	sec := docSection(t, 11)
	for _, v := range []struct {
		name string
		n    int
	}{
		{"MaxFrame", messages.MaxFrame},
		{"MaxData", messages.MaxData},
		{"MaxHead", messages.MaxHead},
		{"MaxPreRegistration", messages.MaxPreRegistration},
		{"MaxHandshakeRead", messages.MaxHandshakeRead},
		{"InitialWindow", messages.InitialWindow},
		{"InitialConnWindow", messages.InitialConnWindow},
		{"MaxJWS", messages.MaxJWS},
		{"MaxCloseReason", messages.MaxCloseReason},
	} {
		if row := fmt.Sprintf("| `%s` | %d ", v.name, v.n); !strings.Contains(sec, row) {
			t.Errorf("docs/PROTOCOL.md section 11 lacks a row starting %q", row)
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
