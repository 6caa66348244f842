package inspect

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The HTTP Archive 1.2 format (http://www.softwareishard.com/blog/har-12-spec/).
// Fields named with a leading underscore are keyhole's, as the format
// allows; _webSocketMessages is in the shape Chromium's exports use.

type harFile struct {
	Log harLog `json:"log"`
}

type harLog struct {
	Version string     `json:"version"`
	Creator harCreator `json:"creator"`
	Entries []harEntry `json:"entries"`
}

type harCreator struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type harEntry struct {
	StartedDateTime   string         `json:"startedDateTime"`
	Time              float64        `json:"time"`
	Request           harRequest     `json:"request"`
	Response          harResponse    `json:"response"`
	Cache             struct{}       `json:"cache"`
	Timings           harTimings     `json:"timings"`
	ID                string         `json:"_id"`
	ReplayOf          string         `json:"_replayOf,omitempty"`
	WebSocketMessages []harWSMessage `json:"_webSocketMessages,omitempty"`
}

type harNV = Field // a HAR name/value pair has the same two fields

type harCookie struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type harRequest struct {
	Method      string       `json:"method"`
	URL         string       `json:"url"`
	HTTPVersion string       `json:"httpVersion"`
	Cookies     []harCookie  `json:"cookies"`
	Headers     []harNV      `json:"headers"`
	QueryString []harNV      `json:"queryString"`
	PostData    *harPostData `json:"postData,omitempty"`
	HeadersSize int64        `json:"headersSize"`
	BodySize    int64        `json:"bodySize"`
}

type harPostData struct {
	MimeType string  `json:"mimeType"`
	Params   []harNV `json:"params"`
	Text     string  `json:"text"`
	Comment  string  `json:"comment,omitempty"`
}

type harResponse struct {
	Status      int         `json:"status"`
	StatusText  string      `json:"statusText"`
	HTTPVersion string      `json:"httpVersion"`
	Cookies     []harCookie `json:"cookies"`
	Headers     []harNV     `json:"headers"`
	Content     harContent  `json:"content"`
	RedirectURL string      `json:"redirectURL"`
	HeadersSize int64       `json:"headersSize"`
	BodySize    int64       `json:"bodySize"`
}

type harContent struct {
	Size     int64  `json:"size"`
	MimeType string `json:"mimeType"`
	Text     string `json:"text,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	Comment  string `json:"comment,omitempty"`
}

type harTimings struct {
	Blocked float64 `json:"blocked"`
	DNS     float64 `json:"dns"`
	Connect float64 `json:"connect"`
	Send    float64 `json:"send"`
	Wait    float64 `json:"wait"`
	Receive float64 `json:"receive"`
	SSL     float64 `json:"ssl"`
}

type harWSMessage struct {
	Type   string  `json:"type"` // send (visitor to service) or receive
	Time   float64 `json:"time"` // seconds since the epoch
	Opcode int     `json:"opcode"`
	Data   string  `json:"data"`
}

// secretHeaders are masked on the page, and in a HAR exported with mask.
var secretHeaders = []string{"Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization"}

const masked = "[masked]"

func isSecret(name string) bool {
	for _, s := range secretHeaders {
		if strings.EqualFold(s, name) {
			return true
		}
	}
	return false
}

func harOf(recs []record, scheme string, mask bool) harFile {
	f := harFile{Log: harLog{Version: "1.2", Creator: harCreator{Name: "keyhole inspector", Version: "1"}, Entries: []harEntry{}}}
	// HAR lists entries oldest first.
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b record) int { return cmp.Compare(a.N, b.N) })
	for _, r := range recs {
		f.Log.Entries = append(f.Log.Entries, harEntryOf(r, scheme, mask))
	}
	return f
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func harEntryOf(r record, scheme string, mask bool) harEntry {
	e := harEntry{StartedDateTime: r.Start.Format("2006-01-02T15:04:05.000Z07:00"), ID: r.ID, ReplayOf: r.ReplayOf,
		Timings: harTimings{Blocked: -1, DNS: -1, Connect: -1, SSL: -1}}
	end := r.End
	if !r.Ended {
		end = time.Now()
	}
	if r.Responded {
		e.Timings.Wait, e.Timings.Receive = ms(r.FirstByte.Sub(r.Start)), ms(end.Sub(r.FirstByte))
	} else {
		e.Timings.Wait = ms(end.Sub(r.Start))
	}
	e.Time = e.Timings.Send + e.Timings.Wait + e.Timings.Receive

	u := scheme + "://" + r.Host + r.URI
	if r.Kind == KindWebSocket {
		u = strings.Replace(u, "http", "ws", 1)
	}
	e.Request = harRequest{Method: r.Method, URL: u, HTTPVersion: "HTTP/1.1",
		Cookies: harCookies((&http.Request{Header: r.ReqHeader}).Cookies(), mask), Headers: harHeaders(r.ReqHeader, mask),
		QueryString: queryOf(r.URI), HeadersSize: -1, BodySize: r.Req.size}
	if r.Req.size > 0 {
		ct := r.ReqHeader.Get("Content-Type")
		pd := &harPostData{MimeType: ct, Params: []harNV{}}
		pd.Text, _ = harText(r.Req.data)
		if mt, _, _ := mime.ParseMediaType(ct); mt == "application/x-www-form-urlencoded" {
			if fields, err := parseForm(r.Req.data); err == nil {
				pd.Params = append(pd.Params, fields...)
			}
		}
		if r.Req.truncated {
			pd.Comment = fmt.Sprintf("truncated: the first %d of %d bytes", len(r.Req.data), r.Req.size)
		}
		e.Request.PostData = pd
	}

	e.Response = harResponse{Status: r.Status, StatusText: http.StatusText(r.Status), HTTPVersion: r.Proto,
		Cookies: harCookies((&http.Response{Header: r.RespHeader}).Cookies(), mask), Headers: harHeaders(r.RespHeader, mask),
		RedirectURL: r.RespHeader.Get("Location"), HeadersSize: -1, BodySize: r.Resp.size,
		Content: harContent{Size: r.Resp.size, MimeType: r.RespHeader.Get("Content-Type")}}
	if e.Response.HTTPVersion == "" {
		e.Response.HTTPVersion = "HTTP/1.1"
	}
	if e.Response.Content.MimeType == "" {
		e.Response.Content.MimeType = "x-unknown"
	}
	if len(r.Resp.data) > 0 {
		e.Response.Content.Text, e.Response.Content.Encoding = harText(r.Resp.data)
	}
	if r.Resp.truncated {
		e.Response.Content.Comment = fmt.Sprintf("truncated: the first %d of %d bytes", len(r.Resp.data), r.Resp.size)
	}
	for _, m := range r.WS {
		hm := harWSMessage{Type: "send", Time: float64(m.Time.UnixMicro()) / 1e6}
		if m.Direction == DirOut {
			hm.Type = "receive"
		}
		switch m.Type {
		case "text":
			hm.Opcode, hm.Data = 1, m.Text
		case "binary":
			hm.Opcode, hm.Data = 2, base64.StdEncoding.EncodeToString(m.Data)
		default:
			continue
		}
		e.WebSocketMessages = append(e.WebSocketMessages, hm)
	}
	return e
}

// harText is b as HAR content: text when it is UTF-8 text, else base64.
func harText(b []byte) (text, encoding string) {
	if looksLikeText(b) {
		return textOf(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func harHeaders(h http.Header, mask bool) []harNV {
	out := []harNV{}
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			if mask && isSecret(k) {
				v = masked
			}
			out = append(out, harNV{k, v})
		}
	}
	return out
}

func queryOf(uri string) []harNV {
	out := []harNV{}
	_, q, ok := strings.Cut(uri, "?")
	if !ok {
		return out
	}
	fields, err := parseForm([]byte(q))
	if err != nil {
		return out
	}
	return append(out, fields...)
}

func harCookies(cs []*http.Cookie, mask bool) []harCookie {
	out := []harCookie{}
	for _, c := range cs {
		v := c.Value
		if mask {
			v = masked
		}
		out = append(out, harCookie{c.Name, v})
	}
	return out
}

// curlCommand is a shell command that sends the request again, to the
// public URL: one option to a line.
func curlCommand(r record, scheme string) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	first := "curl"
	hasBody := r.Req.size > 0
	if !(r.Method == http.MethodGet && !hasBody) && !(r.Method == http.MethodPost && hasBody) {
		first += " -X " + q(r.Method)
	}
	lines := []string{first + " " + q(scheme+"://"+r.Host+r.URI)}
	for _, k := range slices.Sorted(maps.Keys(r.ReqHeader)) {
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Content-Length", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-Ip":
			// The proxy sets these on the way in.
			continue
		}
		for _, v := range r.ReqHeader[k] {
			lines = append(lines, "-H "+q(k+": "+v))
		}
	}
	prefix := ""
	if hasBody {
		if looksLikeText(r.Req.data) {
			lines = append(lines, "--data-raw "+q(textOf(r.Req.data)))
		} else {
			prefix = "printf %s " + q(base64.StdEncoding.EncodeToString(r.Req.data)) + " | base64 -d | "
			lines = append(lines, "--data-binary @-")
		}
	}
	cmd := prefix + strings.Join(lines, " \\\n  ")
	if r.Req.truncated || (hasBody && !r.Req.complete) {
		cmd = fmt.Sprintf("# the body was kept in part: %d of %d bytes\n", len(r.Req.data), r.Req.size) + cmd
	}
	return cmd + "\n"
}
