package proxy

import (
	"net/http"
	"net/textproto"
	"strings"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// copyResponseHeader copies a client's response headers to dst, without
// hop-by-hop headers, without the length (the proxy sets it), and without
// cookies that would reach other tunnels.
func copyResponseHeader(dst http.Header, src messages.Header, host, domain string) {
	messages.RemoveHopByHop(src)
	delete(src, "Te") // a request's header; RemoveHopByHop keeps "TE: trailers" for requests
	for k, vs := range src {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		switch ck {
		case "Content-Length":
			dst[ck] = vs[:min(len(vs), 1)]
			continue
		case "Set-Cookie":
			for _, v := range vs {
				if cookieAllowed(v, host, domain) {
					dst[ck] = append(dst[ck], v)
				}
			}
			continue
		}
		dst[ck] = append(dst[ck], vs...)
	}
}

// cookieAllowed reports whether a Set-Cookie value may pass. A cookie whose
// Domain attribute covers the shared tunnel domain would be sent to every
// tunnel, so one tunnel could plant cookies in another: it is dropped. So
// is a Domain naming any host other than the tunnel's own.
func cookieAllowed(setCookie, host, domain string) bool {
	parts := strings.Split(setCookie, ";")
	for _, attr := range parts[1:] {
		name, value, _ := strings.Cut(attr, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "domain") {
			continue
		}
		d := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(value), "."), "."))
		if d == "" {
			continue
		}
		if d != host {
			return false
		}
	}
	return true
}

// publicError writes a short, generic, plain-text error page and returns
// the status. It never includes an internal error string.
func publicError(w http.ResponseWriter, status int) int {
	msg, ok := publicMessages[status]
	if !ok {
		msg = http.StatusText(status)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
	return status
}

var publicMessages = map[int]string{
	http.StatusNotFound:              "404 Not Found: no tunnel has this address.",
	http.StatusBadGateway:            "502 Bad Gateway: the tunnel is offline or its service did not answer properly.",
	http.StatusGatewayTimeout:        "504 Gateway Timeout: the tunnel's service did not answer in time.",
	http.StatusRequestEntityTooLarge: "413 Content Too Large: the request body is over this proxy's limit.",
	http.StatusTooManyRequests:       "429 Too Many Requests: this tunnel is over its request rate; retry later.",
	http.StatusServiceUnavailable:    "503 Service Unavailable: the proxy cannot serve this right now; retry later.",
	http.StatusForbidden:             "403 Forbidden.",
	http.StatusUnauthorized:          "401 Unauthorized: this tunnel asks for a user name and password.",
	http.StatusBadRequest:            "400 Bad Request.",
	http.StatusMisdirectedRequest:    "421 Misdirected Request: this connection is for another host.",
}

// serveLanding answers the apex with a small page about the proxy.
func (p *Proxy) serveLanding(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Write([]byte(landingPage))
}

const landingPage = `<!doctype html>
<html lang="en"><meta charset="utf-8"><title>keyhole</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}code{background:#eee;padding:0 .2em}</style>
<h1>keyhole</h1>
<p>This is a keyhole proxy. It gives services behind a firewall a public address.</p>
<p>To publish a local service here, run <code>client --proxy &lt;this proxy's ws:// or wss:// URL&gt; 3000</code>.</p>
</html>
`
