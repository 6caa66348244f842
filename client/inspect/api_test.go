package inspect_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// capture records one finished HTTP exchange in s, as the client would.
func capture(s *inspect.Store, id byte, method, uri, reqBody string, status int, respBody string) string {
	mid := messages.ID{id}
	x := s.BeginHTTP(mid, method, uri, "t.example:8080", messages.Header{
		"Content-Type":    {"application/json"},
		"X-Forwarded-For": {"203.0.113.7"},
	})
	if reqBody != "" {
		io.Copy(io.Discard, x.RequestBody(io.NopCloser(strings.NewReader(reqBody)), int64(len(reqBody))))
	}
	x.Response(&http.Response{StatusCode: status, Proto: "HTTP/1.1"}, messages.Header{"Content-Type": {"text/plain"}})
	io.Copy(io.Discard, x.ResponseBody(strings.NewReader(respBody), int64(len(respBody))))
	x.End(status, false)
	return mid.String()
}

// upstream is a fake local service for replays.
type upstream struct {
	mu   sync.Mutex
	seen []string
}

func (u *upstream) roundTrip(r *http.Request) (*http.Response, error) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.seen = append(u.seen, r.Method+" "+r.URL.RequestURI()+" "+r.Host+" "+r.Header.Get("X-Edit")+" "+string(b))
	u.mu.Unlock()
	return &http.Response{StatusCode: 202, Proto: "HTTP/1.1", Header: http.Header{"Content-Type": {"text/plain"}},
		Body: io.NopCloser(strings.NewReader("replayed " + r.Method)), ContentLength: -1}, nil
}

func (u *upstream) got() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

func TestAPITunnels(t *testing.T) {
	s := inspect.New(inspect.Options{})
	s.Start(inspect.Upstream{Addr: "http://127.0.0.1:3000"})
	defer s.Stop()
	srv := inspector(t, s, inspect.HandlerOptions{})

	// Before registering there is no tunnel: a script polling for
	// tunnels[0].public_url keeps waiting.
	v := getJSON(t, srv.URL+"/api/tunnels")
	if tl, ok := v["tunnels"].([]any); !ok || len(tl) != 0 || v["uri"] != "/api/tunnels" {
		t.Fatalf("before registering: %v", v)
	}
	s.Registered("https://abc.tunnel.example")
	v = getJSON(t, srv.URL+"/api/tunnels")
	tun := path(v, "tunnels", 0)
	for k, want := range map[string]any{
		"name": "command_line", "uri": "/api/tunnels/command_line", "public_url": "https://abc.tunnel.example", "proto": "https",
	} {
		if got := path(tun, k); got != want {
			t.Errorf("tunnel %s = %v, want %v", k, got, want)
		}
	}
	if got := path(tun, "config", "addr"); got != "http://127.0.0.1:3000" {
		t.Errorf("config.addr = %v", got)
	}
	for _, group := range []string{"conns", "http"} {
		for _, k := range []string{"count", "rate1", "rate5", "rate15", "p50", "p90", "p95", "p99"} {
			if _, ok := path(tun, "metrics", group, k).(float64); !ok {
				t.Errorf("metrics.%s.%s missing", group, k)
			}
		}
	}
	if _, ok := path(tun, "metrics", "conns", "gauge").(float64); !ok {
		t.Error("metrics.conns.gauge missing")
	}
	if got := path(getJSON(t, srv.URL+"/api/tunnels/command_line"), "public_url"); got != "https://abc.tunnel.example" {
		t.Errorf("/api/tunnels/command_line public_url = %v", got)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/api/tunnels/other", "", ""); code != 404 {
		t.Errorf("unknown tunnel: %d", code)
	}
}

func TestAPIRequests(t *testing.T) {
	s := inspect.New(inspect.Options{})
	srv := inspector(t, s, inspect.HandlerOptions{})
	ids := []string{
		capture(s, 1, "GET", "/one", "", 200, "first"),
		capture(s, 2, "POST", "/two?q=1", `{"n":2}`, 201, "second"),
		capture(s, 3, "DELETE", "/three", "", 404, "third"),
	}

	v := getJSON(t, srv.URL+"/api/requests/http")
	if v["uri"] != "/api/requests/http" {
		t.Errorf("uri %v", v["uri"])
	}
	reqs := v["requests"].([]any)
	if len(reqs) != 3 || path(reqs, 0, "id") != ids[2] || path(reqs, 2, "id") != ids[0] {
		t.Fatalf("requests, newest first: %v", reqs)
	}
	r := reqs[1]
	for _, k := range []string{"uri", "id", "tunnel_name", "remote_addr", "start", "duration", "request", "response"} {
		if _, ok := r.(map[string]any)[k]; !ok {
			t.Errorf("request has no %q", k)
		}
	}
	for k, want := range map[string]any{
		"uri": "/api/requests/http/" + ids[1], "remote_addr": "203.0.113.7", "tunnel_name": "command_line",
	} {
		if got := path(r, k); got != want {
			t.Errorf("%s = %v, want %v", k, got, want)
		}
	}
	for _, k := range []string{"method", "proto", "headers", "uri", "raw"} {
		if path(r, "request", k) == nil {
			t.Errorf("request.request has no %q", k)
		}
	}
	for _, k := range []string{"status", "status_code", "proto", "headers", "raw"} {
		if path(r, "response", k) == nil {
			t.Errorf("request.response has no %q", k)
		}
	}

	for _, tc := range []struct {
		query string
		want  []string
		code  int
	}{
		{"?limit=2", []string{ids[2], ids[1]}, 200},
		{"?limit=1", []string{ids[2]}, 200},
		{"?limit=10", []string{ids[2], ids[1], ids[0]}, 200},
		{"?limit=0", nil, 200},
		{"?tunnel_name=command_line", []string{ids[2], ids[1], ids[0]}, 200},
		{"?tunnel_name=other", nil, 200},
		{"?limit=x", nil, 400},
		{"?limit=-1", nil, 400},
	} {
		t.Run("list"+tc.query, func(t *testing.T) {
			code, _, b := call(t, "GET", srv.URL+"/api/requests/http"+tc.query, "", "")
			if code != tc.code {
				t.Fatalf("%d %s", code, b)
			}
			if code != 200 {
				return
			}
			var l struct{ Requests []struct{ ID string } }
			json.Unmarshal(b, &l)
			var got []string
			for _, r := range l.Requests {
				got = append(got, r.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ids %v, want %v", got, tc.want)
			}
		})
	}

	one := getJSON(t, srv.URL+"/api/requests/http/"+ids[1])
	if path(one, "request", "uri") != "/two?q=1" || path(one, "response", "status_code") != float64(201) {
		t.Errorf("GET one: %v", one)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/api/requests/http/nope", "", ""); code != 404 {
		t.Errorf("unknown id: %d", code)
	}

	code, _, _ := call(t, "DELETE", srv.URL+"/api/requests/http", "", "")
	if code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	if reqs := getJSON(t, srv.URL+"/api/requests/http")["requests"].([]any); len(reqs) != 0 {
		t.Errorf("%d requests after DELETE", len(reqs))
	}
}

func TestAPIReplay(t *testing.T) {
	s := inspect.New(inspect.Options{BodyLimit: 16})
	srv := inspector(t, s, inspect.HandlerOptions{})
	post := capture(s, 1, "POST", "/orders?x=1", `{"qty":2}`, 201, "ok")
	big := capture(s, 2, "PUT", "/big", strings.Repeat("b", 17), 200, "ok")
	x := s.BeginWebSocket(messages.ID{3}, "/ws", "t.example", nil)
	x.End(101, false)
	ws := messages.ID{3}.String()

	if code, _, b := call(t, "POST", srv.URL+"/api/requests/http", "application/json", `{"id":"`+post+`"}`); code != 503 {
		t.Errorf("replay while the client is not running: %d %s", code, b)
	}
	up := &upstream{}
	s.Start(inspect.Upstream{Addr: "local", RoundTrip: up.roundTrip})
	defer s.Stop()

	for _, tc := range []struct {
		name, contentType, body string
		code                    int
		upstream                string // what the local service gets
	}{
		{"as is", "application/json", `{"id":"` + post + `"}`, 204, `POST /orders?x=1 t.example:8080  {"qty":2}`},
		{"as is, form-encoded as ngrok documents", "application/x-www-form-urlencoded", "id=" + post, 204, `POST /orders?x=1 t.example:8080  {"qty":2}`},
		{"with the tunnel name", "application/json", `{"id":"` + post + `","tunnel_name":"command_line"}`, 204, `POST /orders?x=1 t.example:8080  {"qty":2}`},
		{"edited", "application/json", `{"id":"` + post + `","edit":{"method":"PATCH","uri":"/orders/7","headers":{"X-Edit":["yes"]},"body":"{\"qty\":3}"}}`, 204, `PATCH /orders/7 t.example:8080 yes {"qty":3}`},
		{"edited body in base64", "application/json", `{"id":"` + post + `","edit":{"body_base64":"AAE="}}`, 204, "POST /orders?x=1 t.example:8080  \x00\x01"},
		{"a truncated body as is", "application/json", `{"id":"` + big + `"}`, 409, ""},
		{"a truncated body edited", "application/json", `{"id":"` + big + `","edit":{"body":"short"}}`, 204, "PUT /big t.example:8080  short"},
		{"a websocket", "application/json", `{"id":"` + ws + `"}`, 400, ""},
		{"unknown id", "application/json", `{"id":"0000"}`, 404, ""},
		{"unknown tunnel", "application/json", `{"id":"` + post + `","tunnel_name":"other"}`, 404, ""},
		{"a bad uri", "application/json", `{"id":"` + post + `","edit":{"uri":"http://elsewhere/"}}`, 400, ""},
		{"a bad method", "application/json", `{"id":"` + post + `","edit":{"method":"GE T"}}`, 400, ""},
		{"not JSON", "application/json", `{`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(up.got())
			code, h, b := call(t, "POST", srv.URL+"/api/requests/http", tc.contentType, tc.body)
			if code != tc.code {
				t.Fatalf("status %d %s, want %d", code, b, tc.code)
			}
			got := up.got()[before:]
			if tc.upstream == "" {
				if len(got) != 0 {
					t.Errorf("the local service got %q", got)
				}
				return
			}
			if len(got) != 1 || got[0] != tc.upstream {
				t.Fatalf("the local service got %q, want %q", got, tc.upstream)
			}
			rec := getJSON(t, srv.URL+h.Get("Location"))
			if path(rec, "keyhole", "replay_of") == nil || path(rec, "response", "status_code") != float64(202) || path(rec, "keyhole", "done") != true {
				t.Errorf("the replay's record: %v", rec)
			}
		})
	}
}
