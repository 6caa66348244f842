package stream

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/wsclose"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// WSOptions tune [PumpWebSocket] for its side of the tunnel.
type WSOptions struct {
	// MaxMessage caps one message, in either direction; over it the
	// stream is closed with 1009 on both legs. 0 means no cap.
	MaxMessage int64
	// WriteTimeout bounds one write to conn: a peer of conn that accepts
	// nothing for this long fails the stream with 1008 and TooSlow. 0
	// means no bound.
	WriteTimeout time.Duration
	// Gone is told to the other leg when conn ends without a close frame.
	GoneCode   websocket.StatusCode
	GoneReason string
	// TooSlow is the reason given when conn's peer stops reading.
	TooSlow string
	// Closing is the close code and reason for conn when ctx ends.
	ClosingCode   websocket.StatusCode
	ClosingReason string
}

// errSendFailed ends a pump whose frames can no longer reach the peer.
var errSendFailed = errors.New("stream: tunnel unreachable")

// PumpWebSocket carries one open WebSocket between conn (the visitor's
// socket on the proxy, the local service's on the client) and s, until
// either leg closes it or ctx ends. Messages from conn go out as
// WSMessage fragments within the peer's credit; fragments from the peer are
// written to conn as they come, and their credit is returned once written.
// Exactly one side says how the stream ended: conn's close becomes a
// WSTeardown to the peer, the peer's WSTeardown closes conn, and a reset
// (the tunnel dropped) closes conn with 1014.
func PumpWebSocket(ctx context.Context, conn *websocket.Conn, s *Stream, o WSOptions) {
	readLimit := o.MaxMessage
	if readLimit == 0 {
		readLimit = -1
	}
	conn.SetReadLimit(readLimit)
	// Reads and writes of conn use a context that ends only once end has
	// closed conn: coder/websocket closes a conn whose read or write
	// context ends, which would lose the close frame when ctx ends.
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer rcancel()
	readErr := make(chan error, 1)
	go func() { readErr <- readMessages(rctx, conn, s) }()

	var once sync.Once
	// end closes conn with code and reason, telling the peer first when
	// it does not know yet, and waits for the reader.
	end := func(code websocket.StatusCode, reason string, tellPeer bool) {
		once.Do(func() {
			if tellPeer {
				s.SendData(&messages.WSTeardown{ID: s.id, Code: uint16(code), Reason: messages.CloseReason(reason)}, 0)
			}
			conn.Close(code, messages.CloseReason(reason))
			rcancel()
			<-readErr
		})
	}
	// connDone reports how conn's reads ended, unless the tunnel is the
	// reason.
	connDone := func(err error) {
		once.Do(func() {
			switch {
			case errors.Is(err, errSendFailed) || s.Err() != nil:
				conn.Close(websocket.StatusBadGateway, "tunnel offline")
			case ctx.Err() != nil:
				conn.Close(o.ClosingCode, o.ClosingReason)
			default:
				code, reason := wsclose.FromReadError(err, o.GoneCode, o.GoneReason)
				s.SendData(&messages.WSTeardown{ID: s.id, Code: uint16(code), Reason: messages.CloseReason(reason)}, 0)
				conn.CloseNow()
			}
		})
	}
	w := &wsWriter{conn: conn, timeout: o.WriteTimeout}
	defer w.stop()
	var msgBytes int64
	for {
		m, err := nextOrRead(ctx, s, readErr)
		if err != nil {
			var rerr readError
			switch {
			case errors.As(err, &rerr):
				connDone(rerr.err)
			case ctx.Err() != nil:
				end(o.ClosingCode, o.ClosingReason, true)
			default:
				// Reset: the tunnel dropped or the peer gave up.
				end(websocket.StatusBadGateway, "tunnel offline", false)
			}
			return
		}
		switch m := m.(type) {
		case *messages.WSMessage:
			msgBytes += int64(len(m.Data))
			if o.MaxMessage > 0 && msgBytes > o.MaxMessage {
				end(websocket.StatusMessageTooBig, "message too big", true)
				return
			}
			err := w.write(rctx, m)
			s.Consumed(len(m.Data))
			Release(m.Data)
			if m.Fin {
				msgBytes = 0
			}
			switch {
			case err == nil:
			case w.stalled.Load():
				end(websocket.StatusPolicyViolation, o.TooSlow, true)
				return
			case ctx.Err() != nil:
				end(o.ClosingCode, o.ClosingReason, true)
				return
			default:
				// conn closed under the write: its reader knows why.
				conn.CloseNow()
				connDone(<-readErr)
				return
			}
		case *messages.WSTeardown:
			end(wsclose.Sendable(m.Code), m.Reason, false)
			return
		}
	}
}

// readError carries the error that ended conn's reads through
// nextOrRead.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }

// nextOrRead waits for the peer's next frame or the end of conn's reads,
// whichever comes first.
func nextOrRead(ctx context.Context, s *Stream, readErr <-chan error) (messages.Message, error) {
	for {
		s.mu.Lock()
		queued := len(s.in) > 0 || s.err != nil || s.ended
		s.mu.Unlock()
		if queued {
			return s.Next(ctx)
		}
		select {
		case err := <-readErr:
			return nil, readError{err}
		case <-s.arrived:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// readMessages sends conn's messages to the peer, fragment by fragment,
// until conn's reads end; it returns why.
func readMessages(ctx context.Context, conn *websocket.Conn, s *Stream) error {
	buf := getBuf()
	defer putBuf(buf)
	for {
		typ, r, err := conn.Reader(ctx)
		if err != nil {
			return err
		}
		op := messages.OpBinary
		if typ == websocket.MessageText {
			op = messages.OpText
		}
		for {
			n, err := s.Reserve(ctx, messages.MaxData)
			if err != nil {
				return errSendFailed
			}
			m, rerr := io.ReadFull(r, (*buf)[:n])
			s.Unreserve(n - m)
			fin := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
			if rerr != nil && !fin {
				return rerr
			}
			if err := s.SendData(&messages.WSMessage{ID: s.id, Opcode: op, Fin: fin, Data: (*buf)[:m]}, m); err != nil {
				return errSendFailed
			}
			if fin {
				break
			}
		}
	}
}

// wsWriter writes fragments to conn: a message that arrives whole goes out
// with one Write, a fragmented one through a message writer kept open
// until its last fragment. Each write has its own timeout.
type wsWriter struct {
	conn    *websocket.Conn
	timeout time.Duration
	msg     io.WriteCloser
	cancel  context.CancelFunc
	timer   *time.Timer
	stalled atomic.Bool
}

func (w *wsWriter) write(ctx context.Context, m *messages.WSMessage) error {
	typ := websocket.MessageBinary
	if m.Opcode == messages.OpText {
		typ = websocket.MessageText
	}
	if w.msg == nil && m.Fin {
		wctx, cancel := w.bound(ctx)
		err := w.conn.Write(wctx, typ, m.Data)
		w.stalled.Store(errors.Is(wctx.Err(), context.DeadlineExceeded))
		cancel()
		return err
	}
	if w.msg == nil {
		// The message writer keeps the context it starts with, so the
		// timeout of each fragment's write is a timer that cancels it.
		mctx, cancel := context.WithCancel(ctx)
		msg, err := w.conn.Writer(mctx, typ)
		if err != nil {
			cancel()
			return err
		}
		w.msg, w.cancel = msg, cancel
	}
	if w.timeout > 0 {
		cancel := w.cancel
		w.timer = time.AfterFunc(w.timeout, func() { w.stalled.Store(true); cancel() })
	}
	_, err := w.msg.Write(m.Data)
	if err == nil && m.Fin {
		err = w.msg.Close()
		w.msg = nil
	}
	if w.timer != nil && !w.timer.Stop() {
		// The timer fired: the write was cancelled for it.
		err = errors.Join(err, context.DeadlineExceeded)
	}
	w.timer = nil
	if m.Fin || err != nil {
		w.stop()
	}
	return err
}

func (w *wsWriter) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if w.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, w.timeout)
}

func (w *wsWriter) stop() {
	if w.cancel != nil {
		w.cancel()
		w.cancel = nil
	}
	w.msg = nil
}
