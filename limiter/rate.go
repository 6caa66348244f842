package limiter

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Rate limits events per second with a burst, for one client connection.
// A nil *Rate allows everything.
type Rate struct {
	l *rate.Limiter
}

// NewRate returns a limiter allowing perSecond events on average with bursts
// of burst. perSecond <= 0 means no limit, and NewRate returns nil.
func NewRate(perSecond float64, burst int) *Rate {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &Rate{l: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// Allow reports whether one event may happen now. When it may not, it
// returns how long until it could, rounded up to whole seconds and at least
// one, for a Retry-After header.
func (r *Rate) Allow() (ok bool, retryAfter time.Duration) {
	if r == nil {
		return true, 0
	}
	now := time.Now()
	res := r.l.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	d := res.DelayFrom(now)
	if d == 0 {
		return true, 0
	}
	// We do not wait, so give the token back.
	res.CancelAt(now)
	return false, time.Duration(math.Ceil(d.Seconds())) * time.Second
}
