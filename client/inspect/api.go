package inspect

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The JSON of the API. Field names are ngrok's agent API's where they mean
// the same; what ngrok has no name for is under "keyhole" (requests) or in
// keyhole's own resources (/api/status, /api/events, views). See
// docs/INSPECTOR.md.

type apiTunnel struct {
	Name      string        `json:"name"`
	URI       string        `json:"uri"`
	PublicURL string        `json:"public_url"`
	Proto     string        `json:"proto"`
	Config    tunnelConfig  `json:"config"`
	Metrics   tunnelMetrics `json:"metrics"`
}

type tunnelConfig struct {
	Addr    string `json:"addr"`
	Inspect bool   `json:"inspect"`
}

type apiTunnelList struct {
	Tunnels []apiTunnel `json:"tunnels"`
	URI     string      `json:"uri"`
}

type apiRequest struct {
	URI        string       `json:"uri"`
	ID         string       `json:"id"`
	TunnelName string       `json:"tunnel_name"`
	RemoteAddr string       `json:"remote_addr"`
	Start      time.Time    `json:"start"`
	Duration   int64        `json:"duration"` // nanoseconds; so far, while not done
	Request    apiReqHead   `json:"request"`
	Response   *apiRespHead `json:"response"` // null until the local service answers
	Keyhole    apiExtra     `json:"keyhole"`
}

type apiReqHead struct {
	Method  string      `json:"method"`
	Proto   string      `json:"proto"`
	Headers http.Header `json:"headers"`
	URI     string      `json:"uri"`
	Raw     []byte      `json:"raw"` // base64 in JSON, as ngrok's
}

type apiRespHead struct {
	Status     string      `json:"status"`
	StatusCode int         `json:"status_code"`
	Proto      string      `json:"proto"`
	Headers    http.Header `json:"headers"`
	Raw        []byte      `json:"raw"`
}

// apiExtra is what keyhole adds to each captured request.
type apiExtra struct {
	Kind          Kind        `json:"kind"`
	N             uint64      `json:"n"`
	Host          string      `json:"host"`
	ReplayOf      string      `json:"replay_of,omitempty"`
	Done          bool        `json:"done"`
	Reset         bool        `json:"reset,omitempty"`
	Error         string      `json:"error,omitempty"`
	Timings       apiTimings  `json:"timings"`
	RequestBody   apiBody     `json:"request_body"`
	ResponseBody  apiBody     `json:"response_body"`
	Subprotocol   string      `json:"subprotocol,omitempty"`
	Messages      []WSMessage `json:"messages,omitempty"`
	MessagesLost  int         `json:"messages_dropped,omitempty"`
	Events        []SSEEvent  `json:"events,omitempty"`
	EventsDropped int         `json:"events_dropped,omitempty"`
}

// apiTimings are the moments of an exchange: received from the proxy, the
// response head from the local service, and the end; wait and receive are
// the nanoseconds between them.
type apiTimings struct {
	Received time.Time  `json:"received"`
	Response *time.Time `json:"response"`
	Done     *time.Time `json:"done"`
	Wait     int64      `json:"wait"`
	Receive  int64      `json:"receive"`
}

type apiBody struct {
	Size        int64  `json:"size"`
	Captured    int    `json:"captured"`
	Truncated   bool   `json:"truncated"`
	Complete    bool   `json:"complete"`
	ContentType string `json:"content_type,omitempty"`
}

type apiRequestList struct {
	URI      string       `json:"uri"`
	Requests []apiRequest `json:"requests"`
}

func requestURI(id string) string { return "/api/requests/http/" + id }

func (s *Store) apiRequest(r record, now time.Time) apiRequest {
	a := apiRequest{URI: requestURI(r.ID), ID: r.ID, TunnelName: s.o.TunnelName, RemoteAddr: r.RemoteAddr,
		Start: r.Start, Duration: int64(r.duration(now)),
		Request: apiReqHead{Method: r.Method, Proto: "HTTP/1.1", Headers: nonNil(r.ReqHeader), URI: r.URI, Raw: rawRequest(r)}}
	if r.Responded {
		a.Response = &apiRespHead{Status: statusLine(r.Status), StatusCode: r.Status, Proto: r.Proto,
			Headers: nonNil(r.RespHeader), Raw: rawResponse(r)}
	}
	x := apiExtra{Kind: r.Kind, N: r.N, Host: r.Host, ReplayOf: r.ReplayOf, Done: r.Ended, Reset: r.Reset, Error: r.Error,
		Timings:      apiTimings{Received: r.Start},
		RequestBody:  apiBodyOf(r.Req, r.ReqHeader),
		ResponseBody: apiBodyOf(r.Resp, r.RespHeader),
		Subprotocol:  r.Subprotocol, Messages: r.WS, MessagesLost: r.WSDropped, Events: r.SSE, EventsDropped: r.SSEDropped}
	if r.Responded {
		t := r.FirstByte
		x.Timings.Response, x.Timings.Wait = &t, int64(t.Sub(r.Start))
	}
	if r.Ended {
		t := r.End
		x.Timings.Done = &t
		if r.Responded {
			x.Timings.Receive = int64(t.Sub(r.FirstByte))
		} else {
			x.Timings.Wait = int64(t.Sub(r.Start))
		}
	}
	a.Keyhole = x
	return a
}

func nonNil(h http.Header) http.Header {
	if h == nil {
		return http.Header{}
	}
	return h
}

func apiBodyOf(b body, h http.Header) apiBody {
	return apiBody{Size: b.size, Captured: len(b.data), Truncated: b.truncated, Complete: b.complete, ContentType: h.Get("Content-Type")}
}

func statusLine(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("%d %s", code, t)
	}
	return fmt.Sprint(code)
}

// rawRequest is the request as HTTP/1.1 would put it on the wire, with
// the kept part of its body.
func rawRequest(r record) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, r.URI, r.Host)
	writeHeader(&b, r.ReqHeader)
	b.WriteString("\r\n")
	b.Write(r.Req.data)
	return b.Bytes()
}

func rawResponse(r record) []byte {
	var b bytes.Buffer
	proto := r.Proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	fmt.Fprintf(&b, "%s %s\r\n", proto, statusLine(r.Status))
	writeHeader(&b, r.RespHeader)
	b.WriteString("\r\n")
	b.Write(r.Resp.data)
	return b.Bytes()
}

func writeHeader(b *bytes.Buffer, h http.Header) {
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(b, "%s: %s\r\n", k, v)
		}
	}
}

// apiSummary is a list row of the page: small, with the headers flattened
// for the header filter.
type apiSummary struct {
	ID          string    `json:"id"`
	N           uint64    `json:"n"`
	Kind        Kind      `json:"kind"`
	Method      string    `json:"method"`
	URI         string    `json:"uri"`
	Status      int       `json:"status"`
	Duration    int64     `json:"duration"`
	Done        bool      `json:"done"`
	Reset       bool      `json:"reset,omitempty"`
	Error       string    `json:"error,omitempty"`
	Size        int64     `json:"size"`
	Start       time.Time `json:"start"`
	ReplayOf    string    `json:"replay_of,omitempty"`
	Items       int       `json:"items,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Headers     string    `json:"headers"`
}

func summaryOf(r record, now time.Time) apiSummary {
	var h strings.Builder
	for _, hh := range []http.Header{r.ReqHeader, r.RespHeader} {
		for k, vs := range hh {
			for _, v := range vs {
				h.WriteString(k + ": " + v + "\n")
			}
		}
	}
	return apiSummary{ID: r.ID, N: r.N, Kind: r.Kind, Method: r.Method, URI: r.URI, Status: r.Status,
		Duration: int64(r.duration(now)), Done: r.Ended, Reset: r.Reset, Error: r.Error, Size: r.Resp.size, Start: r.Start,
		ReplayOf: r.ReplayOf, Items: len(r.WS) + r.WSDropped + len(r.SSE) + r.SSEDropped,
		ContentType: r.RespHeader.Get("Content-Type"), Headers: h.String()}
}

// apiStatus is the status panel's resource.
type apiStatus struct {
	State      string        `json:"state"`
	PublicURL  string        `json:"public_url"`
	Reconnects int           `json:"reconnects"`
	LastError  string        `json:"last_error,omitempty"`
	Since      time.Time     `json:"since"`
	Addr       string        `json:"addr"`
	TunnelName string        `json:"tunnel_name"`
	Capture    apiCapture    `json:"capture"`
	Metrics    tunnelMetrics `json:"metrics"`
	// First is the number (keyhole.n) of the oldest exchange kept: the
	// page drops rows below it. Epoch counts clears.
	First uint64 `json:"first"`
	Epoch uint64 `json:"epoch"`
}

type apiCapture struct {
	On        bool  `json:"on"`
	Budget    int64 `json:"budget"`
	Used      int64 `json:"used"`
	Exchanges int   `json:"exchanges"`
	BodyLimit int64 `json:"body_limit"`
}

func (s *Store) statusLocked(now time.Time) apiStatus {
	st := apiStatus{State: s.state, PublicURL: s.publicURL, Reconnects: max(0, s.registrations-1),
		LastError: s.lastError, Since: s.since, TunnelName: s.o.TunnelName,
		Capture: apiCapture{On: s.o.Budget > 0, Budget: max(0, s.o.Budget), Used: s.used, Exchanges: len(s.list), BodyLimit: s.o.BodyLimit},
		Metrics: s.met.snapshot(now), First: s.next, Epoch: s.epoch}
	if s.up != nil {
		st.Addr = s.up.Addr
	}
	if len(s.list) > 0 {
		st.First = s.list[0].r.N
	}
	return st
}

func (s *Store) status() apiStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked(time.Now())
}

// tunnels lists the tunnel once it has registered: a script that polls
// /api/tunnels for tunnels[0].public_url waits until there is one.
func (s *Store) tunnels() []apiTunnel {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.publicURL == "" {
		return []apiTunnel{}
	}
	t := apiTunnel{Name: s.o.TunnelName, URI: "/api/tunnels/" + url.PathEscape(s.o.TunnelName), PublicURL: s.publicURL,
		Config: tunnelConfig{Inspect: s.o.Budget > 0}, Metrics: s.met.snapshot(time.Now())}
	if u, err := url.Parse(s.publicURL); err == nil {
		t.Proto = u.Scheme
	}
	if s.up != nil {
		t.Config.Addr = s.up.Addr
	}
	return []apiTunnel{t}
}
