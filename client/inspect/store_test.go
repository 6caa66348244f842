package inspect

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// exchange captures one complete HTTP exchange with body as its request
// body and resp as its response body.
func exchange(s *Store, id byte, reqBody, respBody string) *Exchange {
	x := s.BeginHTTP(messages.ID{id}, "POST", "/things?id=1", "t.example", messages.Header{"Content-Type": {"application/json"}})
	io.Copy(io.Discard, x.RequestBody(io.NopCloser(strings.NewReader(reqBody)), int64(len(reqBody))))
	x.Response(&http.Response{StatusCode: 200, Proto: "HTTP/1.1"}, messages.Header{"Content-Type": {"text/plain"}})
	io.Copy(io.Discard, x.ResponseBody(strings.NewReader(respBody), -1))
	x.End(200, false)
	return x
}

func ids(s *Store) []string {
	var out []string
	for _, r := range s.snapshots(0) {
		out = append(out, r.ID[:2])
	}
	return out
}

func TestBudgetEdge(t *testing.T) {
	// The cost of each exchange, measured on a store with room to spare,
	// so that the test does not restate the charging rules.
	probe := New(Options{Budget: 1 << 20})
	exchange(probe, 1, "aaaa", "bbbb")
	costA := probe.Stats().Used
	exchange(probe, 2, "cccccc", "dddddddd")
	costB := probe.Stats().Used - costA
	if costA <= 8 || costB <= costA {
		t.Fatalf("costs %d and %d: the bodies are not counted", costA, costB)
	}
	for _, tc := range []struct {
		name   string
		budget int64
		want   []string // newest first
	}{
		{"exactly the budget fits", costA + costB, []string{"02", "01"}},
		{"one byte more evicts the oldest", costA + costB - 1, []string{"02"}},
		{"room for one", costA, []string{"02"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{Budget: tc.budget})
			exchange(s, 1, "aaaa", "bbbb")
			exchange(s, 2, "cccccc", "dddddddd")
			got := ids(s)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("kept %v, want %v", got, tc.want)
			}
			if st := s.Stats(); st.Used > tc.budget {
				t.Errorf("used %d of a budget of %d", st.Used, tc.budget)
			}
			// B's bodies are kept whole only when B fits whole.
			b := s.snapshots(1)[0]
			fits := tc.budget-costB >= 0
			if truncated := b.Req.truncated || b.Resp.truncated; truncated == fits {
				t.Errorf("B's bodies kept %q and %q, truncated %v and %v; B fits whole: %v",
					b.Req.data, b.Resp.data, b.Req.truncated, b.Resp.truncated, fits)
			}
		})
	}
}

func TestGrowingExchangeEvictsOlderThenTruncates(t *testing.T) {
	probe := New(Options{Budget: 1 << 20})
	exchange(probe, 1, "", "")
	small := probe.Stats().Used

	s := New(Options{Budget: 3*small + 100})
	exchange(s, 1, "", "")
	exchange(s, 2, "", "")
	big := strings.Repeat("x", int(small)*3)
	x := exchange(s, 3, big, "")
	if got := ids(s); strings.Join(got, ",") != "03" {
		t.Fatalf("kept %v: the growing exchange should have pushed out the older ones", got)
	}
	r, _ := s.snapshot(x.r.ID)
	if !r.Req.truncated || r.Req.size != int64(len(big)) || len(r.Req.data) == 0 || len(r.Req.data) >= len(big) {
		t.Errorf("body kept %d of %d, truncated %v; want a part, marked", len(r.Req.data), r.Req.size, r.Req.truncated)
	}
	if st := s.Stats(); st.Used > st.Budget {
		t.Errorf("used %d of %d", st.Used, st.Budget)
	}
}

func TestBodyLimitEdge(t *testing.T) {
	const limit = 8
	for _, tc := range []struct {
		name      string
		body      string
		kept      string
		truncated bool
	}{
		{"under", "1234567", "1234567", false},
		{"exactly the limit", "12345678", "12345678", false},
		{"one byte over", "123456789", "12345678", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{BodyLimit: limit})
			x := exchange(s, 1, tc.body, tc.body)
			r, ok := s.snapshot(x.r.ID)
			if !ok {
				t.Fatal("not kept")
			}
			for _, b := range []body{r.Req, r.Resp} {
				if string(b.data) != tc.kept || b.truncated != tc.truncated || b.size != int64(len(tc.body)) || !b.complete {
					t.Errorf("kept %q truncated %v size %d complete %v; want %q %v %d true",
						b.data, b.truncated, b.size, b.complete, tc.kept, tc.truncated, len(tc.body))
				}
			}
		})
	}
}

func TestCaptureOff(t *testing.T) {
	t.Run("nil store", func(t *testing.T) {
		var s *Store
		x := s.BeginHTTP(messages.ID{1}, "GET", "/", "h", nil)
		if x != nil {
			t.Fatal("a nil store began an exchange")
		}
		r := io.NopCloser(strings.NewReader("x"))
		if got := x.RequestBody(r, 1); got != r {
			t.Error("a nil exchange wrapped the request body")
		}
		var w io.Reader = strings.NewReader("y")
		if got := x.ResponseBody(w, 1); got != w {
			t.Error("a nil exchange wrapped the response body")
		}
		x.Response(&http.Response{StatusCode: 200}, nil)
		x.WebSocketResponse(&http.Response{StatusCode: 101})
		x.End(200, false)
		s.Registered("http://x")
		s.Disconnected(nil)
		s.Start(Upstream{})
		s.Stop()
	})
	t.Run("negative budget", func(t *testing.T) {
		s := New(Options{Budget: -1})
		if s.Capturing() {
			t.Error("Capturing with a negative budget")
		}
		x := s.BeginHTTP(messages.ID{1}, "GET", "/", "h", nil)
		r := io.NopCloser(strings.NewReader("x"))
		if got := x.RequestBody(r, 1); got != r {
			t.Error("capture off still wraps the request body")
		}
		x.Response(&http.Response{StatusCode: 200}, nil)
		x.End(200, false)
		if st := s.Stats(); st.Exchanges != 0 || st.Used != 0 {
			t.Errorf("capture off kept %d exchanges, %d bytes", st.Exchanges, st.Used)
		}
		// The metrics still count it: the status panel works without
		// capture.
		if m := s.status().Metrics.HTTP; m.Count != 1 {
			t.Errorf("http count %d, want 1", m.Count)
		}
	})
}

func TestTeeHandsOnWhatItReads(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	s := New(Options{})
	x := s.BeginHTTP(messages.ID{1}, "POST", "/", "h", nil)
	// One byte per read: the tee must return each at once, not gather.
	r := x.RequestBody(io.NopCloser(iotest.OneByteReader(bytes.NewReader(body))), -1)
	if err := iotest.TestReader(r, body); err != nil {
		// TestReader reads in several ways; the capture sees it all once
		// per way, which is fine: only what came through is checked.
		t.Fatal(err)
	}
	got, _ := s.snapshot(x.r.ID)
	if !bytes.HasPrefix(got.Req.data, body) {
		t.Errorf("captured %d bytes, not the body read", len(got.Req.data))
	}
}

func TestClearAndReplaceSameID(t *testing.T) {
	s := New(Options{})
	exchange(s, 1, "a", "b")
	exchange(s, 1, "c", "d")
	if got := ids(s); len(got) != 1 {
		t.Fatalf("kept %v after the same ID twice, want the newer only", got)
	}
	r := s.snapshots(0)[0]
	if string(r.Req.data) != "c" {
		t.Errorf("kept body %q, want the newer %q", r.Req.data, "c")
	}
	used := s.Stats().Used
	s.Clear()
	if st := s.Stats(); st.Exchanges != 0 || st.Used != 0 || used == 0 {
		t.Errorf("after Clear: %+v (used %d before)", st, used)
	}
}
