package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/client/webhook"
	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// serveHTTP forwards one request to the local service and streams its
// answer: an HTTPResponse head and the body, or a reset (an Error) when no
// usable answer can be had.
func (s *session) serveHTTP(ctx context.Context, m *messages.HTTPRequest, st *stream.Stream) {
	start := time.Now()
	x := s.r.c.Inspect.BeginHTTP(m.ID, m.Method, m.URI, m.Host, m.Header)
	status, code := s.roundTrip(ctx, m, st, x)
	switch {
	case ctx.Err() != nil:
		// The proxy canceled the exchange, or the session ended: nobody
		// expects an answer.
		if status == 0 {
			status = 499
		}
	case code != 0:
		st.Reset(code, "")
	}
	x.End(status, code != 0)
	s.log.Info("request", "req", m.ID.String(), "method", m.Method, "path", pathOf(m.URI), "status", status, "duration", time.Since(start).Round(time.Microsecond))
}

// roundTrip returns the status sent, or an error code to reset the stream
// with instead.
func (s *session) roundTrip(ctx context.Context, m *messages.HTTPRequest, st *stream.Stream, x *inspect.Exchange) (int, messages.ErrorCode) {
	req, err := s.localRequest(ctx, m, st)
	if err != nil {
		s.log.Warn("bad request from proxy", "err", err)
		return 502, messages.CodeBadResponse
	}
	req.Body = x.RequestBody(req.Body, req.ContentLength)
	resp, err := s.localRoundTrip(req, m)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0
		}
		s.log.Warn("local service unreachable", "err", err)
		return 502, messages.CodeUpstream
	}
	defer resp.Body.Close()
	maxBody := int64(s.reg.MaxBody)
	if !messages.ValidResponseStatus(uint16(min(resp.StatusCode, 65535))) {
		s.log.Warn("local service answered with an invalid status", "status", resp.StatusCode)
		return 502, messages.CodeBadResponse
	}
	if maxBody > 0 && resp.ContentLength > maxBody {
		s.log.Warn("response body over the proxy's limit", "limit", limiter.Size(maxBody))
		return 502, messages.CodeTooLarge
	}
	h := messages.Header(resp.Header)
	messages.RemoveHopByHop(h)
	if resp.ContentLength >= 0 {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	hasBody := m.Method != http.MethodHead && resp.Body != http.NoBody && resp.ContentLength != 0 &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
	head := &messages.HTTPResponse{ID: m.ID, Body: hasBody, Status: uint16(resp.StatusCode), Header: h}
	if len(messages.Encode(head)) > messages.MaxHead {
		// A head past the limit would cost this exchange only, but the
		// proxy would refuse it anyway: say why here.
		s.log.Warn("response headers over the proxy's limit", "limit", limiter.Size(messages.MaxHead))
		return 502, messages.CodeTooLarge
	}
	x.Response(resp, h)
	if err := st.Send(head); err != nil {
		return 0, 0
	}
	if !hasBody {
		return resp.StatusCode, 0
	}
	_, err = stream.SendBody(ctx, st, x.ResponseBody(resp.Body, resp.ContentLength), stream.BodyOptions{
		Length:  resp.ContentLength,
		Limit:   maxBody,
		Trailer: func() messages.Header { return messages.TrailerFields(resp.Trailer) },
	})
	switch {
	case err == nil, ctx.Err() != nil:
		return resp.StatusCode, 0
	case errors.Is(err, limiter.ErrTooLarge):
		s.log.Warn("response body over the proxy's limit", "limit", limiter.Size(maxBody))
		return resp.StatusCode, messages.CodeTooLarge
	case st.Err() != nil:
		return resp.StatusCode, 0 // the proxy reset the stream; it knows
	default:
		s.log.Warn("local service's response body failed", "err", err)
		return resp.StatusCode, messages.CodeUpstream
	}
}

// localRoundTrip is the one way an HTTP request reaches the local service,
// in either mode: through the webhook check, whose refusal is the answer
// instead. (The inspector's replays go around it: they come from this
// machine, and a replayed webhook is what they are for.)
func (s *session) localRoundTrip(req *http.Request, m *messages.HTTPRequest) (*http.Response, error) {
	done, refusal := s.checkWebhook(req, m.URI, m.ID)
	if refusal != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return refusal.Response(req), nil
	}
	resp, err := s.r.transport.RoundTrip(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	done(status)
	return resp, err
}

// admitStream applies the webhook check to a WebSocket handshake, which a
// local handler may well take for a plain GET, and answers a refusal
// itself. done is nil when it refused, with the status it answered.
func (s *session) admitStream(m *messages.WSRequest, st *stream.Stream) (done func(status int), status int) {
	req := &http.Request{Method: http.MethodGet, Header: http.Header(m.Header), Body: http.NoBody}
	done, refusal := s.checkWebhook(req, m.URI, m.ID)
	if refusal == nil {
		return done, 0
	}
	resp := refusal.Response(req)
	body, _ := io.ReadAll(resp.Body)
	st.Send(&messages.WSResponse{ID: m.ID, Status: uint16(resp.StatusCode), Header: messages.Header(resp.Header), Body: body})
	return nil, resp.StatusCode
}

// checkWebhook applies the webhook rules, if any, to req, a request for
// the public uri, and logs a refusal. On success req's body reads what
// the check read, and done wants the local service's status (0: none).
func (s *session) checkWebhook(req *http.Request, uri string, id messages.ID) (done func(status int), refusal *webhook.Error) {
	if s.r.webhooks == nil {
		return func(int) {}, nil
	}
	// The rules name public paths; req.URL has the target's prefix.
	pub := *req
	pub.URL = &url.URL{Path: pathOf(uri)}
	if u, err := url.ParseRequestURI(uri); err == nil {
		pub.URL = u
	}
	done, err := s.r.webhooks.Check(&pub)
	req.Body, req.GetBody = pub.Body, pub.GetBody
	if err != nil {
		errors.As(err, &refusal)
		s.log.Warn("webhook refused", "req", id.String(), "provider", refusal.Provider, "reason", refusal.Err.Error(), "path", pathOf(uri))
		return nil, refusal
	}
	return done, nil
}

// localRequest builds the request to the local service. Its body, if any,
// is the stream's: read as the local service takes it, credit returned as
// it goes.
func (s *session) localRequest(ctx context.Context, m *messages.HTTPRequest, st *stream.Stream) (*http.Request, error) {
	u, err := joinURL(s.r.target, m.URI)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, m.Method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	h := m.Header
	messages.RemoveHopByHop(h)
	if names := h["Trailer"]; len(names) > 0 {
		req.Trailer = http.Header{}
		for _, v := range names {
			for n := range strings.SplitSeq(v, ",") {
				if n = strings.TrimSpace(n); n != "" {
					req.Trailer[http.CanonicalHeaderKey(n)] = nil
				}
			}
		}
		delete(h, "Trailer")
	}
	if m.Body {
		body := stream.NewBodyReader(ctx, st)
		if m.ExpectContinue {
			// The body's first credit goes out when the local service asks
			// for the body (the transport reads it after a 100 Continue).
			body.OnFirstRead = st.Grant
		}
		body.OnTrailer = func(t messages.Header) {
			if req.Trailer == nil {
				req.Trailer = http.Header{}
			}
			for k, v := range t {
				req.Trailer[http.CanonicalHeaderKey(k)] = v
			}
		}
		req.Body = body
		req.ContentLength = -1
		if v := h["Content-Length"]; len(v) == 1 {
			if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
				req.ContentLength = n
			}
		}
		if req.ContentLength == 0 {
			req.Body = http.NoBody
		}
	}
	delete(h, "Content-Length")
	req.Header = http.Header(h)
	req.Host = s.r.hostHeader(m.Host)
	return req, nil
}

func (r *runner) hostHeader(public string) string {
	switch hh := r.c.HostHeader; hh {
	case "":
		return public
	case "rewrite":
		return r.target.Host
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
