package proxy

import (
	"errors"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

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

// serveWebSocket tunnels a public WebSocket. The public upgrade completes
// only after the client reports that the local service accepted it, with
// the subprotocol the service chose.
// It sets *id to the ID of the stream it opened to the client, if any.
func (p *Proxy) serveWebSocket(w http.ResponseWriter, r *http.Request, label string, id *messages.ID) {
	h := p.outboundHeader(r)
	for _, k := range messages.WSHandshakeHeaders {
		delete(h, k)
	}
	req := &messages.WSRequest{
		ID:           messages.NewID(),
		Window:       messages.InitialWindow,
		URI:          requestURI(r),
		Host:         r.Host,
		Header:       h,
		Subprotocols: subprotocols(r.Header),
	}
	frame := messages.Encode(req)
	if len(frame) > messages.MaxHead {
		publicError(w, http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	rt, status := p.lookup(r.Context(), label)
	if status != 0 {
		publicError(w, status)
		return
	}
	rt, ok := p.member(rt)
	if !ok {
		publicError(w, http.StatusBadGateway)
		return
	}
	if rt.policy.admit(p, w, r) != 0 {
		return
	}
	holder := rt.holder
	*id = req.ID
	vs := p.openStream(req.ID, label, holder, stream.Config{RecvWindow: int(req.Window), SendCredit: messages.InitialWindow})
	defer p.closeStream(vs)
	if status := p.publishRequest(r.Context(), holder, frame); status != 0 {
		publicError(w, status)
		return
	}
	m, err := vs.NextWithin(r.Context(), p.cfg.Timeout)
	if err != nil {
		var reset *stream.ResetError
		switch {
		case r.Context().Err() != nil:
			vs.Reset(messages.CodeCanceled, "visitor went away")
		case errors.Is(err, stream.ErrIdle):
			vs.Reset(messages.CodeCanceled, "timed out")
			publicError(w, http.StatusGatewayTimeout)
		case errors.As(err, &reset):
			if errorStatus(reset.Code) == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			publicError(w, errorStatus(reset.Code))
		default:
			publicError(w, http.StatusBadGateway)
		}
		return
	}
	resp, ok := m.(*messages.WSResponse)
	if !ok {
		vs.Reset(messages.CodeBadResponse, "expected a handshake answer")
		publicError(w, http.StatusBadGateway)
		return
	}
	for _, k := range messages.WSHandshakeHeaders {
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
		vs.SendData(&messages.WSTeardown{ID: req.ID, Code: uint16(websocket.StatusGoingAway), Reason: "proxy shutting down"}, 0)
		publicError(w, http.StatusServiceUnavailable)
		return
	}
	defer p.wg.Done()
	conn, err := websocket.Accept(w, r, opts)
	if err != nil {
		vs.SendData(&messages.WSTeardown{ID: req.ID, Code: uint16(websocket.StatusInternalError), Reason: "public upgrade failed"}, 0)
		return
	}
	stream.PumpWebSocket(p.ctx, conn, vs.Stream, stream.WSOptions{
		MaxMessage:    int64(p.cfg.MaxBody),
		WriteTimeout:  p.cfg.StreamWriteTimeout,
		GoneCode:      websocket.StatusGoingAway,
		GoneReason:    "visitor went away",
		TooSlow:       "visitor reads too slowly",
		ClosingCode:   websocket.StatusGoingAway,
		ClosingReason: "proxy shutting down",
	})
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
