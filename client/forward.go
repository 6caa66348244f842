package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// serveHTTP forwards one request to the local service and sends exactly
// one answer: an HTTPResponse, or an Error if none can be had.
func (s *session) serveHTTP(taskCtx context.Context, m *messages.HTTPRequest) {
	start := time.Now()
	timeout := time.Duration(s.reg.TimeoutMillis) * time.Millisecond
	ctx, cancel := context.WithTimeout(taskCtx, timeout)
	defer cancel()
	status, code := s.roundTrip(ctx, m)
	switch {
	case taskCtx.Err() != nil:
		// The proxy canceled the exchange, or the session ended: nobody
		// expects an answer.
		status = 499
	case code != 0:
		s.send(&messages.Error{ID: m.ID, Code: code})
	}
	s.log.Info("request", "method", m.Method, "path", pathOf(m.URI), "status", status, "duration", time.Since(start).Round(time.Microsecond))
}

// roundTrip returns the status sent, or an error code to send instead.
func (s *session) roundTrip(ctx context.Context, m *messages.HTTPRequest) (int, messages.ErrorCode) {
	req, err := s.localRequest(ctx, m.Method, m.URI, m.Host, m.Header, m.Body)
	if err != nil {
		s.log.Warn("bad request from proxy", "err", err)
		return 502, messages.CodeBadResponse
	}
	resp, err := s.r.transport.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return 504, messages.CodeTimeout
		}
		s.log.Warn("local service unreachable", "err", err)
		return 502, messages.CodeUpstream
	}
	defer resp.Body.Close()
	body, err := limiter.ReadAll(resp.Body, int64(s.reg.MaxBody), resp.ContentLength)
	switch {
	case errors.Is(err, limiter.ErrTooLarge):
		s.log.Warn("response body over the proxy's limit", "limit", limiter.Size(s.reg.MaxBody))
		return 502, messages.CodeTooLarge
	case err != nil && ctx.Err() != nil:
		return 504, messages.CodeTimeout
	case err != nil:
		return 502, messages.CodeUpstream
	}
	h := messages.Header(resp.Header)
	messages.RemoveHopByHop(h)
	if headerBytes(h) > maxHeaderBytes {
		// A frame past the proxy's read limit would end the whole
		// connection; fail only this exchange.
		s.log.Warn("response headers over the proxy's limit", "limit", limiter.Size(maxHeaderBytes))
		return 502, messages.CodeTooLarge
	}
	if !s.send(&messages.HTTPResponse{ID: m.ID, Status: uint16(resp.StatusCode), Header: h, Body: body}) {
		return 0, 0
	}
	return resp.StatusCode, 0
}

// localRequest builds the request to the local service.
func (s *session) localRequest(ctx context.Context, method, uri, host string, h messages.Header, body []byte) (*http.Request, error) {
	u, err := joinURL(s.r.target, uri)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	messages.RemoveHopByHop(h)
	req.Header = http.Header(h)
	req.Host = s.hostHeader(host)
	return req, nil
}

func (s *session) hostHeader(public string) string {
	switch hh := s.r.c.HostHeader; hh {
	case "":
		return public
	case "rewrite":
		return s.r.target.Host
	default:
		return hh
	}
}

// joinURL appends a request target to the local base URL.
func joinURL(base *url.URL, uri string) (*url.URL, error) {
	ref, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, err
	}
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + ref.Path
	// Join the escaped forms too, so that an escape in either part (%2F in
	// the target's prefix or in the request) survives. url.URL ignores
	// RawPath when it is not a valid encoding of Path.
	u.RawPath = strings.TrimSuffix(base.EscapedPath(), "/") + ref.EscapedPath()
	u.RawQuery = ref.RawQuery
	return &u, nil
}

func pathOf(uri string) string {
	p, _, _ := strings.Cut(uri, "?")
	return p
}

// maxHeaderBytes is the header block a frame may carry besides its body;
// see "Limits" in docs/PROTOCOL.md.
const maxHeaderBytes = 64 << 10

// headerBytes is the size of h as a header block on the wire.
func headerBytes(h messages.Header) int {
	n := 4
	for k, vs := range h {
		for _, v := range vs {
			n += 8 + len(k) + len(v)
		}
	}
	return n
}
