package inspect_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/client/inspect"
)

type liveEvent struct {
	name string
	data struct {
		Requests []struct {
			ID     string
			N      uint64
			Status int
			Done   bool
		}
		Status struct {
			First     uint64
			PublicURL string `json:"public_url"`
		}
	}
}

// events reads the inspector's live stream.
func events(t *testing.T, ctx context.Context, url string) <-chan liveEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	ch := make(chan liveEvent, 64)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev liveEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data)
			case line == "" && ev.name != "":
				ch <- ev
				ev = liveEvent{}
			}
		}
	}()
	return ch
}

// next returns the next event for which match is true.
func next(t *testing.T, ch <-chan liveEvent, what string, match func(liveEvent) bool) liveEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("the stream ended before %s", what)
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

func TestLiveEvents(t *testing.T) {
	s := inspect.New(inspect.Options{})
	srv := inspector(t, s, inspect.HandlerOptions{})
	capture(s, 1, "GET", "/before", "", 200, "x")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := events(t, ctx, srv.URL)

	ev := next(t, ch, "the first reset", func(e liveEvent) bool { return true })
	if ev.name != "reset" || len(ev.data.Requests) != 1 {
		t.Fatalf("first event %q with %d requests, want a reset with the one kept", ev.name, len(ev.data.Requests))
	}
	s.Registered("https://x.example")
	id := capture(s, 2, "POST", "/after", "b", 201, "y")
	ev = next(t, ch, "an update with the new request", func(e liveEvent) bool {
		return e.name == "update" && len(e.data.Requests) > 0 && e.data.Requests[0].ID == id
	})
	if r := ev.data.Requests[0]; r.Status != 201 || !r.Done || r.N != 2 || ev.data.Status.PublicURL != "https://x.example" {
		t.Errorf("update %+v", ev.data)
	}
	if len(ev.data.Requests) != 1 {
		t.Errorf("the update holds %d requests, want only the one that changed", len(ev.data.Requests))
	}

	s.Clear()
	ev = next(t, ch, "a reset after Clear", func(e liveEvent) bool { return e.name == "reset" })
	if len(ev.data.Requests) != 0 || ev.data.Status.First != 3 {
		t.Errorf("after Clear: %d requests, first %d; want none and 3", len(ev.data.Requests), ev.data.Status.First)
	}
}
