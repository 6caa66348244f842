// Package demo is the small web app of the quick start (scripts/demo): a
// page that shows what a local service sees of a request that came through
// a keyhole tunnel, and a WebSocket echo at /ws that the page talks to.
//
// Call [Handler] and serve it; examples/demo does so on a local port.
package demo

import (
	"context"
	"html/template"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// Limits for the echo: the demo is meant to be opened by anyone with the
// URL, so it holds little for them.
const (
	maxMessage   = 4 << 10
	writeTimeout = 10 * time.Second
)

// Handler returns the demo app: the page at /, the echo at /ws.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", servePage)
	mux.HandleFunc("GET /ws", serveEcho)
	return mux
}

// pageData is what the page shows of the request. html/template escapes
// every value: they come from the visitor.
type pageData struct {
	Method, URI, Host, RemoteAddr               string
	ForwardedFor, ForwardedProto, ForwardedHost string
}

func servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	page.Execute(w, pageData{
		Method:         r.Method,
		URI:            r.RequestURI,
		Host:           r.Host,
		RemoteAddr:     r.RemoteAddr,
		ForwardedFor:   r.Header.Get("X-Forwarded-For"),
		ForwardedProto: r.Header.Get("X-Forwarded-Proto"),
		ForwardedHost:  r.Header.Get("X-Forwarded-Host"),
	})
}

// serveEcho sends every message back with its type. Accept's default
// origin check stays on: the page's own origin is the tunnel URL, and the
// client keeps the public Host by default, so they match.
func serveEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	c.SetReadLimit(maxMessage)
	ctx := r.Context()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err = c.Write(wctx, typ, msg)
		cancel()
		if err != nil {
			return
		}
	}
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keyhole demo</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; }
table { border-collapse: collapse; }
td, th { text-align: left; padding: .2rem .8rem .2rem 0; vertical-align: top; }
code, td { font-family: ui-monospace, monospace; font-size: .9rem; word-break: break-all; }
#log { background: #f4f4f4; padding: .5rem; min-height: 3rem; white-space: pre-wrap; }
</style>
</head>
<body>
<h1>Served through keyhole</h1>
<p>This page comes from a web app on the client's machine. The keyhole
client carried your request to it over its outbound connection to the
proxy; the app has no public port of its own.</p>

<h2>What the app saw</h2>
<table>
<tr><th>Request</th><td>{{.Method}} {{.URI}}</td></tr>
<tr><th>Host</th><td>{{.Host}}</td></tr>
<tr><th>X-Forwarded-For</th><td>{{.ForwardedFor}}</td></tr>
<tr><th>X-Forwarded-Proto</th><td>{{.ForwardedProto}}</td></tr>
<tr><th>X-Forwarded-Host</th><td>{{.ForwardedHost}}</td></tr>
<tr><th>Connection from</th><td>{{.RemoteAddr}}</td></tr>
</table>

<h2>WebSocket echo</h2>
<p><input id="msg" value="hello through the tunnel" size="30">
<button id="send">Send</button></p>
<div id="log"></div>

<script>
const log = document.getElementById("log");
const say = (s) => { log.textContent += s + "\n"; };
let ws;
function connect() {
  return new Promise((resolve, reject) => {
    if (ws && ws.readyState === WebSocket.OPEN) return resolve(ws);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(scheme + "//" + location.host + "/ws");
    ws.onopen = () => { say("connected to " + scheme + "//" + location.host + "/ws"); resolve(ws); };
    ws.onmessage = (e) => say("echo: " + e.data);
    ws.onclose = (e) => say("closed (" + e.code + ")");
    ws.onerror = () => reject(new Error("websocket error"));
  });
}
document.getElementById("send").onclick = async () => {
  const text = document.getElementById("msg").value;
  try {
    (await connect()).send(text);
    say("sent: " + text);
  } catch (e) {
    say(e.message);
  }
};
</script>
</body>
</html>
`))
