package inspect

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

const (
	// pageRows is how many of the newest exchanges the page is sent when
	// it connects; the API has them all.
	pageRows = 2000
	// coalesce gathers the changes of a busy tunnel into one update.
	coalesce = 100 * time.Millisecond
	// statusEvery refreshes the status panel (rates move with time) and
	// the sizes of bodies still streaming.
	statusEvery = time.Second
)

type apiEvent struct {
	Requests []apiSummary `json:"requests"`
	Status   apiStatus    `json:"status"`
}

// events streams the page's live list as server-sent events: "reset" with
// the newest exchanges, then "update" with those that changed. Rows whose
// n is below status.first have been dropped.
func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(event string, v apiEvent) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	ctx := r.Context()
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil {
		return
	}
	seq, epoch, ev := h.s.changedSince(0, true)
	if !send("reset", ev) {
		return
	}
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.s.changes():
			t := time.NewTimer(coalesce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		case <-tick.C:
		}
		nseq, nepoch, ev := h.s.changedSince(seq, false)
		name := "update"
		if nepoch != epoch {
			nseq, nepoch, ev = h.s.changedSince(0, true)
			name = "reset"
		}
		if !send(name, ev) {
			return
		}
		seq, epoch = nseq, nepoch
	}
}

// changedSince returns the exchanges changed after seq (the newest
// pageRows of all of them for reset), the current seq and epoch, and the
// status.
func (s *Store) changedSince(seq uint64, reset bool) (uint64, uint64, apiEvent) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := apiEvent{Requests: []apiSummary{}, Status: s.statusLocked(now)}
	for i := len(s.list) - 1; i >= 0; i-- {
		x := s.list[i]
		if reset && len(ev.Requests) >= pageRows {
			break
		}
		if reset || x.r.Seq > seq {
			ev.Requests = append(ev.Requests, summaryOf(x.view(), now))
		}
	}
	return s.seq, s.epoch, ev
}
