package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/internal/queue"
	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/internal/wsclose"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// Each stream's queue is bounded in messages and in bytes. The byte bound
// is what matters: a burst of small messages for a healthy visitor (one
// whose pump was not scheduled for a moment) fits easily, while a stalled
// visitor pins at most streamQueueBytes, or one message when the queue is
// empty. A stream that overflows its queue fails alone.
const (
	streamQueue      = 4096
	streamQueueBytes = 4 << 20
)

// wsStream receives the frames from the client for one public WebSocket.
type wsStream struct {
	q *queue.Queue[[]byte]
	// overflowed ends when the queue overflows. The stream has then lost a
	// message and must fail at once: a write to the visitor in progress is
	// abandoned rather than waited out.
	overflowed context.Context
	overflow   context.CancelFunc
}

func newWSStream() *wsStream {
	s := &wsStream{q: queue.New[[]byte](streamQueue, streamQueueBytes)}
	s.overflowed, s.overflow = context.WithCancel(context.Background())
	return s
}

func (s *wsStream) deliver(frame []byte) {
	if !s.q.Push(frame, int64(len(frame))) {
		s.overflow()
	}
}

func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// handshakeHeaders are the upgrade handshake's own headers; each leg of the
// tunnel negotiates its own.
var handshakeHeaders = []string{
	"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions",
	"Sec-Websocket-Protocol", "Sec-Websocket-Accept",
}

// serveWebSocket tunnels a public WebSocket. The public upgrade completes
// only after the client reports that the local service accepted it, with
// the subprotocol the service chose.
func (p *Proxy) serveWebSocket(w http.ResponseWriter, r *http.Request, label string) {
	holder, status := p.lookup(r.Context(), label)
	if status != 0 {
		publicError(w, status)
		return
	}
	h := p.outboundHeader(r)
	for _, k := range handshakeHeaders {
		delete(h, k)
	}
	req := &messages.WSRequest{
		ID:           messages.NewID(),
		URI:          requestURI(r),
		Host:         r.Host,
		Header:       h,
		Subprotocols: subprotocols(r.Header),
	}
	st := newWSStream()
	p.addWaiter(req.ID, st)
	defer p.removeWaiter(req.ID)
	if status := p.publishRequest(r.Context(), label, holder, req); status != 0 {
		publicError(w, status)
		return
	}
	timer := time.NewTimer(p.cfg.Timeout)
	defer timer.Stop()
	var frame []byte
	select {
	case <-st.q.Ready():
		frame, _ = st.q.Pop() // the first frame is the only one until the upgrade
	case <-timer.C:
		p.cancelExchange(label, holder, req.ID)
		publicError(w, http.StatusGatewayTimeout)
		return
	case <-r.Context().Done():
		p.cancelExchange(label, holder, req.ID)
		return
	}
	m, err := messages.Decode(frame)
	if err != nil {
		publicError(w, http.StatusBadGateway)
		return
	}
	var resp *messages.WSResponse
	switch m := m.(type) {
	case *messages.Error:
		if errorStatus(m.Code) == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		publicError(w, errorStatus(m.Code))
		return
	case *messages.WSResponse:
		resp = m
	default:
		publicError(w, http.StatusBadGateway)
		return
	}
	for _, k := range handshakeHeaders {
		delete(resp.Header, k)
	}
	if resp.Status != http.StatusSwitchingProtocols {
		// The local service refused: pass its answer on, with no upgrade.
		hdr := w.Header()
		copyResponseHeader(hdr, resp.Header, normalizeHost(r.Host), p.cfg.Domain)
		hdr.Del("Content-Length")
		w.WriteHeader(int(resp.Status))
		w.Write(resp.Body)
		return
	}
	copyResponseHeader(w.Header(), resp.Header, normalizeHost(r.Host), p.cfg.Domain)
	w.Header().Del("Content-Length")
	opts := &websocket.AcceptOptions{
		// The local service saw the visitor's Origin and accepted it; the
		// origin decision is the service's to make.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	}
	if resp.Subprotocol != "" {
		opts.Subprotocols = []string{resp.Subprotocol}
	}
	if !p.track() {
		p.sendStream(label, holder, &messages.WSTeardown{ID: req.ID, Code: uint16(websocket.StatusGoingAway), Reason: "proxy shutting down"})
		publicError(w, http.StatusServiceUnavailable)
		return
	}
	defer p.wg.Done()
	conn, err := websocket.Accept(w, r, opts)
	if err != nil {
		p.sendStream(label, holder, &messages.WSTeardown{ID: req.ID, Code: uint16(websocket.StatusInternalError), Reason: "public upgrade failed"})
		return
	}
	p.pumpStream(conn, st, label, holder, req.ID)
}

func subprotocols(h http.Header) []string {
	var out []string
	for _, v := range h["Sec-Websocket-Protocol"] {
		for _, s := range strings.Split(v, ",") {
			if s = textproto.TrimString(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// sendStream publishes a frame of stream id towards the client.
func (p *Proxy) sendStream(label, holder string, m messages.Message) error {
	ctx, cancel := context.WithTimeout(p.ctx, writeTimeout)
	defer cancel()
	payload := messages.AppendEnvelope(nil, p.instance, holder, m)
	n, err := p.publish(ctx, bus.HostTopic(label), payload)
	if err == nil && n == 0 {
		err = errors.New("no receiver")
	}
	return err
}

// errTunnelGone ends a visitor's reads when the client cannot be reached.
var errTunnelGone = errors.New("tunnel unreachable")

// pumpStream carries one public WebSocket until either end closes it.
// A second goroutine reads the visitor's messages and publishes them to the
// client; the client's arrive on st and are written here. Only this
// goroutine tells the client how the stream ended, so that a socket this
// side closed (a stalled write) is not reported as the visitor's doing,
// and a visitor's close is not reported as a stall.
func (p *Proxy) pumpStream(conn *websocket.Conn, st *wsStream, label, holder string, id messages.ID) {
	conn.SetReadLimit(int64(p.cfg.MaxBody))
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()

	readErr := make(chan error, 1)
	go func() {
		for {
			typ, buf, err := wsbuf.Read(ctx, conn)
			if err != nil {
				readErr <- err
				return
			}
			op := messages.OpBinary
			if typ == websocket.MessageText {
				op = messages.OpText
			}
			// sendStream encodes a copy, so the buffer can be reused.
			err = p.sendStream(label, holder, &messages.WSMessage{ID: id, Opcode: op, Data: buf.Bytes()})
			buf.Release()
			if err != nil {
				readErr <- errTunnelGone
				return
			}
		}
	}()

	teardown := func(code websocket.StatusCode, reason string) {
		p.sendStream(label, holder, &messages.WSTeardown{ID: id, Code: uint16(code), Reason: reason})
	}
	// visitorDone reports why the reader stopped.
	visitorDone := func(err error) {
		if errors.Is(err, errTunnelGone) {
			conn.Close(websocket.StatusBadGateway, "tunnel offline")
			return
		}
		teardown(wsclose.FromReadError(err, websocket.StatusGoingAway, "visitor went away"))
		conn.CloseNow()
	}
	// end closes the public socket, telling the client first when it does
	// not already know, and waits for the reader.
	end := func(code websocket.StatusCode, reason string, tellClient bool) {
		if tellClient {
			teardown(code, reason)
		}
		conn.Close(code, reason)
		<-readErr
	}
	for {
		select {
		case err := <-readErr:
			visitorDone(err)
			return
		case <-st.overflowed.Done():
			p.metrics.drop(dropStreamQueue)
			end(websocket.StatusPolicyViolation, "visitor reads too slowly", true)
			return
		case <-p.ctx.Done():
			end(websocket.StatusGoingAway, "proxy shutting down", true)
			return
		case <-st.q.Ready():
		}
		for {
			frame, ok := st.q.Pop()
			if !ok {
				break
			}
			m, err := messages.Decode(frame)
			if err != nil {
				end(websocket.StatusInternalError, "tunnel error", true)
				return
			}
			switch m := m.(type) {
			case *messages.WSMessage:
				typ := websocket.MessageBinary
				if m.Opcode == messages.OpText {
					typ = websocket.MessageText
				}
				wctx, wcancel := context.WithTimeout(ctx, p.cfg.StreamWriteTimeout)
				stop := context.AfterFunc(st.overflowed, wcancel)
				err := conn.Write(wctx, typ, m.Data)
				stalled := errors.Is(wctx.Err(), context.DeadlineExceeded) || st.overflowed.Err() != nil
				stop()
				wcancel()
				switch {
				case err == nil:
				case stalled:
					// A visitor that accepts nothing for the write timeout,
					// or lets its queue overflow meanwhile, fails its own
					// stream only.
					end(websocket.StatusPolicyViolation, "visitor reads too slowly", true)
					return
				case p.ctx.Err() != nil:
					end(websocket.StatusGoingAway, "proxy shutting down", true)
					return
				default:
					// The socket closed under the write: the reader knows
					// why.
					conn.CloseNow()
					visitorDone(<-readErr)
					return
				}
			case *messages.WSTeardown:
				end(wsclose.Sendable(m.Code), m.Reason, false)
				return
			case *messages.Error:
				// The client dropped: 1014, bad gateway.
				end(websocket.StatusBadGateway, "tunnel offline", false)
				return
			}
		}
	}
}
