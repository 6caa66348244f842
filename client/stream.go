package client

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// hostTransport sets the Host of every request, which a websocket dial
// cannot do through headers, and shows the answer to the inspector.
type hostTransport struct {
	rt   http.RoundTripper
	host string
	x    *inspect.Exchange
}

func (t hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = t.host
	resp, err := t.rt.RoundTrip(r)
	if err == nil {
		t.x.WebSocketResponse(resp)
	}
	return resp, err
}

// serveStream opens a WebSocket to the local service, answers the proxy
// with a WSResponse, and carries messages until either end closes.
func (s *session) serveStream(ctx context.Context, m *messages.WSRequest, st *stream.Stream) {
	start := time.Now()
	x := s.r.c.Inspect.BeginWebSocket(m.ID, m.URI, m.Host, m.Header)
	done, status := s.admitStream(m, st) // webhook rules, in forward.go
	if done != nil {
		status = s.dialStream(ctx, m, st, x)
		done(status)
	}
	x.End(status, false)
	s.log.Info("websocket", "req", m.ID.String(), "path", pathOf(m.URI), "status", status, "duration", time.Since(start).Round(time.Millisecond))
}

func (s *session) dialStream(ctx context.Context, m *messages.WSRequest, st *stream.Stream, x *inspect.Exchange) int {
	u, err := joinURL(s.r.target, m.URI)
	if err != nil {
		st.Reset(messages.CodeBadResponse, "")
		return 502
	}
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	h := m.Header
	messages.RemoveHopByHop(h)
	for _, k := range messages.WSHandshakeHeaders {
		delete(h, k)
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Duration(s.reg.TimeoutMillis)*time.Millisecond)
	defer dcancel()
	conn, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: hostTransport{rt: s.r.wsTransport, host: s.r.hostHeader(m.Host), x: x}},
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
			if !messages.ValidResponseStatus(uint16(min(resp.StatusCode, 65535))) {
				st.Reset(messages.CodeBadResponse, "")
				return 502
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			rh := messages.Header(resp.Header.Clone())
			messages.RemoveHopByHop(rh)
			st.Send(&messages.WSResponse{ID: m.ID, Status: uint16(resp.StatusCode), Header: rh, Body: body})
			return resp.StatusCode
		case dctx.Err() != nil:
			st.Reset(messages.CodeTimeout, "")
			return 504
		default:
			s.log.Warn("local websocket unreachable", "err", err)
			st.Reset(messages.CodeUpstream, "")
			return 502
		}
	}
	rh := messages.Header(resp.Header.Clone())
	messages.RemoveHopByHop(rh)
	for _, k := range messages.WSHandshakeHeaders {
		delete(rh, k)
	}
	if st.Send(&messages.WSResponse{ID: m.ID, Status: http.StatusSwitchingProtocols, Subprotocol: conn.Subprotocol(), Header: rh}) != nil {
		conn.CloseNow()
		return 499
	}
	stream.PumpWebSocket(ctx, conn, st, stream.WSOptions{
		MaxMessage:    int64(s.reg.MaxBody),
		WriteTimeout:  writeTimeout,
		GoneCode:      websocket.StatusBadGateway,
		GoneReason:    "local service went away",
		TooSlow:       "local service reads too slowly",
		ClosingCode:   websocket.StatusGoingAway,
		ClosingReason: "tunnel closed",
	})
	return http.StatusSwitchingProtocols
}
