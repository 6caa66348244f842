package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// streamQueue bounds the messages waiting for one local WebSocket; a local
// service that reads too slowly overflows it and fails only its stream.
const streamQueue = 64

// localStream receives the proxy's frames for one WebSocket stream.
type localStream struct {
	q        chan messages.Message
	overflow chan struct{}
	once     sync.Once
}

func newLocalStream() *localStream {
	return &localStream{q: make(chan messages.Message, streamQueue), overflow: make(chan struct{})}
}

func (st *localStream) deliver(m messages.Message) {
	select {
	case st.q <- m:
	default:
		st.once.Do(func() { close(st.overflow) })
	}
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

// pump carries one stream: the local service's messages are read here and
// sent to the proxy; the proxy's arrive on st and are written by this
// goroutine.
func (s *session) pump(ctx context.Context, conn *websocket.Conn, st *localStream, id messages.ID) {
	conn.SetReadLimit(int64(s.reg.MaxBody))
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	var told sync.Once // the proxy has been sent, or has sent, the teardown
	teardown := func(code websocket.StatusCode, reason string) {
		told.Do(func() { s.send(&messages.WSTeardown{ID: id, Code: uint16(code), Reason: reason}) })
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			typ, data, err := conn.Read(rctx)
			if err != nil {
				teardown(localClose(err))
				return
			}
			op := messages.OpBinary
			if typ == websocket.MessageText {
				op = messages.OpText
			}
			if !s.send(&messages.WSMessage{ID: id, Opcode: op, Data: data}) {
				return
			}
		}
	}()
	finish := func(code websocket.StatusCode, reason string) {
		conn.Close(code, reason)
		<-readDone
	}
	for {
		select {
		case <-readDone:
			return
		case <-st.overflow:
			teardown(websocket.StatusPolicyViolation, "local service reads too slowly")
			finish(websocket.StatusPolicyViolation, "reading too slowly")
			return
		case <-ctx.Done():
			// The tunnel is closing or the proxy dropped the stream.
			told.Do(func() {})
			finish(websocket.StatusGoingAway, "tunnel closed")
			return
		case m := <-st.q:
			switch m := m.(type) {
			case *messages.WSMessage:
				typ := websocket.MessageBinary
				if m.Opcode == messages.OpText {
					typ = websocket.MessageText
				}
				wctx, wcancel := context.WithTimeout(ctx, writeTimeout)
				err := conn.Write(wctx, typ, m.Data)
				wcancel()
				if err != nil {
					teardown(websocket.StatusPolicyViolation, "local service reads too slowly")
					finish(websocket.StatusPolicyViolation, "reading too slowly")
					return
				}
			case *messages.WSTeardown:
				told.Do(func() {})
				finish(wireCloseCode(m.Code), m.Reason)
				return
			}
		}
	}
}

// localClose turns the error that ended the local service's reads into the
// close code and reason for the visitor.
func localClose(err error) (websocket.StatusCode, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return websocket.StatusMessageTooBig, "message too big"
	}
	return websocket.StatusCode(1014), "local service went away"
}

// wireCloseCode maps a received close code to one that may be sent: 1005,
// 1006 and 1015 only describe what a peer observed.
func wireCloseCode(code uint16) websocket.StatusCode {
	switch c := websocket.StatusCode(code); {
	case c == websocket.StatusNoStatusRcvd || c == websocket.StatusAbnormalClosure || c == websocket.StatusTLSHandshake,
		code < 1000 || code >= 5000:
		return websocket.StatusGoingAway
	default:
		return c
	}
}
