package messages

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
)

// ID names one stream: an HTTP exchange or a WebSocket. IDs are 128-bit
// random values chosen by the proxy and bound to the client connection they
// were sent to. The zero ID names the connection itself (in Error and
// Credit).
type ID [16]byte

// NewID returns a random ID.
func NewID() ID {
	var id ID
	rand.Read(id[:]) // never returns an error (crypto/rand documents this)
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros, which Error and Credit use for
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

// HeaderBlockSize is the encoded size of h as a header block: 4 bytes of
// count, then 8 bytes of lengths plus the name and value per pair.
func HeaderBlockSize(h Header) int {
	n := 4
	for k, vs := range h {
		n += len(vs) * (8 + len(k))
		for _, v := range vs {
			n += len(v)
		}
	}
	return n
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
	// TimeoutMillis is how long the proxy waits for a response head
	// (HTTPResponse or WSResponse) while the tunnel makes no progress.
	TimeoutMillis uint32
	// IdleTimeoutMillis ends an HTTP stream that moved no byte in either
	// direction for this long.
	IdleTimeoutMillis uint32
	// MaxBody is the largest request or response body, and the largest
	// WebSocket message, in bytes; 0 means no cap.
	MaxBody uint32
	// MaxWindow is the most credit either side may have outstanding on one
	// stream.
	MaxWindow uint32
	// ConnBudget bounds how far the client may grow the windows of this
	// connection's streams beyond their initial size, all streams
	// together.
	ConnBudget uint32
}

// Flags of HTTPRequest and HTTPResponse.
const (
	// FlagBody says that a body follows the head in Data frames.
	FlagBody uint8 = 1 << 0
	// FlagExpectContinue (HTTPRequest only) says the request body's
	// initial window is zero: the proxy sends it only after the client's
	// first Credit, so that a local service can answer before the body
	// moves (Expect: 100-continue).
	FlagExpectContinue uint8 = 1 << 1
)

// HTTPRequest opens a stream for one public HTTP request. It carries the
// head; the body, if Body is set, follows in Data frames.
type HTTPRequest struct {
	ID             ID
	Body           bool
	ExpectContinue bool
	// Window is the credit the proxy grants for the response body: the
	// client may send that many body bytes before the first Credit.
	Window uint32
	Method string
	// URI is the request target as received: path and query, e.g.
	// "/search?q=a".
	URI string
	// Host is the public Host the request was addressed to.
	Host   string
	Header Header
}

// HTTPResponse answers the HTTPRequest with the same ID. It carries the
// head; the body, if Body is set, follows in Data frames.
type HTTPResponse struct {
	ID     ID
	Body   bool
	Status uint16
	Header Header
}

// WSRequest asks the client to open a WebSocket to the local service.
type WSRequest struct {
	ID ID
	// Window is the credit the proxy grants for the client's messages.
	Window       uint32
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

// WSMessage is one fragment of a WebSocket message on the stream named by
// ID, in either direction. A message is one or more fragments of the same
// opcode; the last has Fin set. Data counts against the stream's credit.
type WSMessage struct {
	ID     ID
	Opcode Opcode
	Fin    bool
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
// sent nothing for the ping interval. Its payload is empty.
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
	CodeGone        ErrorCode = 12 // between proxies: the connection named has gone from its instance; look the hostname up again
	CodeNameLost    ErrorCode = 13 // with the zero ID, to the client: a name it was served at is now served by a newer grant; Reason says which
	CodeRefused     ErrorCode = 14 // a TCP stream refused: a missing or wrong visitor token, or a hostname that is no TCP tunnel; Reason says which
)

// Error resets the stream named by ID: neither side sends anything more
// for it. With the zero ID it is a notice about the whole connection.
type Error struct {
	ID         ID
	Code       ErrorCode
	RetryAfter uint32 // seconds, for CodeRateLimited
	Reason     string
}

// Data carries body bytes of the stream named by ID. End marks the last
// frame of that direction; an empty Data with End only ends it. Data counts
// against the stream's and the connection's credit.
type Data struct {
	ID   ID
	End  bool
	Data []byte
}

// Credit lets the peer send Increment more bytes of Data or WSMessage on
// the stream named by ID, or, with the zero ID, on the whole connection.
type Credit struct {
	ID        ID
	Increment uint32
}

// Trailer ends a body with trailer fields, in place of a Data with End.
type Trailer struct {
	ID     ID
	Header Header
}

// Batch carries several frames in one websocket message, so that a busy
// connection writes many small frames with one system call. A Batch never
// holds a Batch.
type Batch struct {
	Frames [][]byte
}

// Envelope carries a frame for a client connection between proxy
// instances: from the instance serving a visitor to the one holding the
// client.
type Envelope struct {
	// ReplyTo is the instance that published the envelope and wants the
	// answers.
	ReplyTo string
	// Conn is the client connection the frame is meant for.
	Conn string
	// Frame is one framed message.
	Frame []byte
}

// Reply carries a frame from a client connection back to the instance
// serving the stream it belongs to.
type Reply struct {
	// Conn is the client connection the frame comes from: a stream that
	// moved to a successor connection hears from it this way.
	Conn string
	// Frame is one framed message.
	Frame []byte
}

// Takeover tells the instance holding a connection that a newer one
// registered the same key. It travels inside an Envelope whose Conn is the
// connection replaced.
type Takeover struct {
	Hostname string
	// Successor is the connection that replaced it.
	Successor string
}

// Revoke tells every instance that a key, a name or an access token was
// revoked: each closes the connections it covers. It travels alone, not in
// an Envelope; the registry keeps the record that refuses registrations.
type Revoke struct {
	Kind  string // "key", "name" or "token"
	Value string // the key's hostname label, the name, or the token ID
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
func (*Batch) Type() Type                { return TypeBatch }
func (*Envelope) Type() Type             { return TypeEnvelope }
func (*Takeover) Type() Type             { return TypeTakeover }
func (*Reply) Type() Type                { return TypeReply }
func (*Revoke) Type() Type               { return TypeRevoke }
func (*Data) Type() Type                 { return TypeData }
func (*Credit) Type() Type               { return TypeCredit }
func (*Trailer) Type() Type              { return TypeTrailer }

func boolFlag(v bool, f uint8) uint8 {
	if v {
		return f
	}
	return 0
}

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
	b = appendU32(b, m.TimeoutMillis)
	b = appendU32(b, m.IdleTimeoutMillis)
	b = appendU32(b, m.MaxBody)
	b = appendU32(b, m.MaxWindow)
	return appendU32(b, m.ConnBudget)
}

func (m *RegistrationResponse) decodePayload(d *decoder) {
	m.Hostname = d.string()
	m.URL = d.string()
	m.PingMillis = d.u32()
	m.TimeoutMillis = d.u32()
	m.IdleTimeoutMillis = d.u32()
	m.MaxBody = d.u32()
	m.MaxWindow = d.u32()
	m.ConnBudget = d.u32()
}

func (m *HTTPRequest) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = append(b, boolFlag(m.Body, FlagBody)|boolFlag(m.ExpectContinue, FlagExpectContinue))
	b = appendU32(b, m.Window)
	b = appendString(b, m.Method)
	b = appendString(b, m.URI)
	b = appendString(b, m.Host)
	return appendHeader(b, m.Header)
}

func (m *HTTPRequest) decodePayload(d *decoder) {
	m.ID = d.id()
	f := d.flags(FlagBody | FlagExpectContinue)
	m.Body, m.ExpectContinue = f&FlagBody != 0, f&FlagExpectContinue != 0
	m.Window = d.u32()
	m.Method = d.string()
	m.URI = d.string()
	m.Host = d.string()
	m.Header = d.header()
}

func (m *HTTPResponse) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = append(b, boolFlag(m.Body, FlagBody))
	b = appendU16(b, m.Status)
	return appendHeader(b, m.Header)
}

func (m *HTTPResponse) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Body = d.flags(FlagBody) != 0
	m.Status = d.u16()
	m.Header = d.header()
}

func (m *WSRequest) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = appendU32(b, m.Window)
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
	m.Window = d.u32()
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

// flagFin is the WSMessage flag of a message's last fragment.
const flagFin uint8 = 1 << 0

func (m *WSMessage) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = append(b, byte(m.Opcode), boolFlag(m.Fin, flagFin))
	return appendBytes(b, m.Data)
}

func (m *WSMessage) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Opcode = Opcode(d.u8())
	if d.err == nil && m.Opcode != OpText && m.Opcode != OpBinary {
		d.err = ErrMalformed
	}
	m.Fin = d.flags(flagFin) != 0
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

// flagEnd is the Data flag of a direction's last frame.
const flagEnd uint8 = 1 << 0

func (m *Data) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	b = append(b, boolFlag(m.End, flagEnd))
	return appendBytes(b, m.Data)
}

func (m *Data) decodePayload(d *decoder) {
	m.ID = d.id()
	m.End = d.flags(flagEnd) != 0
	m.Data = d.bytes()
}

func (m *Credit) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	return appendU32(b, m.Increment)
}

func (m *Credit) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Increment = d.u32()
}

func (m *Trailer) appendPayload(b []byte) []byte {
	b = append(b, m.ID[:]...)
	return appendHeader(b, m.Header)
}

func (m *Trailer) decodePayload(d *decoder) {
	m.ID = d.id()
	m.Header = d.header()
}

func (m *Batch) appendPayload(b []byte) []byte {
	for _, f := range m.Frames {
		b = appendBytes(b, f)
	}
	return b
}

// decodePayload reads frames to the end of the payload. Each needs at
// least its 4-byte length and a frame header, and none may be a Batch.
func (m *Batch) decodePayload(d *decoder) {
	for d.err == nil && len(d.b) > 0 {
		f := d.bytes()
		if d.err != nil {
			return
		}
		if len(f) < HeaderSize || Type(f[1]) == TypeBatch {
			d.err = ErrMalformed
			return
		}
		m.Frames = append(m.Frames, f)
	}
}

// AppendBatch appends a Batch of frames, already encoded, to dst.
func AppendBatch(dst []byte, frames [][]byte) []byte {
	return Append(dst, &Batch{Frames: frames})
}

// BatchOverhead is what a Batch of n frames adds to their own sizes.
func BatchOverhead(n int) int { return HeaderSize + 4*n }

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

func (m *Takeover) appendPayload(b []byte) []byte {
	b = appendString(b, m.Hostname)
	return appendString(b, m.Successor)
}

func (m *Takeover) decodePayload(d *decoder) {
	m.Hostname = d.string()
	m.Successor = d.string()
}

func (m *Revoke) appendPayload(b []byte) []byte {
	b = appendString(b, m.Kind)
	return appendString(b, m.Value)
}

func (m *Revoke) decodePayload(d *decoder) {
	m.Kind = d.string()
	m.Value = d.string()
}

func (m *Reply) appendPayload(b []byte) []byte {
	b = appendString(b, m.Conn)
	// The frame runs to the end of the reply, so it needs no length.
	return append(b, m.Frame...)
}

func (m *Reply) decodePayload(d *decoder) {
	m.Conn = d.string()
	if m.Frame = d.take(uint64(len(d.b))); len(m.Frame) == 0 {
		m.Frame = nil
	}
}

// CreditBytes is the credit a frame uses: the data of a Data or WSMessage
// frame, and nothing for any other.
func CreditBytes(m Message) int {
	switch m := m.(type) {
	case *Data:
		return len(m.Data)
	case *WSMessage:
		return len(m.Data)
	}
	return 0
}

// TrailerFields returns the trailer fields of h that have a value, for a
// Trailer frame. net/http declares trailers by name before it knows their
// values, so a declared trailer that never got one is left out.
func TrailerFields(h map[string][]string) Header {
	t := Header{}
	for k, v := range h {
		if len(v) > 0 {
			t[k] = v
		}
	}
	return t
}
