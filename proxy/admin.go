package proxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
//   - /metrics serves g in the Prometheus format, when g is not nil.
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
	return mux
}

func adminText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}
