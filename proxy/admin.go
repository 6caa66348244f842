package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// readyTimeout bounds one readiness check, so a probe with a short timeout
// of its own gets an answer rather than a hang.
const readyTimeout = time.Second

// AdminHandler returns the handler of the admin listener, which belongs on
// an address the public cannot reach:
//
//   - /healthz answers 200 while the process serves at all (liveness);
//   - /readyz answers 200 when [Proxy.Ready] does, and 503 with the reason
//     while the bus is unreachable or the instance is draining (readiness:
//     a load balancer should send it nothing new);
//   - /metrics serves g in the Prometheus format, when g is not nil;
//   - POST /revoke takes a [RevokeRequest] as JSON and calls
//     [Proxy.Revoke], when Config.AdminToken is set (else 404), for a
//     caller with "Authorization: Bearer <AdminToken>" (else 401).
func (p *Proxy) AdminHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		adminText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		switch err := p.Ready(ctx); {
		case err == nil:
			adminText(w, http.StatusOK, "ready")
		case errors.Is(err, ErrDraining):
			adminText(w, http.StatusServiceUnavailable, "not ready: draining")
		default:
			// The admin listener is private: the operator wants the cause.
			adminText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		}
	})
	if g != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	if p.cfg.AdminToken != "" {
		mux.HandleFunc("POST /revoke", p.serveRevoke)
	}
	return mux
}

func adminText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}

// RevokeRequest is the JSON body of POST /revoke on the admin handler, and
// its answer: {"kind": "key|name|token", "value": "...", "until": "..."}.
type RevokeRequest struct {
	Kind RevocationKind `json:"kind"`
	// Value is a key's hostname label (or its full hostname), a friendly
	// name, or a token ID.
	Value string `json:"value"`
	// Until is when the revocation lapses, in RFC 3339; empty: see
	// Revocation.Until. In the answer, empty means never.
	Until string `json:"until,omitempty"`
}

// maxRevokeBody bounds a POST /revoke body.
const maxRevokeBody = 4 << 10

// revokeTimeout bounds one revocation's round trip to the registry.
const revokeTimeout = 10 * time.Second

// Revocation checks r and returns it as a Revocation: a key given as a
// full hostname becomes its label, a name "<name>.<domain>" becomes name,
// and Until must be in the future of now.
func (r RevokeRequest) Revocation(now time.Time) (Revocation, error) {
	v := strings.TrimSpace(r.Value)
	if v == "" {
		return Revocation{}, errors.New("no value")
	}
	rv := Revocation{Kind: r.Kind}
	switch r.Kind {
	case RevokeKey:
		label, err := parseLabel(v)
		if err != nil {
			return Revocation{}, err
		}
		rv.Value = label
	case RevokeName:
		name, _, _ := strings.Cut(strings.ToLower(v), ".")
		if err := messages.CheckName(name); err != nil {
			return Revocation{}, err
		}
		rv.Value = name
	case RevokeToken:
		if err := checkTokenID(v); err != nil {
			return Revocation{}, err
		}
		rv.Value = v
	default:
		return Revocation{}, fmt.Errorf("kind %q: want key, name or token", r.Kind)
	}
	if r.Until != "" {
		t, err := time.Parse(time.RFC3339, r.Until)
		if err != nil {
			return Revocation{}, fmt.Errorf("until %q: want an RFC 3339 time like 2026-01-02T15:04:05Z", r.Until)
		}
		if !t.After(now) {
			return Revocation{}, fmt.Errorf("until %s is not in the future", r.Until)
		}
		rv.Until = t
	}
	return rv, nil
}

// revocationLapses returns when rv lapses, as Revocation.Until documents
// it: Until, or for a token whose ID says when it expires, then; ok is
// false for never.
func revocationLapses(rv Revocation) (t time.Time, ok bool) {
	if !rv.Until.IsZero() {
		return rv.Until, true
	}
	if rv.Kind == RevokeToken {
		return TokenIDExpiry(rv.Value)
	}
	return time.Time{}, false
}

func (p *Proxy) serveRevoke(w http.ResponseWriter, r *http.Request) {
	if !p.adminAuthorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyhole admin"`)
		adminText(w, http.StatusUnauthorized, "a valid admin token is required")
		return
	}
	var req RevokeRequest
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRevokeBody))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			adminText(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxRevokeBody))
			return
		}
		adminText(w, http.StatusBadRequest, `want JSON {"kind": "key|name|token", "value": "...", "until": "RFC 3339 time or empty"}`)
		return
	}
	if d.More() {
		adminText(w, http.StatusBadRequest, "one JSON object only")
		return
	}
	rv, err := req.Revocation(time.Now())
	if err != nil {
		adminText(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), revokeTimeout)
	defer cancel()
	if err := p.Revoke(ctx, rv); err != nil {
		// The admin listener is private: the operator wants the cause.
		adminText(w, http.StatusServiceUnavailable, "revoke failed: "+err.Error())
		return
	}
	out := RevokeRequest{Kind: rv.Kind, Value: rv.Value}
	if t, ok := revocationLapses(rv); ok {
		out.Until = t.UTC().Format(time.RFC3339)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// adminAuthorized compares the request's bearer token with AdminToken in
// constant time: both are hashed first, so neither length shows.
func (p *Proxy) adminAuthorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	want := sha256.Sum256([]byte(p.cfg.AdminToken))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
