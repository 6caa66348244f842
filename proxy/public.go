package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// serveTunnel forwards a public request for a tunnel hostname to its
// client and writes the answer. Every request ends in exactly one answer:
// the client's, or the proxy's own 4xx/5xx, or, once a response has begun
// and cannot be finished, an aborted transfer.
func (p *Proxy) serveTunnel(w http.ResponseWriter, r *http.Request, host, label string) {
	start := time.Now()
	var id messages.ID // the exchange's, as the client and its inspector name it
	if isWebSocketUpgrade(r) {
		rec := &statusRecorder{ResponseWriter: w, m: p.metrics}
		p.serveWebSocket(rec, r, label, &id)
		rec.done()
		p.logRequest(r, label, id, rec.status, time.Since(start), false)
		return
	}
	status, abort := p.forwardHTTP(w, r, host, label, &id)
	d := time.Since(start)
	p.metrics.request(status, d)
	p.logRequest(r, label, id, status, d, abort)
	if abort {
		// The response has begun and cannot be completed: the visitor must
		// see an incomplete transfer, never a short body that looks whole.
		// net/http closes an HTTP/1.1 connection without the final chunk
		// and resets an HTTP/2 stream.
		panic(http.ErrAbortHandler)
	}
}

// logRequest writes the one line per public request, with the ID the
// client's log and inspector show for the same exchange (none when the
// proxy answered without reaching the client). Status 0 and 499 mean the
// visitor left first.
func (p *Proxy) logRequest(r *http.Request, label string, id messages.ID, status int, d time.Duration, aborted bool) {
	if !p.log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	req := ""
	if id != (messages.ID{}) {
		req = id.String()
	}
	p.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("req", req), slog.String("host", label), slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.Int("status", status),
		slog.Duration("duration", d.Round(time.Microsecond)), slog.Bool("aborted", aborted),
		slog.String("remote", r.RemoteAddr))
}

// Upload failures, as the visitor's side of an exchange sees them.
var (
	errBodyTimeout = errors.New("request body too slow")
	errVisitorGone = errors.New("visitor went away")
)

// exchange is one public HTTP request on its way through the tunnel.
type exchange struct {
	p      *Proxy
	w      http.ResponseWriter
	r      *http.Request
	rc     *http.ResponseController
	vs     *visitorStream
	host   string
	headAt atomic.Bool // the response head has been written
	// retryable is set for a request that has no body: it can go again,
	// to another connection, if its holder turns out to be gone; retry
	// says that it should.
	retryable, retry bool
	// respDone is set once the response's end has been written: with the
	// upload done too, the stream is over in both directions and needs no
	// reset.
	respDone bool

	upload     sync.WaitGroup
	uploading  atomic.Bool
	body       *uploadBody
	uploadDone chan struct{}         // closed when the upload has stopped
	uploadErr  atomic.Pointer[error] // why the request body failed, set before the stream is reset
}

// forwardHTTP returns the status written (499 when the visitor left first)
// and whether the response must be aborted.
// It sets *id to the ID of the request it sent the client, if any.
func (p *Proxy) forwardHTTP(w http.ResponseWriter, r *http.Request, host, label string, id *messages.ID) (int, bool) {
	if r.Method == http.MethodConnect {
		// A tunnel serves its own hostname; it is not a way to anywhere
		// else.
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		return publicError(w, http.StatusMethodNotAllowed), false
	}
	maxBody := int64(p.cfg.MaxBody)
	if maxBody > 0 && r.ContentLength > maxBody {
		return publicError(w, http.StatusRequestEntityTooLarge), false
	}
	if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
		// net/http drops a Content-Length that came with Transfer-Encoding,
		// so the two cannot be told apart here: RFC 9112 section 6.1 then
		// requires closing the connection after the response, which keeps
		// a request smuggled behind the body from being served.
		w.Header().Set("Connection", "close")
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	head := &messages.HTTPRequest{
		ID:             messages.NewID(),
		Body:           hasBody,
		ExpectContinue: hasBody && headerHasToken(r.Header, "Expect", "100-continue"),
		Window:         messages.InitialWindow,
		Method:         r.Method,
		URI:            requestURI(r),
		Host:           r.Host,
		Header:         p.outboundHeader(r),
	}
	if hasBody && r.ContentLength > 0 {
		head.Header["Content-Length"] = []string{strconv.FormatInt(r.ContentLength, 10)}
	}
	if len(r.Trailer) > 0 {
		names := make([]string, 0, len(r.Trailer))
		for k := range r.Trailer {
			names = append(names, k)
		}
		head.Header["Trailer"] = []string{strings.Join(names, ", ")}
	}
	frame := messages.Encode(head)
	if len(frame) > messages.MaxHead {
		// The listener's limit counts bytes on the wire; a head of many
		// tiny fields can pass it and still not fit a head frame.
		return publicError(w, http.StatusRequestHeaderFieldsTooLarge), false
	}
	for attempt := 0; ; attempt++ {
		rt, status := p.lookup(r.Context(), label)
		if status != 0 {
			return publicError(w, status), false
		}
		rt, ok := p.member(rt)
		if !ok {
			return publicError(w, http.StatusBadGateway), false
		}
		if status := rt.policy.admit(p, w, r); status != 0 {
			return status, false
		}
		holder := rt.holder
		*id = head.ID
		status, abort, retry := p.exchange(w, r, host, label, holder, head, frame)
		if !retry {
			return status, abort
		}
		if attempt > 0 {
			// Gone twice: the registry still names a connection that
			// left, or an instance that died, until its entry expires.
			return publicError(w, http.StatusBadGateway), false
		}
		// The holder the cache named is gone, and nothing of the request
		// has been read yet: once more, with the registry's answer.
		p.forgetRoute(label, holder)
		head.ID = messages.NewID()
		frame = messages.Encode(head)
	}
}

// exchange runs one request against the connection holder. It reports
// retry, having written nothing, when holder turned out to be gone before
// anything could be read of the visitor's body: the caller may look the
// hostname up again and try once more.
func (p *Proxy) exchange(w http.ResponseWriter, r *http.Request, host, label, holder string, head *messages.HTTPRequest, frame []byte) (status int, abort, retry bool) {
	credit := messages.InitialWindow
	if head.ExpectContinue {
		credit = 0
	}
	vs := p.openStream(head.ID, label, holder, stream.Config{RecvWindow: int(head.Window), SendCredit: credit})
	defer p.closeStream(vs)
	if status := p.publishRequest(r.Context(), holder, frame); status != 0 {
		if status == http.StatusBadGateway {
			// Nobody listens for holder's instance (it stopped): nothing
			// of the body has been read, so even a POST can go again.
			return 0, false, true
		}
		return publicError(w, status), false, false
	}
	ex := &exchange{p: p, w: w, r: r, rc: http.NewResponseController(w), vs: vs, host: host}
	if head.Body {
		// HTTP/1.1 must not drain the body before the response begins: the
		// two stream side by side (HTTP/2 always can).
		ex.rc.EnableFullDuplex()
		ex.startUpload()
	}
	defer ex.stopUpload()
	if !head.Body {
		ex.retryable = true
	}
	status, abort = ex.run()
	return status, abort, ex.retry
}

// run waits for the response head and streams the response body.
func (ex *exchange) run() (int, bool) {
	p, vs := ex.p, ex.vs
	ctx := ex.r.Context()
	m, err := vs.NextWithin(ctx, p.cfg.Timeout)
	if err != nil {
		var reset *stream.ResetError
		if ex.retryable && errors.As(err, &reset) && reset.Code == messages.CodeGone && !reset.Local {
			// The connection the request went to is gone; the hostname
			// may have moved to another.
			ex.retry = true
			return 0, false
		}
		status := ex.failBeforeHead(err)
		return status, status == 499
	}
	resp, ok := m.(*messages.HTTPResponse)
	if !ok {
		vs.Reset(messages.CodeBadResponse, "expected a response head")
		return publicError(ex.w, http.StatusBadGateway), false
	}
	h := ex.w.Header()
	copyResponseHeader(h, resp.Header, ex.host, p.cfg.Domain)
	length := int64(-1)
	if v := h.Get("Content-Length"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			vs.Reset(messages.CodeBadResponse, "invalid Content-Length")
			h.Del("Content-Length")
			return publicError(ex.w, http.StatusBadGateway), false
		}
		length = n
	}
	if max := int64(p.cfg.MaxBody); max > 0 && length > max && ex.r.Method != http.MethodHead {
		vs.Reset(messages.CodeTooLarge, "response body over the limit")
		h.Del("Content-Length")
		return publicError(ex.w, http.StatusBadGateway), false
	}
	if !resp.Body && length > 0 && ex.r.Method != http.MethodHead && resp.Status != http.StatusNotModified {
		vs.Reset(messages.CodeBadResponse, "Content-Length without a body")
		h.Del("Content-Length")
		return publicError(ex.w, http.StatusBadGateway), false
	}
	status := int(resp.Status)
	ex.closeIfUploading()
	ex.w.WriteHeader(status)
	ex.headAt.Store(true)
	if !resp.Body {
		ex.respDone = true
		return status, false
	}
	if vs.Queued() == 0 {
		// The body is not here yet: the visitor gets the head now, as an
		// event stream's or a long poll's visitor wants.
		ex.rc.Flush()
	}
	return ex.copyBody(status, length)
}

// copyBody writes the response body as it arrives, flushing whenever
// nothing more is queued, and returns once its end has been written.
func (ex *exchange) copyBody(status int, length int64) (int, bool) {
	p, vs := ex.p, ex.vs
	ctx := ex.r.Context()
	max := int64(p.cfg.MaxBody)
	declared := trailerNames(ex.w.Header())
	var total int64
	for {
		m, err := vs.NextWithin(ctx, p.cfg.IdleTimeout)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			vs.Reset(messages.CodeCanceled, "visitor went away")
			if length >= 0 && total == length {
				// The visitor had the whole body and hung up before its
				// end-of-stream frame came: a complete response (a load
				// balancer without keep-alive does just that).
				return status, false
			}
			return 499, true
		case errors.Is(err, stream.ErrIdle):
			vs.Reset(messages.CodeCanceled, "idle")
			return status, true
		default:
			// Reset by the client (over its limits, local service gone) or
			// the tunnel dropped.
			return status, true
		}
		switch m := m.(type) {
		case *messages.Data:
			total += int64(len(m.Data))
			if (max > 0 && total > max) || (length >= 0 && total > length) {
				vs.Reset(messages.CodeTooLarge, "response body over the limit")
				return status, true
			}
			if len(m.Data) > 0 {
				ex.rc.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
				_, err := ex.w.Write(m.Data)
				stream.Release(m.Data)
				if err != nil {
					vs.Reset(messages.CodeCanceled, "visitor went away")
					return 499, true
				}
				vs.Consumed(len(m.Data))
			}
			if m.End {
				if length >= 0 && total != length {
					return status, true
				}
				ex.respDone = true
				return status, false
			}
			if vs.Queued() == 0 {
				ex.rc.Flush()
			}
		case *messages.Trailer:
			if length >= 0 && total != length {
				return status, true
			}
			h := ex.w.Header()
			for k, v := range m.Header {
				if messages.ValidateHeader(messages.Header{k: v}) != nil {
					continue
				}
				if declared[http.CanonicalHeaderKey(k)] {
					h[http.CanonicalHeaderKey(k)] = v
				} else {
					h[http.TrailerPrefix+k] = v
				}
			}
			ex.respDone = true
			return status, false
		default:
			vs.Reset(messages.CodeBadResponse, "unexpected frame in a response body")
			return status, true
		}
	}
}

// trailerNames returns the trailer fields a response declared.
func trailerNames(h http.Header) map[string]bool {
	names := map[string]bool{}
	for _, v := range h["Trailer"] {
		for n := range strings.SplitSeq(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names[http.CanonicalHeaderKey(n)] = true
			}
		}
	}
	return names
}

// failBeforeHead answers a request whose response head never came. 499
// means nothing could be written: the visitor is gone.
func (ex *exchange) failBeforeHead(err error) int {
	vs, w := ex.vs, ex.w
	ex.closeIfUploading()
	if ex.r.Context().Err() != nil && ex.uploading.Load() {
		// A read deadline that ends the body's upload also cancels the
		// request's context, inside that very read: the upload says why
		// in a moment.
		select {
		case <-ex.uploadDone:
		case <-time.After(time.Second):
		}
	}
	if up := ex.uploadErr.Load(); up != nil {
		// The rest of the body cannot be read as the next request.
		w.Header().Set("Connection", "close")
		switch {
		case errors.Is(*up, limiter.ErrTooLarge):
			return publicError(w, http.StatusRequestEntityTooLarge)
		case errors.Is(*up, errBodyTimeout):
			return publicError(w, http.StatusRequestTimeout)
		default:
			return 499
		}
	}
	var reset *stream.ResetError
	switch {
	case ex.r.Context().Err() != nil:
		vs.Reset(messages.CodeCanceled, "visitor went away")
		return 499 // the caller went away; nothing to write
	case errors.Is(err, stream.ErrIdle):
		vs.Reset(messages.CodeCanceled, "timed out")
		return publicError(w, http.StatusGatewayTimeout)
	case errors.As(err, &reset):
		status := errorStatus(reset.Code)
		if reset.Code == messages.CodeTooLarge && ex.body != nil {
			// Before the response head, only the request body can be too
			// large: the holder cut it at the tunnel's own cap.
			w.Header().Set("Connection", "close")
			status = http.StatusRequestEntityTooLarge
		}
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", strconv.Itoa(int(max(1, reset.RetryAfter))))
		}
		return publicError(w, status)
	}
	vs.Reset(messages.CodeCanceled, "tunnel error")
	return publicError(w, http.StatusBadGateway)
}

// startUpload streams the request body to the client in the background,
// within the client's credit. A body that stalls for IdleTimeout, or
// arrives slower than MinBodyRate before the response head, is cut off.
func (ex *exchange) startUpload() {
	p, r := ex.p, ex.r
	ex.upload.Add(1)
	ex.uploading.Store(true)
	ex.body = &uploadBody{r: r.Body}
	ex.uploadDone = make(chan struct{})
	go func() {
		defer ex.upload.Done()
		defer close(ex.uploadDone)
		defer ex.uploading.Store(false)
		start := time.Now()
		var received int64
		last := start
		_, err := stream.SendBody(context.Background(), ex.vs.Stream, ex.body, stream.BodyOptions{
			Length:  r.ContentLength,
			Limit:   int64(p.cfg.MaxBody),
			Trailer: func() messages.Header { return messages.TrailerFields(r.Trailer) },
			BeforeRead: func() {
				deadline := last.Add(p.cfg.IdleTimeout)
				if !ex.headAt.Load() {
					// Before the answer, the body must also keep a minimum
					// average rate once IdleTimeout has passed.
					rate := float64(p.cfg.MinBodyRate)
					byRate := start.Add(p.cfg.IdleTimeout + time.Duration(float64(received)/rate*float64(time.Second)))
					if byRate.Before(deadline) {
						deadline = byRate
					}
				}
				ex.rc.SetReadDeadline(deadline)
			},
			AfterRead: func(n int) {
				received += int64(n)
				last = time.Now()
			},
		})
		if err == nil {
			// A deadline left on the connection would end net/http's own
			// watch for the visitor hanging up, once the body is read.
			ex.rc.SetReadDeadline(time.Time{})
			return
		}
		var reset *stream.ResetError
		switch {
		case errors.As(err, &reset):
			// The client reset the stream, or run gave up: nothing to add.
			return
		case errors.Is(err, limiter.ErrTooLarge):
		case errors.Is(err, os.ErrDeadlineExceeded):
			err = errBodyTimeout
		default:
			p.log.Debug("request body failed", "err", err)
			err = errVisitorGone
		}
		ex.uploadErr.Store(&err)
		code := messages.CodeCanceled
		if errors.Is(err, limiter.ErrTooLarge) {
			code = messages.CodeTooLarge
		}
		ex.vs.Reset(code, err.Error())
	}()
}

// stopUpload ends the request body's upload, if it still runs, and waits
// for it: the body must not be read once the handler returns.
func (ex *exchange) stopUpload() {
	uploading := ex.uploading.Load()
	if !ex.respDone || uploading {
		// Whatever is left of the exchange is no longer wanted: the client
		// stops, and its holder forgets the stream. One that ended in both
		// directions needs no word.
		ex.vs.Reset(messages.CodeCanceled, "exchange over")
	}
	if uploading {
		ex.body.stop(ex.rc)
	}
	ex.upload.Wait()
	// With full duplex on, net/http reads the body to its end only after
	// the handler, and then its watch for the next request starts reading
	// at the same time as the next request does: it panics
	// (golang/go#68560). Reaching the end here, first, avoids that.
	ex.r.Body.Close()
}

// publishRequest sends the head of a new stream to the instance holding
// the connection, and returns a status to answer if nobody could receive
// it.
func (p *Proxy) publishRequest(ctx context.Context, holder string, frame []byte) int {
	payload := messages.AppendEnvelopeFrame(nil, p.instance, holder, frame)
	ctx, cancel := context.WithTimeout(ctx, busOpTimeout)
	defer cancel()
	n, err := p.send(ctx, instanceOf(holder), payload)
	switch {
	case err != nil:
		p.log.Warn("bus publish", "err", err)
		return http.StatusServiceUnavailable
	case n == 0:
		// No instance of that name is listening any more: answer now
		// rather than wait for the timeout.
		return http.StatusBadGateway
	}
	return 0
}

// closeIfUploading makes the response the connection's last while the
// request body may still be arriving: the rest of it cannot be read as
// the next request, and stopping its upload (see uploadBody.stop) spoils
// the connection for net/http.
func (ex *exchange) closeIfUploading() {
	if ex.uploading.Load() && !ex.body.complete() && ex.r.ProtoMajor == 1 {
		ex.w.Header().Set("Connection", "close")
	}
}

// uploadBody is a request body being read by the upload, which the
// handler can interrupt.
type uploadBody struct {
	r io.Reader

	mu      sync.Mutex
	reading bool // a Read is in progress
	eof     bool // a Read reached the end
	stopped bool
}

func (b *uploadBody) complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

func (b *uploadBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	b.reading = true
	b.mu.Unlock()
	n, err := b.r.Read(p)
	b.mu.Lock()
	b.reading = false
	b.eof = err == io.EOF
	b.mu.Unlock()
	return n, err
}

// stop ends the upload: no Read starts after it, and one in progress is
// interrupted with a read deadline in the past. That deadline also ends
// net/http's own read of the connection, which then cancels the contexts
// of any later request on it: the response has said Connection: close
// (closeIfUploading) so that there is none.
func (b *uploadBody) stop(rc *http.ResponseController) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.reading && !b.eof {
		rc.SetReadDeadline(time.Now())
	}
}

// errNoReceiver means a frame reached no instance: the client's holder is
// gone.
var errNoReceiver = errors.New("no instance holds the tunnel")

// busSender carries a visitor stream's frames to the instance holding the
// client. Data goes to the connection the stream was opened on, which
// passes it on if it handed the stream to a successor, so it keeps its
// order; control frames go to whichever connection last answered.
//
// Frames are posted, not waited for: over Redis they go out in batches, a
// round trip for many. A frame that reaches no one fails the stream, which
// its consumer then sees.
type busSender struct {
	p     *Proxy
	label string
	data  string
	ctrl  atomic.Pointer[string]
	key   uint64
	vs    *visitorStream
}

func (b *busSender) publish(conn string, m messages.Message) error {
	payload := messages.AppendEnvelope(stream.Buf(), b.p.instance, conn, m)
	b.p.post(instanceOf(conn), payload, b.key, b.sent)
	return nil
}

// sent fails the stream when a frame could not be delivered: the
// instance holding the client is gone.
func (b *busSender) sent(n int, err error) {
	if err == nil && n == 0 {
		err = errNoReceiver
	}
	if err != nil && b.vs != nil {
		b.p.forgetRoute(b.label, b.data)
		b.vs.Abandon(&stream.ResetError{Code: messages.CodeUnavailable, Reason: err.Error(), Local: true})
	}
}

func (b *busSender) Send(m messages.Message) error {
	ctrl := *b.ctrl.Load()
	err := b.publish(ctrl, m)
	if _, ok := m.(*messages.Error); ok && ctrl != b.data {
		b.publish(b.data, m) // the first holder may still be passing data on
	}
	return err
}

func (b *busSender) SendData(m messages.Message, _ int) error { return b.publish(b.data, m) }

// visitorStream is a stream this instance opened for a visitor.
type visitorStream struct {
	*stream.Stream
	out *busSender
}

// deliver takes a frame from the client connection conn. A stream handed
// to a successor connection hears from it directly from then on.
func (vs *visitorStream) deliver(conn string, m messages.Message) {
	if cur := vs.out.ctrl.Load(); conn != "" && *cur != conn {
		vs.out.ctrl.Store(&conn)
	}
	if err := vs.Receive(m); err != nil {
		// The holder checks every client's credit, so this is a bug
		// somewhere between: fail the stream, not the instance.
		vs.Reset(messages.CodeBadResponse, "flow control violated")
	}
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
	delete(h, "Content-Length") // set from the body the proxy forwards
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
