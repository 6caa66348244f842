package messages

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
)

// ID names one HTTP exchange or one WebSocket stream. IDs are 128-bit random
// values chosen by the proxy and bound to the client connection they were
// sent to.
type ID [16]byte

// NewID returns a random ID.
func NewID() ID {
	var id ID
	rand.Read(id[:]) // never returns an error (crypto/rand documents this)
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros, which Error uses for messages about
// the whole connection.
func (id ID) IsZero() bool { return id == ID{} }

// Header is a multi-valued header map with the same shape as http.Header, so
// the two convert directly. Every value of every name is kept, in order.
type Header map[string][]string

func appendHeader(b []byte, h Header) []byte {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	b = appendU32(b, uint32(n))
	if n == 0 {
		return b
	}
	// Names are written in sorted order so that equal headers encode to
	// equal bytes; the values of one name keep their order.
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			b = appendString(b, k)
			b = appendString(b, v)
		}
	}
	return b
}

// Challenge is the proxy's first message on a new client connection.
// The client must sign Nonce and Domain into its RegistrationRequest.
type Challenge struct {
	Nonce  string
	Domain string
}

// RegistrationRequest carries a compact JWS made by [SignRegistration].
type RegistrationRequest struct {
	JWS string
}

// RegistrationResponse tells the client its hostname and the limits the
// proxy enforces, so that it can enforce them too.
type RegistrationResponse struct {
	Hostname string // the full public hostname, e.g. "<52 chars>.localhost"
	URL      string // the public base URL, e.g. "http://<hostname>:8080"
	// PingMillis is how often each side sends a Ping when it has sent
	// nothing else; silence for twice this long ends the connection.
	PingMillis uint32
	// MaxBody is the largest request or response body, and the largest
	// WebSocket message, in bytes.
	MaxBody uint32
	// TimeoutMillis is how long the proxy waits for an HTTPResponse or a
	// WSResponse.
	TimeoutMillis uint32
}

// HTTPRequest is one public HTTP request.
type HTTPRequest struct {
	ID     ID
	Method string
	// URI is the request target as received: path and query, e.g.
	// "/search?q=a".
	URI string
	// Host is the public Host the request was addressed to.
	Host   string
	Header Header
	Body   []byte
}

// HTTPResponse answers the HTTPRequest with the same ID.
type HTTPResponse struct {
	ID     ID
	Status uint16
	Header Header
	Body   []byte
}

// WSRequest asks the client to open a WebSocket to the local service.
type WSRequest struct {
	ID           ID
	URI          string
	Host         string
	Header       Header // includes Origin; excludes the handshake's own headers
	Subprotocols []string
}

// WSResponse answers a WSRequest. Status 101 means the local service
// accepted; any other status is its refusal, passed on to the public caller
// with Header and Body.
type WSResponse struct {
	ID          ID
	Status      uint16
	Subprotocol string
	Header      Header
	Body        []byte
}

// Opcode is a WebSocket message type, numbered as in RFC 6455.
type Opcode uint8

// WebSocket data opcodes.
const (
	OpText   Opcode = 1
	OpBinary Opcode = 2
)

// WSMessage is one WebSocket message on the stream named by ID, in either
// direction.
type WSMessage struct {
	ID     ID
	Opcode Opcode
	Data   []byte
}

// WSTeardown closes the stream named by ID, in either direction, with a
// RFC 6455 close code and reason.
type WSTeardown struct {
	ID     ID
	Code   uint16
	Reason string
}

// Ping keeps an idle connection alive. Either side sends one when it has
// sent nothing for the ping interval.
type Ping struct{}

// ErrorCode classifies an [Error].
type ErrorCode uint16

// Error codes. The proxy maps each to the public status given.
const (
	CodeCanceled    ErrorCode = 1  // the public caller is gone or timed out; stop work
	CodeUnavailable ErrorCode = 2  // tunnel offline or dropped: 502
	CodeRateLimited ErrorCode = 3  // per-connection rate exceeded: 429
	CodeTooLarge    ErrorCode = 4  // body or message over the limit: 502 (413 for requests)
	CodeBadResponse ErrorCode = 5  // the client answered with something invalid: 502
	CodeUpstream    ErrorCode = 6  // the local service could not be reached: 502
	CodeOverloaded  ErrorCode = 7  // a queue is full: 503
	CodeReplaced    ErrorCode = 8  // a newer connection registered the same key
	CodeGoingAway   ErrorCode = 9  // the proxy is shutting down: reconnect
	CodePolicy      ErrorCode = 10 // registration refused or protocol violated
	CodeTimeout     ErrorCode = 11 // the local service did not answer in time: 504
)

// Error reports a failure of the exchange named by ID, or of the whole
// connection when ID is zero.
type Error struct {
	ID         ID
	Code       ErrorCode
	RetryAfter uint32 // seconds, for CodeRateLimited
	Reason     string
}

// Envelope is the payload of every bus message between proxy instances.
type Envelope struct {
	// ReplyTo is the instance that published the envelope and wants the
	// answers.
	ReplyTo string
	// Conn is the client connection the frame is meant for. The holder
	// drops frames for any other connection.
	Conn string
	// Frame is one framed message.
	Frame []byte
}

// Takeover is published on a hostname's topic when a connection registers
// it; every instance closes any other connection it holds for that
// hostname. It travels inside an Envelope whose Conn is the new connection.
type Takeover struct {
	Hostname string
}

func (*Challenge) Type() Type            { return TypeChallenge }
func (*RegistrationRequest) Type() Type  { return TypeRegistrationRequest }
func (*RegistrationResponse) Type() Type { return TypeRegistrationResponse }
func (*HTTPRequest) Type() Type          { return TypeHTTPRequest }
func (*HTTPResponse) Type() Type         { return TypeHTTPResponse }
func (*WSRequest) Type() Type            { return TypeWSRequest }
func (*WSResponse) Type() Type           { return TypeWSResponse }
func (*WSMessage) Type() Type            { return TypeWSMessage }
func (*WSTeardown) Type() Type           { return TypeWSTeardown }
func (*Ping) Type() Type                 { return TypePing }
func (*Error) Type() Type                { return TypeError }
func (*Envelope) Type() Type             { return TypeEnvelope }
func (*Takeover) Type() Type             { return TypeTakeover }

func (m *Challenge) appendPayload(b []byte) []byte {
	b = appendString(b, m.Nonce)
	return appendString(b, m.Domain)
}

func (m *Challenge) decodePayload(d *decoder) {
	m.Nonce = d.string()
	m.Domain = d.string()
}

func (m *RegistrationRequest) appendPayload(b []byte) []byte { return appendString(b, m.JWS) }
func (m *RegistrationRequest) decodePayload(d *decoder)      { m.JWS = d.string() }

func (m *RegistrationResponse) appendPayload(b []byte) []byte {
	b = appendString(b, m.Hostname)
	b = appendString(b, m.URL)
	b = appendU32(b, m.PingMillis)
	b = appendU32(b, m.MaxBody)
	return appendU32(b, m.TimeoutMillis)
}

func (m *RegistrationResponse) decodePayload(d *decoder) {
	m.Hostname = d.string()
	m.URL = d.string()
	m.PingMillis = d.u32()
	m.MaxBody = d.u32()
	m.TimeoutMillis = d.u32()
}

func (m *HTTPRequest) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = appendString(b, m.Method)
	b = appendString(b, m.URI)
	b = appendString(b, m.Host)
	b = appendHeader(b, m.Header)
	return appendBytes(b, m.Body)
}

func (m *HTTPRequest) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Method = d.string()
	m.URI = d.string()
	m.Host = d.string()
	m.Header = d.header()
	m.Body = d.bytes()
}

func (m *HTTPResponse) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = appendU16(b, m.Status)
	b = appendHeader(b, m.Header)
	return appendBytes(b, m.Body)
}

func (m *HTTPResponse) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Status = d.u16()
	m.Header = d.header()
	m.Body = d.bytes()
}

func (m *WSRequest) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = appendString(b, m.URI)
	b = appendString(b, m.Host)
	b = appendHeader(b, m.Header)
	b = appendU32(b, uint32(len(m.Subprotocols)))
	for _, p := range m.Subprotocols {
		b = appendString(b, p)
	}
	return b
}

func (m *WSRequest) decodePayload(d *decoder) {
	m.ID = d.id()
	m.URI = d.string()
	m.Host = d.string()
	m.Header = d.header()
	n := d.u32()
	// Each subprotocol needs at least its 4-byte length.
	if d.err != nil || uint64(n)*4 > uint64(len(d.b)) {
		if d.err == nil {
			d.err = ErrMalformed
		}
		return
	}
	for range n {
		m.Subprotocols = append(m.Subprotocols, d.string())
	}
}

func (m *WSResponse) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = appendU16(b, m.Status)
	b = appendString(b, m.Subprotocol)
	b = appendHeader(b, m.Header)
	return appendBytes(b, m.Body)
}

func (m *WSResponse) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Status = d.u16()
	m.Subprotocol = d.string()
	m.Header = d.header()
	m.Body = d.bytes()
}

func (m *WSMessage) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = append(b, byte(m.Opcode))
	return appendBytes(b, m.Data)
}

func (m *WSMessage) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Opcode = Opcode(d.u8())
	if d.err == nil && m.Opcode != OpText && m.Opcode != OpBinary {
		d.err = ErrMalformed
	}
	m.Data = d.bytes()
}

func (m *WSTeardown) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = appendU16(b, m.Code)
	return appendString(b, m.Reason)
}

func (m *WSTeardown) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Code = d.u16()
	m.Reason = d.string()
}

func (m *Ping) appendPayload(b []byte) []byte { return b }
func (m *Ping) decodePayload(d *decoder)      {}

func (m *Error) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = appendU16(b, uint16(m.Code))
	b = appendU32(b, m.RetryAfter)
	return appendString(b, m.Reason)
}

func (m *Error) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Code = ErrorCode(d.u16())
	m.RetryAfter = d.u32()
	m.Reason = d.string()
}

func (m *Envelope) appendPayload(b []byte) []byte {
	b = appendString(b, m.ReplyTo)
	b = appendString(b, m.Conn)
	// The frame runs to the end of the envelope, so it needs no length.
	return append(b, m.Frame...)
}

func (m *Envelope) decodePayload(d *decoder) {
	m.ReplyTo = d.string()
	m.Conn = d.string()
	// Empty decodes as nil, like every other byte field.
	if m.Frame = d.take(uint64(len(d.b))); len(m.Frame) == 0 {
		m.Frame = nil
	}
}

func (m *Takeover) appendPayload(b []byte) []byte { return appendString(b, m.Hostname) }
func (m *Takeover) decodePayload(d *decoder)      { m.Hostname = d.string() }
