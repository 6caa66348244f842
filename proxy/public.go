package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// httpWaiter holds the single reply to a public HTTP request.
type httpWaiter chan []byte

func (w httpWaiter) deliver(frame []byte) {
	select {
	case w <- frame:
	default: // a duplicate; the first answer wins
	}
}

// serveTunnel forwards a public request for a tunnel hostname to its
// client and writes the answer. Every request ends in exactly one answer:
// the client's, or the proxy's own 4xx/5xx.
func (p *Proxy) serveTunnel(w http.ResponseWriter, r *http.Request, host, label string) {
	if isWebSocketUpgrade(r) {
		if p.metrics == nil {
			p.serveWebSocket(w, r, label)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, m: p.metrics}
		p.serveWebSocket(rec, r, label)
		rec.done()
		return
	}
	start := time.Now()
	status := p.forwardHTTP(w, r, label)
	d := time.Since(start)
	p.metrics.request(status, d)
	p.log.Debug("request", "host", label, "method", r.Method, "path", r.URL.Path, "status", status, "duration", d)
}

func (p *Proxy) forwardHTTP(w http.ResponseWriter, r *http.Request, label string) int {
	max := int64(p.cfg.MaxBody)
	if r.ContentLength > max {
		return publicError(w, http.StatusRequestEntityTooLarge)
	}
	body, err := limiter.ReadAll(r.Body, max, r.ContentLength)
	if errors.Is(err, limiter.ErrTooLarge) {
		return publicError(w, http.StatusRequestEntityTooLarge)
	}
	if err != nil {
		return publicError(w, http.StatusBadRequest)
	}
	holder, status := p.lookup(r.Context(), label)
	if status != 0 {
		return publicError(w, status)
	}
	req := &messages.HTTPRequest{
		ID:     messages.NewID(),
		Method: r.Method,
		URI:    requestURI(r),
		Host:   r.Host,
		Header: p.outboundHeader(r),
		Body:   body,
	}
	ch := make(httpWaiter, 1)
	p.addWaiter(req.ID, ch)
	defer p.removeWaiter(req.ID)
	if status := p.publishRequest(r.Context(), label, holder, req); status != 0 {
		return publicError(w, status)
	}
	timer := time.NewTimer(p.cfg.Timeout)
	defer timer.Stop()
	select {
	case frame := <-ch:
		return p.writeReply(w, r, frame)
	case <-timer.C:
		p.cancelExchange(label, holder, req.ID)
		return publicError(w, http.StatusGatewayTimeout)
	case <-r.Context().Done():
		p.cancelExchange(label, holder, req.ID)
		return 499 // the caller went away; nothing to write
	}
}

// lookup finds the connection holding label, or the status to answer.
func (p *Proxy) lookup(ctx context.Context, label string) (string, int) {
	ctx, cancel := context.WithTimeout(ctx, busOpTimeout)
	defer cancel()
	holder, err := p.reg.Lookup(ctx, label)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		return "", http.StatusBadGateway // the tunnel is offline
	case err != nil:
		p.log.Warn("registry lookup", "err", err)
		return "", http.StatusServiceUnavailable
	}
	return holder, 0
}

// publishRequest sends an HTTPRequest or WSRequest to the instance holding
// label, and returns a status to answer if nobody could receive it.
func (p *Proxy) publishRequest(ctx context.Context, label, holder string, m messages.Message) int {
	payload := messages.AppendEnvelope(nil, p.instance, holder, m)
	ctx, cancel := context.WithTimeout(ctx, busOpTimeout)
	defer cancel()
	n, err := p.publish(ctx, bus.HostTopic(label), payload)
	switch {
	case err != nil:
		p.log.Warn("bus publish", "err", err)
		return http.StatusServiceUnavailable
	case n == 0:
		// No instance holds the hostname any more: answer now rather than
		// wait for the timeout.
		return http.StatusBadGateway
	}
	return 0
}

// cancelExchange tells the client that the public side gave up on id.
func (p *Proxy) cancelExchange(label, holder string, id messages.ID) {
	payload := messages.AppendEnvelope(nil, p.instance, holder, &messages.Error{ID: id, Code: messages.CodeCanceled})
	ctx, cancel := context.WithTimeout(p.ctx, writeTimeout)
	defer cancel()
	p.publish(ctx, bus.HostTopic(label), payload)
}

// writeReply writes the client's answer, or the status its error maps to.
func (p *Proxy) writeReply(w http.ResponseWriter, r *http.Request, frame []byte) int {
	m, err := messages.Decode(frame)
	if err != nil {
		return publicError(w, http.StatusBadGateway)
	}
	switch m := m.(type) {
	case *messages.HTTPResponse:
		h := w.Header()
		copyResponseHeader(h, m.Header, normalizeHost(r.Host), p.cfg.Domain)
		if r.Method != http.MethodHead || h.Get("Content-Length") == "" {
			h.Set("Content-Length", strconv.Itoa(len(m.Body)))
		}
		w.WriteHeader(int(m.Status))
		if r.Method != http.MethodHead {
			w.Write(m.Body)
		}
		return int(m.Status)
	case *messages.Error:
		status := errorStatus(m.Code)
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(int(max(1, m.RetryAfter))))
		}
		return publicError(w, status)
	}
	return publicError(w, http.StatusBadGateway)
}

// errorStatus maps an Error code to the public status.
func errorStatus(code messages.ErrorCode) int {
	switch code {
	case messages.CodeRateLimited:
		return http.StatusTooManyRequests
	case messages.CodeOverloaded:
		return http.StatusServiceUnavailable
	case messages.CodeTimeout:
		return http.StatusGatewayTimeout
	default:
		// Offline, dropped, too large, invalid or unreachable upstream:
		// the gateway could not get a usable answer.
		return http.StatusBadGateway
	}
}

// requestURI returns the request target to forward: path and query as
// received.
func requestURI(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") || r.RequestURI == "*" {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// outboundHeader copies the public request's headers for the client:
// hop-by-hop headers removed, and X-Forwarded-* set from what the proxy
// saw. Client-supplied forwarding headers are kept only from trusted peers.
func (p *Proxy) outboundHeader(r *http.Request) messages.Header {
	h := make(messages.Header, len(r.Header)+3)
	for k, vs := range r.Header {
		h[k] = vs
	}
	messages.RemoveHopByHop(h)
	peer := peerIP(r)
	trusted := p.trusted(peer)
	if !trusted {
		for _, k := range forwardingHeaders {
			delete(h, k)
		}
	}
	addr := peer.String()
	if !peer.IsValid() {
		addr = "unknown"
	}
	if prior := h["X-Forwarded-For"]; trusted && len(prior) > 0 {
		h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + addr}
	} else {
		h["X-Forwarded-For"] = []string{addr}
	}
	if len(h["X-Forwarded-Proto"]) == 0 {
		proto := "http"
		if r.TLS != nil {
			proto = "https"
		}
		h["X-Forwarded-Proto"] = []string{proto}
	}
	if len(h["X-Forwarded-Host"]) == 0 {
		h["X-Forwarded-Host"] = []string{r.Host}
	}
	return h
}

var forwardingHeaders = []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-Ip"}

func peerIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

func (p *Proxy) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, pfx := range p.cfg.TrustedProxies {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}
