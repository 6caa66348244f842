package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/queue"
	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/internal/wsclose"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// Each stream's queue is bounded in messages and in bytes. The byte bound
// is what matters: a burst of small messages for a healthy local service
// fits easily, while a stalled one pins at most streamQueueBytes, or one
// message when the queue is empty. A local service that reads too slowly
// overflows the queue and fails only its stream.
const (
	streamQueue      = 4096
	streamQueueBytes = 4 << 20
)

// localStream receives the proxy's frames for one WebSocket stream.
type localStream struct {
	q *queue.Queue[messages.Message]
	// overflowed ends when the queue overflows. The stream has then lost a
	// message and must fail at once: a write to the local service in
	// progress is abandoned rather than waited out.
	overflowed context.Context
	overflow   context.CancelFunc
}

func newLocalStream() *localStream {
	st := &localStream{q: queue.New[messages.Message](streamQueue, streamQueueBytes)}
	st.overflowed, st.overflow = context.WithCancel(context.Background())
	return st
}

func (st *localStream) deliver(m messages.Message) {
	if !st.q.Push(m, msgSize(m)) {
		st.overflow()
	}
}

func msgSize(m messages.Message) int64 {
	if m, ok := m.(*messages.WSMessage); ok {
		return int64(len(m.Data))
	}
	return 0
}

// handshakeHeaders belong to one leg's upgrade handshake.
var handshakeHeaders = []string{
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions",
	"Sec-Websocket-Protocol", "Sec-Websocket-Accept",
}

// hostTransport sets the Host of every request, which a websocket dial
// cannot do through headers.
type hostTransport struct {
	rt   http.RoundTripper
	host string
}

func (t hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = t.host
	return t.rt.RoundTrip(r)
}

// serveStream opens a WebSocket to the local service, answers the proxy
// with a WSResponse, and carries messages until either end closes.
func (s *session) serveStream(ctx context.Context, m *messages.WSRequest, st *localStream) {
	start := time.Now()
	status := s.dialStream(ctx, m, st)
	s.log.Info("websocket", "path", pathOf(m.URI), "status", status, "duration", time.Since(start).Round(time.Millisecond))
}

func (s *session) dialStream(ctx context.Context, m *messages.WSRequest, st *localStream) int {
	u, err := joinURL(s.r.target, m.URI)
	if err != nil {
		s.send(&messages.Error{ID: m.ID, Code: messages.CodeBadResponse})
		return 502
	}
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	h := m.Header
	messages.RemoveHopByHop(h)
	for _, k := range handshakeHeaders {
		delete(h, k)
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Duration(s.reg.TimeoutMillis)*time.Millisecond)
	defer dcancel()
	conn, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: hostTransport{rt: s.r.transport, host: s.hostHeader(m.Host)}},
		HTTPHeader:      http.Header(h),
		Subprotocols:    m.Subprotocols,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return 499
		case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
			// The local service refused the upgrade: pass its answer on.
			body, _ := io.ReadAll(io.LimitReader(resp.Body, min(1024, int64(s.reg.MaxBody))))
			rh := messages.Header(resp.Header.Clone())
			messages.RemoveHopByHop(rh)
			s.send(&messages.WSResponse{ID: m.ID, Status: uint16(resp.StatusCode), Header: rh, Body: body})
			return resp.StatusCode
		case dctx.Err() != nil:
			s.send(&messages.Error{ID: m.ID, Code: messages.CodeTimeout})
			return 504
		default:
			s.log.Warn("local websocket unreachable", "err", err)
			s.send(&messages.Error{ID: m.ID, Code: messages.CodeUpstream})
			return 502
		}
	}
	rh := messages.Header(resp.Header.Clone())
	messages.RemoveHopByHop(rh)
	for _, k := range handshakeHeaders {
		delete(rh, k)
	}
	if !s.send(&messages.WSResponse{ID: m.ID, Status: http.StatusSwitchingProtocols, Subprotocol: conn.Subprotocol(), Header: rh}) {
		conn.CloseNow()
		return 499
	}
	s.pump(ctx, conn, st, m.ID)
	return http.StatusSwitchingProtocols
}

// pump carries one stream: a second goroutine reads the local service's
// messages and sends them to the proxy; the proxy's arrive on st and are
// written here. Only this goroutine tells the proxy how the stream ended,
// so that a socket this side closed (a stalled write) is not reported as
// the local service's doing, and the local service's close is not
// reported as a stall.
func (s *session) pump(ctx context.Context, conn *websocket.Conn, st *localStream, id messages.ID) {
	conn.SetReadLimit(int64(s.reg.MaxBody))
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	readErr := make(chan error, 1)
	go func() {
		for {
			typ, buf, err := wsbuf.Read(rctx, conn)
			if err != nil {
				readErr <- err
				return
			}
			op := messages.OpBinary
			if typ == websocket.MessageText {
				op = messages.OpText
			}
			// send encodes a copy, so the buffer can be reused.
			sent := s.send(&messages.WSMessage{ID: id, Opcode: op, Data: buf.Bytes()})
			buf.Release()
			if !sent {
				readErr <- ctx.Err() // the session is over
				return
			}
		}
	}()
	teardown := func(code websocket.StatusCode, reason string) {
		s.send(&messages.WSTeardown{ID: id, Code: uint16(code), Reason: reason})
	}
	// localDone reports why the reader stopped, unless the tunnel is
	// closing or the proxy dropped the stream.
	localDone := func(err error) {
		if ctx.Err() == nil {
			teardown(wsclose.FromReadError(err, websocket.StatusBadGateway, "local service went away"))
		}
		conn.CloseNow()
	}
	finish := func(code websocket.StatusCode, reason string) {
		conn.Close(code, reason)
		<-readErr
	}
	for {
		select {
		case err := <-readErr:
			localDone(err)
			return
		case <-st.overflowed.Done():
			teardown(websocket.StatusPolicyViolation, "local service reads too slowly")
			finish(websocket.StatusPolicyViolation, "reading too slowly")
			return
		case <-ctx.Done():
			// The tunnel is closing or the proxy dropped the stream.
			finish(websocket.StatusGoingAway, "tunnel closed")
			return
		case <-st.q.Ready():
		}
		for {
			m, ok := st.q.Pop()
			if !ok {
				break
			}
			switch m := m.(type) {
			case *messages.WSMessage:
				typ := websocket.MessageBinary
				if m.Opcode == messages.OpText {
					typ = websocket.MessageText
				}
				wctx, wcancel := context.WithTimeout(ctx, writeTimeout)
				stop := context.AfterFunc(st.overflowed, wcancel)
				err := conn.Write(wctx, typ, m.Data)
				stalled := errors.Is(wctx.Err(), context.DeadlineExceeded) || st.overflowed.Err() != nil
				stop()
				wcancel()
				switch {
				case err == nil:
				case stalled:
					teardown(websocket.StatusPolicyViolation, "local service reads too slowly")
					finish(websocket.StatusPolicyViolation, "reading too slowly")
					return
				default:
					// The socket closed under the write (or the tunnel is
					// closing): the reader knows why.
					conn.CloseNow()
					localDone(<-readErr)
					return
				}
			case *messages.WSTeardown:
				finish(wsclose.Sendable(m.Code), m.Reason)
				return
			}
		}
	}
}
