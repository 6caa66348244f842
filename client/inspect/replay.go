package inspect

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// replayWait is how long a replay call waits for the replayed exchange to
// end before it answers; a longer one goes on, and shows in the list.
const replayWait = 10 * time.Second

// replayRequest is the body of POST /api/requests/http: ngrok's id and
// tunnel_name, and keyhole's edit.
type replayRequest struct {
	ID         string      `json:"id"`
	TunnelName string      `json:"tunnel_name"`
	Edit       *replayEdit `json:"edit"`
}

// replayEdit changes what is replayed. Fields left out keep the original's.
type replayEdit struct {
	Method     string      `json:"method"`
	URI        string      `json:"uri"`
	Headers    http.Header `json:"headers"` // replaces all headers when set
	Body       *string     `json:"body"`
	BodyBase64 *string     `json:"body_base64"`
}

// replay replays a captured request to the local service, as is or
// edited. It answers 204 once the replay has ended (or replayWait has
// passed), with the new exchange's address in Location, as ngrok answers
// 204.
func (h *handler) replay(w http.ResponseWriter, r *http.Request) {
	var req replayRequest
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body, err := io.ReadAll(io.LimitReader(r.Body, 2*h.s.o.BodyLimit+64<<10))
	if err != nil {
		apiError(w, http.StatusBadRequest, "reading the request: "+err.Error())
		return
	}
	switch ct {
	case "application/x-www-form-urlencoded":
		// As ngrok's documentation shows it: curl -d "id=..."
		q, err := url.ParseQuery(string(body))
		if err != nil {
			apiError(w, http.StatusBadRequest, "invalid form: "+err.Error())
			return
		}
		req.ID, req.TunnelName = q.Get("id"), q.Get("tunnel_name")
	default:
		if err := json.Unmarshal(body, &req); err != nil {
			apiError(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
			return
		}
	}
	if req.TunnelName != "" && req.TunnelName != h.s.o.TunnelName {
		apiError(w, http.StatusNotFound, "no tunnel named "+req.TunnelName)
		return
	}
	rec, ok := h.s.snapshot(req.ID)
	if !ok {
		apiError(w, http.StatusNotFound, "no captured request with id "+req.ID)
		return
	}
	x, err := h.s.startReplay(rec, req.Edit)
	if err != nil {
		var re *replayError
		code := http.StatusBadRequest
		if errors.As(err, &re) {
			code = re.code
		}
		apiError(w, code, err.Error())
		return
	}
	t := time.NewTimer(replayWait)
	defer t.Stop()
	select {
	case <-x.done:
	case <-t.C:
	case <-r.Context().Done():
	}
	w.Header().Set("Location", requestURI(x.r.ID))
	w.WriteHeader(http.StatusNoContent)
}

type replayError struct {
	code int
	msg  string
}

func (e *replayError) Error() string { return e.msg }

// hopHeaders are not replayed: they described the original connection,
// or are set anew for the replay's body.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "Host", "Expect"}

// startReplay sends rec (edited by e) to the local service and captures
// the new exchange, which it returns.
func (s *Store) startReplay(rec record, e *replayEdit) (*Exchange, error) {
	if rec.Kind != KindHTTP {
		return nil, &replayError{http.StatusBadRequest, "only HTTP requests can be replayed, not a " + string(rec.Kind)}
	}
	method, uri, header, payload := rec.Method, rec.URI, rec.ReqHeader.Clone(), rec.Req.data
	edited := e != nil
	if e != nil {
		if e.Method != "" {
			method = e.Method
		}
		if e.URI != "" {
			uri = e.URI
		}
		if e.Headers != nil {
			header = e.Headers.Clone()
		}
		switch {
		case e.BodyBase64 != nil:
			b, err := base64.StdEncoding.DecodeString(*e.BodyBase64)
			if err != nil {
				return nil, &replayError{http.StatusBadRequest, "body_base64: " + err.Error()}
			}
			payload = b
		case e.Body != nil:
			payload = []byte(*e.Body)
		default:
			edited = false // the body is the original's
		}
	}
	if !edited && (rec.Req.truncated || (rec.Req.size > 0 && !rec.Req.complete)) {
		return nil, &replayError{http.StatusConflict, "the request body was not captured whole; replay it with an edited body"}
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil || !strings.HasPrefix(uri, "/") {
		return nil, &replayError{http.StatusBadRequest, "uri must be a path with an optional query, like /a/b?c=d"}
	}
	for _, k := range hopHeaders {
		header.Del(k)
	}
	messages.RemoveHopByHop(messages.Header(header))
	req, err := http.NewRequest(method, "http://replay.invalid/", bytes.NewReader(payload))
	if err != nil {
		return nil, &replayError{http.StatusBadRequest, "method: " + err.Error()}
	}
	if len(payload) == 0 {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	req.URL = &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
	req.Header, req.Host = header, rec.Host

	s.mu.Lock()
	up, base := s.up, s.replayCtx
	if up == nil {
		s.mu.Unlock()
		return nil, &replayError{http.StatusServiceUnavailable, "the client is not running: nothing to replay to"}
	}
	// Added under the lock that Stop takes before it waits.
	s.replays.Add(1)
	s.mu.Unlock()

	x := s.begin(newID(), KindHTTP, method, uri, rec.Host, header, rec.ID)
	if !x.r.Start.IsZero() {
		s.appendBody(x, false, payload, true, int64(len(payload)))
	}
	ctx, cancel := context.WithTimeout(base, s.o.ReplayTimeout)
	go func() {
		defer s.replays.Done()
		defer cancel()
		resp, err := up.RoundTrip(req.WithContext(ctx))
		if err != nil {
			x.fail(err)
			return
		}
		defer resp.Body.Close()
		h := messages.Header(resp.Header.Clone())
		messages.RemoveHopByHop(h)
		x.Response(resp, h)
		_, err = io.Copy(io.Discard, x.ResponseBody(resp.Body, resp.ContentLength))
		x.End(resp.StatusCode, err != nil)
	}()
	return x, nil
}

// fail ends a replay that got no response.
func (x *Exchange) fail(err error) {
	x.s.mu.Lock()
	x.r.Error = err.Error()
	x.s.mu.Unlock()
	x.End(http.StatusBadGateway, true)
}
