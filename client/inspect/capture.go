package inspect

import (
	"bytes"
	"encoding/binary"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// RequestBody returns r wrapped so that what the local service reads of
// the request body is kept as it passes: a copy of each chunk into the
// ring, up to BodyLimit. length is the body's size if known, else -1.
func (x *Exchange) RequestBody(r io.ReadCloser, length int64) io.ReadCloser {
	if x == nil || x.r.Start.IsZero() || r == nil || r == http.NoBody {
		return r
	}
	return &bodyTee{r: r, c: r, x: x, length: length}
}

// ResponseBody returns r wrapped so that the response body is kept as it
// is sent to the proxy. length is the body's size if known, else -1.
func (x *Exchange) ResponseBody(r io.Reader, length int64) io.Reader {
	if x == nil || x.r.Start.IsZero() {
		return r
	}
	return &bodyTee{r: r, x: x, resp: true, length: length}
}

// bodyTee copies what passes through it into its exchange's body. It never
// holds data back: each Read returns what the underlying Read returned.
type bodyTee struct {
	r      io.Reader
	c      io.Closer
	x      *Exchange
	resp   bool
	length int64
}

func (t *bodyTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 || err == io.EOF {
		t.x.s.appendBody(t.x, t.resp, p[:n], err == io.EOF, t.length)
	}
	return n, err
}

func (t *bodyTee) Close() error {
	if t.c == nil {
		return nil
	}
	return t.c.Close()
}

func (s *Store) appendBody(x *Exchange, resp bool, p []byte, eof bool, length int64) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &x.r.Req
	if resp {
		b = &x.r.Resp
	}
	b.size += int64(len(p))
	if eof || (length >= 0 && b.size == length) {
		b.complete = true
	}
	take := min(int64(len(p)), s.o.BodyLimit-int64(len(b.data)))
	if take < int64(len(p)) {
		b.truncated = true
	}
	if take > 0 {
		if got := s.chargeUpToLocked(x, take); got < take {
			b.truncated = true
			take = got
		}
	}
	if take > 0 {
		if b.data == nil && length > 0 {
			// The whole kept part in one allocation.
			b.data = make([]byte, 0, min(length, s.o.BodyLimit))
		}
		b.data = append(b.data, p[:take]...)
	}
	// The list's size column follows at the next wake-up or tick; a
	// wake-up per chunk would cost more than the copy.
	s.seq++
	x.r.Seq = s.seq
	if resp && x.sse != nil && x.retained {
		x.sse.feedLocked(p, now)
	}
}

// WSMessage is one WebSocket message, or control frame, as captured.
type WSMessage struct {
	// Direction is "in" for a message from the visitor to the local
	// service, "out" for one from the local service.
	Direction string    `json:"direction"`
	Type      string    `json:"type"` // text, binary, close, ping or pong
	Size      int64     `json:"size"`
	Time      time.Time `json:"time"`
	// Text is the start of a text message (or a close reason); Data
	// that of a binary message, ping or pong.
	Text string `json:"text,omitempty"`
	Data []byte `json:"data,omitempty"`
	// Truncated says only the start (PreviewLimit bytes) is kept.
	Truncated bool `json:"truncated,omitempty"`
	CloseCode int  `json:"close_code,omitempty"`
}

// Directions of WebSocket messages.
const (
	DirIn  = "in"
	DirOut = "out"
)

// WebSocketResponse records the local service's answer to the WebSocket
// handshake. When it accepted (101), the connection in resp.Body is tapped
// so that each message is recorded as it passes, both ways.
func (x *Exchange) WebSocketResponse(resp *http.Response) {
	if x == nil || x.r.Start.IsZero() {
		return
	}
	hf := flatten(resp.Header)
	s := x.s
	s.mu.Lock()
	if x.retained {
		x.r.Responded, x.r.FirstByte, x.r.Status, x.r.Proto, x.r.respFlat = true, time.Now(), resp.StatusCode, resp.Proto, hf
		x.r.Subprotocol = resp.Header.Get("Sec-Websocket-Protocol")
		s.chargeHeadLocked(x, hf.bytes()+16)
		s.changedLocked(x)
	}
	s.mu.Unlock()
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &wsTap{rwc: rwc,
			in:  &frameParser{x: x, dir: DirIn, max: s.o.PreviewLimit},
			out: &frameParser{x: x, dir: DirOut, max: s.o.PreviewLimit}}
	}
}

// wsTap is the upgraded connection to the local service: what the client
// writes is the visitor's messages, what it reads the local service's.
type wsTap struct {
	rwc     io.ReadWriteCloser
	in, out *frameParser
}

func (t *wsTap) Read(p []byte) (int, error) {
	n, err := t.rwc.Read(p)
	t.out.feed(p[:n])
	return n, err
}

// Write records before it writes: once written, the local service's
// answer can be read (and recorded) before this Write returns.
func (t *wsTap) Write(p []byte) (int, error) {
	t.in.feed(p)
	return t.rwc.Write(p)
}

func (t *wsTap) Close() error { return t.rwc.Close() }

// frameParser follows one direction of a WebSocket's frames (RFC 6455
// section 5.2) and records each message once its last frame has passed.
// It keeps only the first max bytes of a message.
type frameParser struct {
	x   *Exchange
	dir string
	max int

	hdr       [14]byte
	hn        int  // header bytes held
	inPayload bool // hdr is complete; left bytes of payload follow
	left      uint64
	op        byte
	fin       bool
	masked    bool
	mask      [4]byte
	mpos      int

	inMsg bool // a data message has started
	typ   string
	size  int64
	start time.Time
	buf   []byte
	ctrl  []byte
}

func (p *frameParser) headerLen() int {
	if p.hn < 2 {
		return 2
	}
	n := 2
	switch p.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if p.hdr[1]&0x80 != 0 {
		n += 4
	}
	return n
}

func (p *frameParser) feed(b []byte) {
	for len(b) > 0 {
		if !p.inPayload {
			want := p.headerLen()
			c := copy(p.hdr[p.hn:want], b)
			p.hn += c
			b = b[c:]
			if p.hn == want && want == p.headerLen() {
				p.startFrame()
			}
			continue
		}
		c := int(min(uint64(len(b)), p.left))
		p.payload(b[:c])
		b = b[c:]
		p.left -= uint64(c)
		if p.left == 0 {
			p.endFrame()
		}
	}
}

func (p *frameParser) startFrame() {
	h := p.hdr[:p.hn]
	p.fin, p.op = h[0]&0x80 != 0, h[0]&0x0f
	p.masked = h[1]&0x80 != 0
	i := 2
	switch l := h[1] & 0x7f; l {
	case 126:
		p.left = uint64(binary.BigEndian.Uint16(h[2:]))
		i += 2
	case 127:
		p.left = binary.BigEndian.Uint64(h[2:])
		i += 8
	default:
		p.left = uint64(l)
	}
	if p.masked {
		copy(p.mask[:], h[i:i+4])
	}
	p.mpos, p.hn, p.inPayload = 0, 0, true
	switch p.op {
	case 1, 2:
		p.inMsg, p.size, p.start, p.buf = true, 0, time.Now(), p.buf[:0]
		p.typ = "text"
		if p.op == 2 {
			p.typ = "binary"
		}
	case 8, 9, 10:
		p.ctrl = p.ctrl[:0]
	}
	if p.left == 0 {
		p.endFrame()
	}
}

// payload takes the next bytes of the current frame's payload.
func (p *frameParser) payload(b []byte) {
	control := p.op >= 8
	keep := len(b)
	dst := &p.buf
	if control {
		dst = &p.ctrl
		keep = min(keep, 125-len(p.ctrl))
	} else {
		if !p.inMsg {
			p.mpos += len(b)
			return
		}
		p.size += int64(len(b))
		keep = min(keep, p.max-len(p.buf))
	}
	if keep > 0 {
		n := len(*dst)
		*dst = append(*dst, b[:keep]...)
		if p.masked {
			for i := range keep {
				(*dst)[n+i] ^= p.mask[(p.mpos+i)&3]
			}
		}
	}
	p.mpos += len(b)
}

func (p *frameParser) endFrame() {
	p.inPayload = false
	switch {
	case p.op >= 8:
		m := WSMessage{Direction: p.dir, Size: int64(len(p.ctrl)), Time: time.Now()}
		switch p.op {
		case 8:
			m.Type = "close"
			if len(p.ctrl) >= 2 {
				m.CloseCode = int(binary.BigEndian.Uint16(p.ctrl))
				m.Text = string(p.ctrl[2:])
			}
		case 9:
			m.Type, m.Data = "ping", bytes.Clone(p.ctrl)
		case 10:
			m.Type, m.Data = "pong", bytes.Clone(p.ctrl)
		default:
			return // reserved control opcode: nothing to show
		}
		p.x.s.addWS(p.x, m)
	case p.fin && p.inMsg:
		m := WSMessage{Direction: p.dir, Type: p.typ, Size: p.size, Time: p.start, Truncated: p.size > int64(len(p.buf))}
		if p.typ == "text" {
			m.Text = validPrefix(p.buf)
		} else {
			m.Data = bytes.Clone(p.buf)
		}
		p.inMsg = false
		p.x.s.addWS(p.x, m)
	}
}

// validPrefix is b as a string, without a rune cut in two at its end.
func validPrefix(b []byte) string {
	for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
		b = b[:len(b)-1]
	}
	return string(b)
}

func (s *Store) addWS(x *Exchange, m WSMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int64(len(m.Text) + len(m.Data))
	if !x.retained || x.r.itemBytes+n > s.o.BodyLimit || !s.chargeLocked(x, itemOverhead+n) {
		x.r.WSDropped++
		return
	}
	x.r.itemBytes += n
	x.r.WS = append(x.r.WS, m)
	s.changedLocked(x)
}

// SSEEvent is one server-sent event of a text/event-stream response.
type SSEEvent struct {
	Time  time.Time `json:"time"`
	ID    string    `json:"id,omitempty"`
	Event string    `json:"event,omitempty"`
	Data  string    `json:"data"`
	// Size is the bytes of data, kept or not.
	Size      int  `json:"size"`
	Truncated bool `json:"truncated,omitempty"`
}

func isEventStream(h http.Header) bool {
	const es = "text/event-stream"
	ct := h.Get("Content-Type")
	if len(ct) < len(es) || !strings.EqualFold(ct[:len(es)], es) {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// sseParser splits a text/event-stream body into events as it streams
// (the WHATWG HTML "event stream interpretation"). Lines and data are
// kept up to max bytes; their sizes are counted whole. It runs under the
// store's lock.
type sseParser struct {
	x       *Exchange
	max     int
	started bool // a leading byte-order mark is behind us
	skipLF  bool // the last line ended with CR: a LF next is part of it
	line    []byte
	lineLen int

	id, event string
	data      []byte
	dataSize  int
	hasData   bool
	truncated bool
}

func (p *sseParser) feedLocked(b []byte, now time.Time) {
	if !p.started && len(b) > 0 {
		p.started = true
		b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	}
	for len(b) > 0 {
		if p.skipLF {
			p.skipLF = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			p.appendLine(b)
			return
		}
		p.appendLine(b[:i])
		p.skipLF = b[i] == '\r'
		b = b[i+1:]
		p.lineLocked(now)
	}
}

func (p *sseParser) appendLine(b []byte) {
	p.lineLen += len(b)
	room := max(0, p.max+64-len(p.line))
	p.line = append(p.line, b[:min(len(b), room)]...)
}

func (p *sseParser) lineLocked(now time.Time) {
	line, size := p.line, p.lineLen
	p.line, p.lineLen = p.line[:0], 0
	if size == 0 {
		p.dispatchLocked(now)
		return
	}
	if line[0] == ':' {
		return // a comment
	}
	field, value, found := bytes.Cut(line, []byte(":"))
	valueSize := 0
	if found {
		valueSize = size - len(field) - 1
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
			valueSize--
		}
	}
	switch string(field) {
	case "data":
		p.hasData = true
		p.dataSize += valueSize + 1
		room := p.max - len(p.data)
		if len(value) > room || valueSize > len(value) {
			p.truncated = true
		}
		p.data = append(p.data, value[:min(len(value), max(0, room))]...)
		if len(p.data) < p.max {
			p.data = append(p.data, '\n')
		}
	case "event":
		p.event = string(value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.id = string(value)
		}
	}
}

func (p *sseParser) dispatchLocked(now time.Time) {
	if p.hasData || p.event != "" || p.id != "" {
		data := bytes.TrimSuffix(p.data, []byte("\n"))
		e := SSEEvent{Time: now, ID: p.id, Event: p.event, Data: validPrefix(data), Size: max(0, p.dataSize-1), Truncated: p.truncated}
		p.x.s.addSSELocked(p.x, e)
	}
	p.id, p.event, p.data, p.dataSize, p.hasData, p.truncated = "", "", p.data[:0], 0, false, false
}

func (s *Store) addSSELocked(x *Exchange, e SSEEvent) {
	n := int64(len(e.ID) + len(e.Event) + len(e.Data))
	if !x.retained || x.r.itemBytes+n > s.o.BodyLimit || !s.chargeLocked(x, itemOverhead+n) {
		x.r.SSEDropped++
		return
	}
	x.r.itemBytes += n
	x.r.SSE = append(x.r.SSE, e)
	s.changedLocked(x)
}
