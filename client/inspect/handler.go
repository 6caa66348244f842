package inspect

import (
	"crypto/subtle"
	"embed"
	"encoding/json"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

//go:embed static
var staticFiles embed.FS

// HandlerOptions configure [Store.Handler]. The zero value serves on
// loopback names only, without a token.
type HandlerOptions struct {
	// Addr is the address the handler is served at, host:port. Besides
	// the loopback names (localhost, 127.0.0.1, [::1]), requests whose Host
	// names Addr's host are accepted; when Addr's host is unspecified
	// (0.0.0.0, [::]), requests to any IP address are.
	Addr string
	// AllowedHosts are more host names to accept in the Host header.
	AllowedHosts []string
	// Token, when set, is required of every request: as
	// "Authorization: Bearer TOKEN", or as the cookie that opening the page
	// once with ?token=TOKEN sets.
	Token string
}

// tokenCookie is the cookie the page's token is kept in.
const tokenCookie = "keyhole_inspector"

// Content security policies: the page runs only its own scripts and
// styles; a captured body is shown in a sandbox with no scripts, so that
// a captured page cannot act as the inspector's origin.
const (
	pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	bodyCSP = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox"
)

// Handler returns the inspector: the page at / and the API under /api/.
// It refuses requests whose Host is not a loopback name or o's address
// (DNS rebinding) with 403, and state-changing requests that are not
// same-origin with 403; see [HandlerOptions].
func (s *Store) Handler(o HandlerOptions) http.Handler {
	h := &handler{s: s, o: o, mux: http.NewServeMux()}
	if host, _, err := net.SplitHostPort(o.Addr); err == nil {
		h.addrHost = strings.ToLower(strings.TrimSuffix(host, "."))
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
			h.anyIP = true
		}
	}
	static, _ := fs.Sub(staticFiles, "static")
	files := http.FileServerFS(static)
	m := h.mux
	m.Handle("GET /", files)
	m.HandleFunc("GET /api/{$}", h.root)
	m.HandleFunc("GET /api/tunnels", h.listTunnels)
	m.HandleFunc("GET /api/tunnels/{name}", h.getTunnel)
	m.HandleFunc("GET /api/requests/http", h.listRequests)
	m.HandleFunc("POST /api/requests/http", h.replay)
	m.HandleFunc("DELETE /api/requests/http", h.clear)
	m.HandleFunc("GET /api/requests/http/{id}", h.getRequest)
	m.HandleFunc("GET /api/requests/http/{id}/{part}/body", h.getBody)
	m.HandleFunc("GET /api/requests/http/{id}/{part}/view", h.getView)
	m.HandleFunc("GET /api/requests/http/{id}/curl", h.getCurl)
	m.HandleFunc("GET /api/requests/http/{id}/har", h.getHAR)
	m.HandleFunc("GET /api/requests/har", h.getAllHAR)
	m.HandleFunc("GET /api/status", h.getStatus)
	m.HandleFunc("GET /api/events", h.events)
	return h
}

type handler struct {
	s        *Store
	o        HandlerOptions
	mux      *http.ServeMux
	addrHost string
	anyIP    bool
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Content-Security-Policy", pageCSP)
	if !h.hostAllowed(r.Host) {
		// A page on another site whose name resolves to this machine
		// (DNS rebinding) would be same-origin with us but for this.
		apiError(w, http.StatusForbidden, "inspector: refused Host "+strconv.Quote(r.Host)+"; open it at http://127.0.0.1 or localhost (DNS rebinding protection)")
		return
	}
	if h.o.Token != "" && !h.authorized(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if !h.sameOrigin(r) {
			apiError(w, http.StatusForbidden, "inspector: cross-origin "+r.Method+" refused; changes are made from the inspector's own page")
			return
		}
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}

// hostAllowed reports whether a request addressed to host may be served.
// Only names that cannot be made to point here by someone else's DNS
// qualify: loopback names and IP literals that reach this listener.
func (h *handler) hostAllowed(host string) bool {
	name := host
	if hn, _, err := net.SplitHostPort(host); err == nil {
		name = hn
	}
	name = strings.ToLower(strings.TrimSuffix(strings.Trim(name, "[]"), "."))
	if name == "" {
		return false
	}
	if name == "localhost" {
		return true
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		return ip.IsLoopback() || h.anyIP || name == h.addrHost
	}
	if name == h.addrHost {
		return true
	}
	for _, a := range h.o.AllowedHosts {
		if strings.EqualFold(name, strings.TrimSuffix(a, ".")) {
			return true
		}
	}
	return false
}

// authorized checks the token. A page opened with ?token= gets it as a
// cookie and is sent to the same address without it.
func (h *handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	if h.bearer(r) {
		return true
	}
	if c, err := r.Cookie(tokenCookie); err == nil && h.tokenIs(c.Value) {
		return true
	}
	if q := r.URL.Query(); q.Has("token") && h.tokenIs(q.Get("token")) && r.Method == http.MethodGet {
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: h.o.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		q.Del("token")
		u := *r.URL
		u.RawQuery = q.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return false
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="keyhole inspector"`)
	apiError(w, http.StatusUnauthorized, "inspector: token required: open the page once as /?token=TOKEN, or send Authorization: Bearer TOKEN")
	return false
}

func (h *handler) bearer(r *http.Request) bool {
	v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && h.o.Token != "" && h.tokenIs(strings.TrimSpace(v))
}

func (h *handler) tokenIs(v string) bool {
	return subtle.ConstantTimeCompare([]byte(v), []byte(h.o.Token)) == 1
}

// sameOrigin reports whether a state-changing request may proceed: a
// browser's must be same-origin (Sec-Fetch-Site, Origin); a request with
// neither header is not a browser's cross-site one, and is accepted from
// this machine or with the bearer token.
func (h *handler) sameOrigin(r *http.Request) bool {
	site := r.Header.Get("Sec-Fetch-Site")
	if site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		scheme := "http://"
		if r.TLS != nil {
			scheme = "https://"
		}
		return strings.EqualFold(origin, scheme+r.Host)
	}
	if site != "" {
		return true
	}
	return loopbackPeer(r.RemoteAddr) || h.bearer(r)
}

func loopbackPeer(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// apiError answers with an error in the shape of ngrok's agent API.
func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"status_code": code, "msg": msg, "details": map[string]any{}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (h *handler) root(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"uri": "/api/", "tunnels": "/api/tunnels", "requests": "/api/requests/http", "status": "/api/status",
	})
}

func (h *handler) listTunnels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, apiTunnelList{Tunnels: h.s.tunnels(), URI: "/api/tunnels"})
}

func (h *handler) getTunnel(w http.ResponseWriter, r *http.Request) {
	for _, t := range h.s.tunnels() {
		if t.Name == r.PathValue("name") {
			writeJSON(w, http.StatusOK, t)
			return
		}
	}
	apiError(w, http.StatusNotFound, "tunnel not found")
}

func (h *handler) listRequests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			apiError(w, http.StatusBadRequest, "limit must be a whole number")
			return
		}
		limit = n
		if n == 0 {
			writeJSON(w, http.StatusOK, apiRequestList{URI: "/api/requests/http", Requests: []apiRequest{}})
			return
		}
	}
	if name := q.Get("tunnel_name"); name != "" && name != h.s.o.TunnelName {
		writeJSON(w, http.StatusOK, apiRequestList{URI: "/api/requests/http", Requests: []apiRequest{}})
		return
	}
	now := time.Now()
	recs := h.s.snapshots(limit)
	list := apiRequestList{URI: "/api/requests/http", Requests: make([]apiRequest, 0, len(recs))}
	for _, rec := range recs {
		list.Requests = append(list.Requests, h.s.apiRequest(rec, now))
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *handler) clear(w http.ResponseWriter, r *http.Request) {
	h.s.Clear()
	w.WriteHeader(http.StatusNoContent)
}

// record finds the exchange a request names, or answers 404.
func (h *handler) record(w http.ResponseWriter, r *http.Request) (record, bool) {
	rec, ok := h.s.snapshot(r.PathValue("id"))
	if !ok {
		apiError(w, http.StatusNotFound, "no captured request with this id (it may have been evicted)")
	}
	return rec, ok
}

func (h *handler) getRequest(w http.ResponseWriter, r *http.Request) {
	if rec, ok := h.record(w, r); ok {
		writeJSON(w, http.StatusOK, h.s.apiRequest(rec, time.Now()))
	}
}

// part returns the body and headers a request names.
func part(w http.ResponseWriter, r *http.Request, rec record) (body, http.Header, bool) {
	switch r.PathValue("part") {
	case "request":
		return rec.Req, rec.ReqHeader, true
	case "response":
		return rec.Resp, rec.RespHeader, true
	}
	apiError(w, http.StatusNotFound, "part must be request or response")
	return body{}, nil, false
}

// getBody serves a kept body as it was, with its Content-Type, for images
// and downloads. The sandbox in its policy keeps a captured page from
// running as the inspector.
func (h *handler) getBody(w http.ResponseWriter, r *http.Request) {
	rec, ok := h.record(w, r)
	if !ok {
		return
	}
	b, hdr, ok := part(w, r, rec)
	if !ok {
		return
	}
	ct := hdr.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Security-Policy", bodyCSP)
	w.Header().Set("Content-Type", ct)
	if ce := hdr.Get("Content-Encoding"); ce != "" && r.URL.Query().Get("download") == "" {
		// The browser decodes what the local service encoded.
		w.Header().Set("Content-Encoding", ce)
	}
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", `attachment; filename="`+rec.ID+"-"+r.PathValue("part")+`.bin"`)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
	w.Write(b.data)
}

func (h *handler) getView(w http.ResponseWriter, r *http.Request) {
	rec, ok := h.record(w, r)
	if !ok {
		return
	}
	b, hdr, ok := part(w, r, rec)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, Render(hdr.Get("Content-Type"), hdr.Get("Content-Encoding"), b.data, b.truncated || (b.size > 0 && !b.complete)))
}

func (h *handler) getCurl(w http.ResponseWriter, r *http.Request) {
	if rec, ok := h.record(w, r); ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(curlCommand(rec, h.s.publicScheme())))
	}
}

func (h *handler) getHAR(w http.ResponseWriter, r *http.Request) {
	if rec, ok := h.record(w, r); ok {
		h.writeHAR(w, r, []record{rec})
	}
}

func (h *handler) getAllHAR(w http.ResponseWriter, r *http.Request) {
	h.writeHAR(w, r, h.s.snapshots(0))
}

func (h *handler) writeHAR(w http.ResponseWriter, r *http.Request, recs []record) {
	mask := r.URL.Query().Get("mask") != ""
	name := "keyhole.har"
	if len(recs) == 1 {
		name = "keyhole-" + recs[0].ID + ".har"
	}
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	writeJSON(w, http.StatusOK, harOf(recs, h.s.publicScheme(), mask))
}

func (h *handler) getStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.s.status())
}

// publicScheme is the scheme of the tunnel's public URL, for the URLs of
// curl commands and HAR entries.
func (s *Store) publicScheme() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if scheme, _, ok := strings.Cut(s.publicURL, "://"); ok {
		return scheme
	}
	return "http"
}
