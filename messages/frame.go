package messages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Version is the protocol version carried in the first byte of every frame.
//
// Changelog:
//   - 1: initial protocol; every HTTP body crossed as one message.
//   - 2: every body is a stream: HTTPRequest and HTTPResponse carry heads
//     only, bodies follow as Data frames under credit (Credit), trailers
//     as Trailer; WSMessage is cut into fragments under the same credit;
//     Batch carries several frames in one websocket message.
const Version = 2

// Type identifies a message. The values are part of the wire protocol and
// pinned by a test; never renumber them.
type Type uint8

// Message types. Ranges: 0x0_ registration, 0x1_ HTTP, 0x2_ WebSocket,
// 0x3_ control, 0x4_ between proxy instances only (never sent to clients),
// 0x5_ stream data and flow control, 0x6_ TCP.
const (
	TypeChallenge            Type = 0x01
	TypeRegistrationRequest  Type = 0x02
	TypeRegistrationResponse Type = 0x03
	TypeHTTPRequest          Type = 0x10
	TypeHTTPResponse         Type = 0x11
	TypeWSRequest            Type = 0x20
	TypeWSResponse           Type = 0x21
	TypeWSMessage            Type = 0x22
	TypeWSTeardown           Type = 0x23
	TypePing                 Type = 0x30
	TypeError                Type = 0x31
	TypeBatch                Type = 0x32
	TypeEnvelope             Type = 0x40
	TypeTakeover             Type = 0x41
	TypeReply                Type = 0x42
	TypeRevoke               Type = 0x43
	TypeData                 Type = 0x50
	TypeCredit               Type = 0x51
	TypeTrailer              Type = 0x52
	TypeTCPRequest           Type = 0x60
	TypeTCPResponse          Type = 0x61
)

var typeNames = map[Type]string{
	TypeChallenge:            "Challenge",
	TypeRegistrationRequest:  "RegistrationRequest",
	TypeRegistrationResponse: "RegistrationResponse",
	TypeHTTPRequest:          "HTTPRequest",
	TypeHTTPResponse:         "HTTPResponse",
	TypeWSRequest:            "WSRequest",
	TypeWSResponse:           "WSResponse",
	TypeWSMessage:            "WSMessage",
	TypeWSTeardown:           "WSTeardown",
	TypePing:                 "Ping",
	TypeError:                "Error",
	TypeBatch:                "Batch",
	TypeEnvelope:             "Envelope",
	TypeTakeover:             "Takeover",
	TypeReply:                "Reply",
	TypeRevoke:               "Revoke",
	TypeData:                 "Data",
	TypeCredit:               "Credit",
	TypeTrailer:              "Trailer",
	TypeTCPRequest:           "TCPRequest",
	TypeTCPResponse:          "TCPResponse",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("Type(0x%02x)", uint8(t))
}

// Decoding errors. Callers classify them with errors.Is.
var (
	// ErrVersion means the frame's version byte is not [Version].
	ErrVersion = errors.New("messages: unsupported protocol version")
	// ErrUnknownType means the frame is well-formed but of a type this
	// implementation does not know. Receivers skip such frames.
	ErrUnknownType = errors.New("messages: unknown message type")
	// ErrMalformed means the frame is truncated, has trailing bytes, or a
	// length that does not fit.
	ErrMalformed = errors.New("messages: malformed frame")
)

// Message is implemented by every message type.
type Message interface {
	Type() Type
	appendPayload(b []byte) []byte
	decodePayload(d *decoder)
}

// HeaderSize is the number of bytes before a frame's payload.
const HeaderSize = 2

// Append appends m, framed, to dst and returns the extended slice.
func Append(dst []byte, m Message) []byte {
	dst = append(dst, Version, byte(m.Type()))
	return m.appendPayload(dst)
}

// Encode returns m as a new frame.
func Encode(m Message) []byte { return Append(make([]byte, 0, 64), m) }

// Peek returns a frame's type without decoding it.
func Peek(frame []byte) (Type, error) {
	if len(frame) < HeaderSize {
		return 0, ErrMalformed
	}
	if frame[0] != Version {
		return 0, ErrVersion
	}
	return Type(frame[1]), nil
}

// PeekID returns the ID of a frame whose payload starts with one: every
// HTTP, WebSocket and stream message, and Error.
func PeekID(frame []byte) (ID, bool) {
	var id ID
	t, err := Peek(frame)
	if err != nil || !t.HasID() || len(frame) < HeaderSize+len(id) {
		return id, false
	}
	copy(id[:], frame[HeaderSize:])
	return id, true
}

// HasID reports whether frames of type t start with a stream ID.
func (t Type) HasID() bool {
	switch t {
	case TypeHTTPRequest, TypeHTTPResponse, TypeWSRequest, TypeWSResponse, TypeWSMessage, TypeWSTeardown,
		TypeError, TypeData, TypeCredit, TypeTrailer, TypeTCPRequest, TypeTCPResponse:
		return true
	}
	return false
}

// Decode parses one frame. Byte slices in the result (bodies, message data,
// the envelope's inner frame) alias frame; strings are copies.
func Decode(frame []byte) (Message, error) {
	t, err := Peek(frame)
	if err != nil {
		return nil, err
	}
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("%w: 0x%02x", ErrUnknownType, uint8(t))
	}
	d := decoder{b: frame[HeaderSize:]}
	m.decodePayload(&d)
	if d.err == nil && len(d.b) != 0 {
		d.err = ErrMalformed
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode %v: %w", t, d.err)
	}
	return m, nil
}

func newMessage(t Type) Message {
	switch t {
	case TypeChallenge:
		return new(Challenge)
	case TypeRegistrationRequest:
		return new(RegistrationRequest)
	case TypeRegistrationResponse:
		return new(RegistrationResponse)
	case TypeHTTPRequest:
		return new(HTTPRequest)
	case TypeHTTPResponse:
		return new(HTTPResponse)
	case TypeWSRequest:
		return new(WSRequest)
	case TypeWSResponse:
		return new(WSResponse)
	case TypeWSMessage:
		return new(WSMessage)
	case TypeWSTeardown:
		return new(WSTeardown)
	case TypePing:
		return new(Ping)
	case TypeError:
		return new(Error)
	case TypeBatch:
		return new(Batch)
	case TypeEnvelope:
		return new(Envelope)
	case TypeTakeover:
		return new(Takeover)
	case TypeRevoke:
		return new(Revoke)
	case TypeReply:
		return new(Reply)
	case TypeData:
		return new(Data)
	case TypeCredit:
		return new(Credit)
	case TypeTrailer:
		return new(Trailer)
	case TypeTCPRequest:
		return new(TCPRequest)
	case TypeTCPResponse:
		return new(TCPResponse)
	}
	return nil
}

// Primitive encodings, all big-endian:
//
//	u8, u16, u32       fixed width
//	bytes, string      u32 length, then that many bytes
//	id                 16 raw bytes
//	header             u32 pair count, then (string name, string value) pairs

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

func appendBytes(b, v []byte) []byte {
	b = appendU32(b, uint32(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = appendU32(b, uint32(len(v)))
	return append(b, v...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	// The length is checked against what remains before anything is
	// allocated, so a hostile length cannot make us allocate.
	if n > uint64(len(d.b)) {
		d.err = ErrMalformed
		d.b = nil
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) bytes() []byte {
	n := d.u32()
	v := d.take(uint64(n))
	if len(v) == 0 {
		return nil
	}
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) id() (id ID) {
	copy(id[:], d.take(uint64(len(id))))
	return id
}

// flags reads a flags byte; bits outside known are a malformed frame, so
// that a flag added later cannot be silently ignored by an old receiver.
func (d *decoder) flags(known uint8) uint8 {
	f := d.u8()
	if d.err == nil && f&^known != 0 {
		d.err = ErrMalformed
	}
	return f
}

// header decodes a header block. Each pair needs at least 8 bytes, which
// bounds the count before the map is allocated.
func (d *decoder) header() Header {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint64(n)*8 > uint64(len(d.b)) {
		d.err = ErrMalformed
		return nil
	}
	if n == 0 {
		return nil
	}
	h := make(Header, min(n, math.MaxUint16))
	for range n {
		k := d.string()
		v := d.string()
		if d.err != nil {
			return nil
		}
		h[k] = append(h[k], v)
	}
	return h
}

// AppendEnvelope appends an Envelope carrying m to dst, encoding m in place
// rather than framing it separately first.
func AppendEnvelope(dst []byte, replyTo, conn string, m Message) []byte {
	dst = append(dst, Version, byte(TypeEnvelope))
	dst = appendString(dst, replyTo)
	dst = appendString(dst, conn)
	return Append(dst, m)
}

// EnvelopeSize is the encoded size of an Envelope carrying a frame of
// frameLen bytes, for sizing a buffer up front.
func EnvelopeSize(replyTo, conn string, frameLen int) int {
	return HeaderSize + 4 + len(replyTo) + 4 + len(conn) + frameLen
}

// OpenEnvelope returns the connection an Envelope names and the frame it
// carries, without decoding the frame or copying it.
func OpenEnvelope(payload []byte) (replyTo, conn string, frame []byte, err error) {
	t, err := Peek(payload)
	if err != nil {
		return "", "", nil, err
	}
	if t != TypeEnvelope {
		return "", "", nil, fmt.Errorf("%w: %v is not an Envelope", ErrMalformed, t)
	}
	d := decoder{b: payload[HeaderSize:]}
	replyTo = d.string()
	conn = d.string()
	if d.err != nil {
		return "", "", nil, fmt.Errorf("decode Envelope: %w", d.err)
	}
	return replyTo, conn, d.b, nil
}

// OpenReply returns the connection a Reply comes from and the frame it
// carries, without decoding the frame or copying it.
func OpenReply(payload []byte) (conn string, frame []byte, err error) {
	t, err := Peek(payload)
	if err != nil {
		return "", nil, err
	}
	if t != TypeReply {
		return "", nil, fmt.Errorf("%w: %v is not a Reply", ErrMalformed, t)
	}
	d := decoder{b: payload[HeaderSize:]}
	conn = d.string()
	if d.err != nil {
		return "", nil, fmt.Errorf("decode Reply: %w", d.err)
	}
	return conn, d.b, nil
}

// AppendReply appends a Reply carrying an encoded frame from client
// connection conn to dst.
func AppendReply(dst []byte, conn string, frame []byte) []byte {
	dst = append(dst, Version, byte(TypeReply))
	dst = appendString(dst, conn)
	return append(dst, frame...)
}

// AppendReplyMessage is AppendReply for a message not yet encoded.
func AppendReplyMessage(dst []byte, conn string, m Message) []byte {
	dst = append(dst, Version, byte(TypeReply))
	dst = appendString(dst, conn)
	return Append(dst, m)
}

// ReplySize is the encoded size of a Reply from conn carrying a frame of
// frameLen bytes.
func ReplySize(conn string, frameLen int) int { return HeaderSize + 4 + len(conn) + frameLen }

// AppendEnvelopeFrame is AppendEnvelope for a frame that is already encoded.
func AppendEnvelopeFrame(dst []byte, replyTo, conn string, frame []byte) []byte {
	dst = append(dst, Version, byte(TypeEnvelope))
	dst = appendString(dst, replyTo)
	dst = appendString(dst, conn)
	return append(dst, frame...)
}

// EachFrame decodes one websocket message, a frame or a Batch of them,
// and calls fn with each frame in order, raw and decoded. Frames of types
// this implementation does not know are skipped, as receivers must. It
// stops at the first error, fn's or a decoding one (wrapping ErrVersion or
// ErrMalformed).
func EachFrame(msg []byte, fn func(frame []byte, m Message) error) error {
	m, err := Decode(msg)
	if errors.Is(err, ErrUnknownType) {
		return nil
	}
	if err != nil {
		return err
	}
	b, ok := m.(*Batch)
	if !ok {
		return fn(msg, m)
	}
	for _, f := range b.Frames {
		inner, err := Decode(f)
		if errors.Is(err, ErrUnknownType) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(f, inner); err != nil {
			return err
		}
	}
	return nil
}
