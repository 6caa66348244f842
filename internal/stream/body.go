package stream

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// bufPool holds the buffers that bodies and messages are read into, one
// frame's worth each.
var bufPool = sync.Pool{New: func() any { b := make([]byte, messages.MaxData); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// BodyOptions tune [SendBody]. The zero value sends an unbounded body of
// unknown length, ended with End.
type BodyOptions struct {
	// Length is the body's size when known in advance; 0 or less means
	// unknown. The frame that completes a known length carries End, which
	// saves a frame, and a reader that ends short of it is an error.
	Length int64
	// Limit caps the body: more than Limit bytes fail with
	// limiter.ErrTooLarge before the byte past it is sent. 0 means no cap.
	Limit int64
	// Trailer, when set, is called at the end of the body; fields it
	// returns end the body as a Trailer frame.
	Trailer func() messages.Header
	// BeforeRead, when set, runs before each read of r (the proxy sets a
	// read deadline there).
	BeforeRead func()
	// AfterRead, when set, runs after each read of r that returned bytes.
	AfterRead func(n int)
}

// SendBody sends what r yields as the stream's body: Data frames of at most
// messages.MaxData bytes, each within the peer's credit, then the end. It
// reads from r only while it has credit, so a peer that consumes nothing
// stops the reading. It returns the bytes sent and nil once the end is
// sent; on any error the caller resets the stream.
func SendBody(ctx context.Context, s *Stream, r io.Reader, o BodyOptions) (int64, error) {
	buf := getBuf()
	defer putBuf(buf)
	var sent int64
	for {
		if o.Length > 0 && sent == o.Length {
			// A known length is complete: the reader has nothing more that
			// it could rightly give.
			return sent, s.endBody(o.Trailer)
		}
		n, err := s.Reserve(ctx, messages.MaxData)
		if err != nil {
			return sent, err
		}
		if o.Length > 0 {
			n = int(min(int64(n), o.Length-sent))
		}
		if o.BeforeRead != nil {
			o.BeforeRead()
		}
		m, rerr := r.Read((*buf)[:n])
		s.Unreserve(n - m)
		if m > 0 {
			if o.AfterRead != nil {
				o.AfterRead(m)
			}
			if o.Limit > 0 && sent+int64(m) > o.Limit {
				return sent, limiter.ErrTooLarge
			}
			sent += int64(m)
			short := rerr == io.EOF && o.Length > 0 && sent < o.Length
			last := !short && (rerr == io.EOF || (o.Length > 0 && sent == o.Length))
			if last && o.Trailer == nil {
				return sent, s.SendData(&messages.Data{ID: s.id, End: true, Data: (*buf)[:m]}, m)
			}
			if err := s.SendData(&messages.Data{ID: s.id, Data: (*buf)[:m]}, m); err != nil {
				return sent, err
			}
			if last {
				return sent, s.endBody(o.Trailer)
			}
		}
		switch {
		case rerr == io.EOF:
			if o.Length > 0 && sent < o.Length {
				return sent, io.ErrUnexpectedEOF
			}
			return sent, s.endBody(o.Trailer)
		case rerr != nil:
			return sent, rerr
		}
	}
}

// endBody ends the direction: a Trailer with the fields trailer gives, or
// an empty Data with End.
func (s *Stream) endBody(trailer func() messages.Header) error {
	if trailer != nil {
		if h := trailer(); len(h) > 0 {
			return s.SendData(&messages.Trailer{ID: s.id, Header: h}, 0)
		}
	}
	return s.SendData(&messages.Data{ID: s.id, End: true}, 0)
}

// End ends this side's direction of s with no more data.
func (s *Stream) End() error { return s.endBody(nil) }

// ErrIncomplete is returned by a BodyReader whose stream was reset before
// the body's end.
var ErrIncomplete = errors.New("stream: body incomplete")

// BodyReader reads a stream's incoming body: the Data frames the peer
// sends, returning credit as the bytes are read. At the end it gives
// io.EOF; a Trailer's fields go to onTrailer first. A reset gives
// ErrIncomplete wrapped around the reset.
type BodyReader struct {
	s    *Stream
	ctx  context.Context
	cur  []byte
	held []byte // the buffer cur is in, given back once read
	// OnTrailer, when set, receives the Trailer's fields before io.EOF.
	OnTrailer func(messages.Header)
	// OnFirstRead, when set, runs before the first read: the client grants
	// the first credit of an Expect: 100-continue body there.
	OnFirstRead func()
	eof         bool
}

// NewBodyReader returns a reader of s's incoming body that gives up when
// ctx ends.
func NewBodyReader(ctx context.Context, s *Stream) *BodyReader {
	return &BodyReader{s: s, ctx: ctx}
}

// Read implements io.Reader.
func (b *BodyReader) Read(p []byte) (int, error) {
	if f := b.OnFirstRead; f != nil {
		b.OnFirstRead = nil
		f()
	}
	for len(b.cur) == 0 {
		if b.held != nil {
			Release(b.held)
			b.held = nil
		}
		if b.eof {
			return 0, io.EOF
		}
		m, err := b.s.Next(b.ctx)
		if err == io.EOF {
			b.eof = true
			return 0, io.EOF
		}
		if err != nil {
			return 0, errors.Join(ErrIncomplete, err)
		}
		switch m := m.(type) {
		case *messages.Data:
			b.cur, b.held = m.Data, m.Data
			b.eof = m.End
		case *messages.Trailer:
			if b.OnTrailer != nil {
				b.OnTrailer(m.Header)
			}
			b.eof = true
		}
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	b.s.Consumed(n)
	return n, nil
}

// Close implements io.Closer. It does not reset the stream: whoever owns
// the stream decides what a body left unread means.
func (b *BodyReader) Close() error { return nil }
