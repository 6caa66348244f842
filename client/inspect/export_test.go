package inspect

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// harRequired lists, for each HAR 1.2 object, the fields the format
// requires, and the JSON type of each.
var harRequired = map[string]map[string]string{
	"log":      {"version": "string", "creator": "object", "entries": "array"},
	"creator":  {"name": "string", "version": "string"},
	"entry":    {"startedDateTime": "string", "time": "number", "request": "object", "response": "object", "cache": "object", "timings": "object"},
	"request":  {"method": "string", "url": "string", "httpVersion": "string", "cookies": "array", "headers": "array", "queryString": "array", "headersSize": "number", "bodySize": "number"},
	"response": {"status": "number", "statusText": "string", "httpVersion": "string", "cookies": "array", "headers": "array", "content": "object", "redirectURL": "string", "headersSize": "number", "bodySize": "number"},
	"content":  {"size": "number", "mimeType": "string"},
	"timings":  {"send": "number", "wait": "number", "receive": "number"},
	"postData": {"mimeType": "string", "params": "array", "text": "string"},
	"nv":       {"name": "string", "value": "string"},
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case bool:
		return "boolean"
	}
	return "null"
}

func checkObject(t *testing.T, what string, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s is %s, want an object", what, jsonType(v))
	}
	for k, typ := range harRequired[what] {
		if got := jsonType(m[k]); got != typ {
			t.Errorf("%s.%s is %s, want %s", what, k, got, typ)
		}
	}
	return m
}

func TestHARValid(t *testing.T) {
	s := New(Options{})
	x := s.BeginHTTP(messages.ID{1}, "POST", "/form?a=1&b=two", "t.example", messages.Header{
		"Content-Type":  {"application/x-www-form-urlencoded"},
		"Cookie":        {"sid=s3cret; theme=dark"},
		"Authorization": {"Bearer tok"},
	})
	body := "name=Ada&lang=go"
	io.Copy(io.Discard, x.RequestBody(io.NopCloser(strings.NewReader(body)), int64(len(body))))
	x.Response(&http.Response{StatusCode: 302, Proto: "HTTP/1.1"}, messages.Header{
		"Location": {"/done"}, "Set-Cookie": {"sid=new; HttpOnly"}, "Content-Type": {"image/png"},
	})
	io.Copy(io.Discard, x.ResponseBody(strings.NewReader("\x89PNG\x00\x01"), -1))
	x.End(302, false)
	ws := s.BeginWebSocket(messages.ID{2}, "/ws", "t.example", nil)
	ws.WebSocketResponse(&http.Response{StatusCode: 101, Header: http.Header{}})
	s.addWS(ws, WSMessage{Direction: DirIn, Type: "text", Size: 2, Time: time.Now(), Text: "hi"})
	s.addWS(ws, WSMessage{Direction: DirOut, Type: "binary", Size: 1, Time: time.Now(), Data: []byte{9}})
	ws.End(101, false)

	for _, mask := range []bool{false, true} {
		b, err := json.Marshal(harOf(s.snapshots(0), "https", mask))
		if err != nil {
			t.Fatal(err)
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		log := checkObject(t, "log", f["log"])
		if log["version"] != "1.2" {
			t.Errorf("version %v", log["version"])
		}
		checkObject(t, "creator", log["creator"])
		entries := log["entries"].([]any)
		if len(entries) != 2 {
			t.Fatalf("%d entries", len(entries))
		}
		for _, e := range entries {
			em := checkObject(t, "entry", e)
			if _, err := time.Parse(time.RFC3339Nano, em["startedDateTime"].(string)); err != nil {
				t.Errorf("startedDateTime: %v", err)
			}
			req := checkObject(t, "request", em["request"])
			resp := checkObject(t, "response", em["response"])
			checkObject(t, "content", resp["content"])
			tm := checkObject(t, "timings", em["timings"])
			var sum float64
			for _, k := range []string{"blocked", "dns", "connect", "send", "wait", "receive", "ssl"} {
				if v, _ := tm[k].(float64); v > 0 {
					sum += v
				}
			}
			if d := sum - em["time"].(float64); d > 0.01 || d < -0.01 {
				t.Errorf("time %v is not the sum of the timings, %v", em["time"], sum)
			}
			for _, list := range []string{"headers", "cookies", "queryString"} {
				for _, nv := range req[list].([]any) {
					checkObject(t, "nv", nv)
				}
			}
			if pd, ok := req["postData"]; ok {
				checkObject(t, "postData", pd)
			}
		}
		// Entries come oldest first, as HAR has them: the POST, then the
		// WebSocket.
		post := entries[0].(map[string]any)
		req := post["request"].(map[string]any)
		if req["url"] != "https://t.example/form?a=1&b=two" || len(req["queryString"].([]any)) != 2 {
			t.Errorf("url %v, query %v", req["url"], req["queryString"])
		}
		if p := req["postData"].(map[string]any); p["text"] != body || len(p["params"].([]any)) != 2 {
			t.Errorf("postData %v", p)
		}
		resp := post["response"].(map[string]any)
		if resp["redirectURL"] != "/done" || resp["content"].(map[string]any)["encoding"] != "base64" {
			t.Errorf("response %v", resp)
		}
		dump := string(b)
		for _, secret := range []string{"s3cret", "Bearer tok", "sid=new"} {
			if strings.Contains(dump, secret) == mask {
				t.Errorf("mask %v: %q present %v", mask, secret, !mask)
			}
		}
		wsEntry := entries[1].(map[string]any)
		msgs, _ := wsEntry["_webSocketMessages"].([]any)
		if len(msgs) != 2 || msgs[0].(map[string]any)["type"] != "send" || msgs[1].(map[string]any)["data"] != "CQ==" {
			t.Errorf("_webSocketMessages %v", msgs)
		}
		if u := wsEntry["request"].(map[string]any)["url"]; u != "wss://t.example/ws" {
			t.Errorf("websocket url %v", u)
		}
	}
}

func TestCurlCommand(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, tc := range []struct {
		name   string
		method string
		header messages.Header
		body   string
		want   []string // curl's arguments
	}{
		{"GET", "GET", messages.Header{"Accept": {"*/*"}, "X-Forwarded-For": {"1.2.3.4"}}, "",
			[]string{"https://t.example/p?q=1", "-H", "Accept: */*"}},
		{"POST with quotes", "POST", messages.Header{"Content-Type": {"application/json"}}, `{"it's":"ok"}`,
			[]string{"https://t.example/p?q=1", "-H", "Content-Type: application/json", "--data-raw", `{"it's":"ok"}`}},
		{"DELETE", "DELETE", nil, "",
			[]string{"-X", "DELETE", "https://t.example/p?q=1"}},
		{"binary body", "PUT", nil, "\x00\x01\xff",
			[]string{"-X", "PUT", "https://t.example/p?q=1", "--data-binary", "@-", "stdin=\x00\x01\xff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{})
			x := s.BeginHTTP(messages.ID{1}, tc.method, "/p?q=1", "t.example", tc.header)
			if tc.body != "" {
				io.Copy(io.Discard, x.RequestBody(io.NopCloser(strings.NewReader(tc.body)), int64(len(tc.body))))
			}
			x.End(200, false)
			r, _ := s.snapshot(x.r.ID)
			cmd := curlCommand(r, "https")
			// One option to a line, for a person to read and edit.
			for _, l := range strings.Split(strings.TrimSuffix(cmd, "\n"), "\n")[1:] {
				if !strings.HasPrefix(l, "  -") {
					t.Errorf("line %q is not one option\n%s", l, cmd)
				}
			}
			// A curl that prints its arguments (and what it reads for
			// @-) runs the command as a shell would.
			script := `curl() { for a in "$@"; do printf '%s\n' "$a"; done; case "$*" in *@-*) printf 'stdin='; cat;; esac; }` + "\n" + cmd
			out, err := exec.Command(sh, "-c", script).Output()
			if err != nil {
				t.Fatalf("%v\n%s", err, cmd)
			}
			got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("curl got %q, want %q\n%s", got, tc.want, cmd)
			}
		})
	}
}
