package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestNextWaitAfterMove: after a move off a draining instance, refusals
// from an instance that takes no connections are tried again quickly, a
// bounded number of times and without growing the backoff; anything else,
// and anything after those tries, backs off as usual.
func TestNextWaitAfterMove(t *testing.T) {
	unavailable := fmt.Errorf("dial proxy: 503 (%w)", errUnavailable)
	backoff, moving := minBackoff, movingTries
	for i := range movingTries {
		var wait time.Duration
		wait, backoff, moving = nextWait(backoff, moving, unavailable)
		if wait < movingWait/2 || wait > movingWait || backoff != minBackoff {
			t.Fatalf("quick try %d: wait %v, backoff %v; want %v..%v and %v", i, wait, backoff, movingWait/2, movingWait, minBackoff)
		}
	}
	if moving != 0 {
		t.Fatalf("quick tries left after %d: %d", movingTries, moving)
	}
	wait, next, _ := nextWait(backoff, moving, unavailable)
	if wait < minBackoff/2 || wait > minBackoff || next != 2*minBackoff {
		t.Fatalf("after the quick tries: wait %v, backoff %v; want %v..%v and %v", wait, next, minBackoff/2, minBackoff, 2*minBackoff)
	}
	// Another failure during a move is not hurried.
	wait, next, left := nextWait(minBackoff, movingTries, errors.New("connection lost: EOF"))
	if wait < minBackoff/2 || next != 2*minBackoff || left != movingTries {
		t.Fatalf("other error while moving: wait %v, backoff %v, tries left %d", wait, next, left)
	}
	// The backoff stops growing at its maximum.
	if _, next, _ := nextWait(maxBackoff, 0, unavailable); next != maxBackoff {
		t.Fatalf("backoff past the maximum: %v", next)
	}
}

// TestDialUnavailable: a 503 answer to the connection (a draining
// instance) is marked errUnavailable; other refusals are not.
func TestDialUnavailable(t *testing.T) {
	for _, code := range []int{http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusForbidden} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no", code)
		}))
		s := (&runner{c: &Client{}}).newSession()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/_keyhole/v2/connect", "not found")
		cancel()
		srv.Close()
		if err == nil {
			t.Fatalf("%d: dial succeeded", code)
		}
		if got, want := errors.Is(err, errUnavailable), code == http.StatusServiceUnavailable; got != want {
			t.Errorf("%d: errors.Is(%v, errUnavailable) = %v, want %v", code, err, got, want)
		}
	}
}

// TestGoingAwayAtRegistrationIsUnavailable: a proxy that closes with
// "going away" while the client registers (it began draining meanwhile)
// is an instance not taking connections; the same close on a connection
// that was serving is not.
func TestGoingAwayAtRegistrationIsUnavailable(t *testing.T) {
	ce := websocket.CloseError{Code: websocket.StatusGoingAway, Reason: "proxy shutting down, reconnect"}
	if err := closeError(ce, true); !errors.Is(err, errUnavailable) {
		t.Errorf("closeError(going away, registering) = %v, want errUnavailable", err)
	}
	if err := closeError(ce, false); errors.Is(err, errUnavailable) {
		t.Errorf("closeError(going away, serving) = %v, want no errUnavailable", err)
	}
}
