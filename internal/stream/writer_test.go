package stream_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// idOf names the streams of a writer test by letter.
func idOf(name string) (id messages.ID) {
	copy(id[:], name)
	return id
}

// frame encodes a Data frame of stream name whose payload says label, n
// bytes long at least: Take's results are read back through label.
func frame(name, label string, n int) []byte {
	payload := []byte(label)
	if len(payload) < n {
		payload = append(payload, bytes.Repeat([]byte{'.'}, n-len(payload))...)
	}
	return messages.Encode(&messages.Data{ID: idOf(name), Data: payload})
}

// ctl encodes a control frame that says label.
func ctl(label string) []byte {
	return messages.Encode(&messages.Error{ID: idOf("ctl"), Code: messages.CodeCanceled, Reason: label})
}

// labels reads back what frames say, in order.
func labels(t *testing.T, frames [][]byte) []string {
	t.Helper()
	var out []string
	for _, f := range frames {
		m, err := messages.Decode(f)
		if err != nil {
			t.Fatalf("taken frame does not decode: %v", err)
		}
		switch m := m.(type) {
		case *messages.Data:
			label, _, _ := strings.Cut(string(m.Data), ".")
			out = append(out, label)
		case *messages.Error:
			out = append(out, m.Reason)
		default:
			t.Fatalf("taken %T", m)
		}
	}
	return out
}

func takeAll(t *testing.T, w *stream.Writer) []string {
	t.Helper()
	return labels(t, w.Take(nil, 1<<30))
}

func same(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestWriterControlFirst(t *testing.T) {
	w := stream.NewWriter(1<<20, 1<<20)
	w.Data(idOf("a"), frame("a", "a1", 0), 2)
	w.Data(idOf("b"), frame("b", "b1", 0), 2)
	w.Control(ctl("c1"))
	w.Data(idOf("a"), frame("a", "a2", 0), 2)
	w.Control(ctl("c2"))
	if got, want := takeAll(t, w), []string{"c1", "c2", "a1", "b1", "a2"}; !same(got, want) {
		t.Fatalf("took %v, want %v", got, want)
	}
	if got := w.Take(nil, 1<<30); len(got) != 0 {
		t.Fatalf("a second Take got %d frames", len(got))
	}
}

// roundRobin is the order in which streams that take turns a frame at a
// time send their backlogs: counts[i] frames of stream i, named
// "<i><frame>".
func roundRobin(counts []int) []string {
	var out []string
	for f := 0; ; f++ {
		any := false
		for i, n := range counts {
			if f < n {
				out = append(out, fmt.Sprintf("%c%d", 'a'+i, f))
				any = true
			}
		}
		if !any {
			return out
		}
	}
}

func queueBacklogs(w *stream.Writer, counts []int, size int) {
	for i, n := range counts {
		name := string(rune('a' + i))
		for f := range n {
			w.Data(idOf(name), frame(name, fmt.Sprintf("%s%d", name, f), size), size)
		}
	}
}

// Streams take turns a frame at a time, whatever their backlogs, and each
// keeps its own order.
func TestWriterTakesTurns(t *testing.T) {
	for _, tc := range []struct {
		name   string
		counts []int
		size   int // data bytes per frame
		take   func(w *stream.Writer) []string
	}{
		{"small frames, one Take", []int{10, 3}, 10, func(w *stream.Writer) []string { return takeAll(t, w) }},
		{"small frames, three streams", []int{5, 1, 3}, 10, func(w *stream.Writer) []string { return takeAll(t, w) }},
		{"one frame per Take", []int{6, 2}, 10, func(w *stream.Writer) []string {
			var out []string
			for range 20 {
				out = append(out, labels(t, w.Take(nil, 1))...)
			}
			return out
		}},
		// Full frames through Flush: a Batch holds one full frame at most,
		// so each write is one stream's turn.
		{"full frames through Flush", []int{4, 2}, messages.MaxData, func(w *stream.Writer) []string {
			return flushed(t, w)
		}},
		{"full frames, three streams through Flush", []int{3, 3, 1}, messages.MaxData, func(w *stream.Writer) []string {
			return flushed(t, w)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := stream.NewWriter(1<<30, 1<<20)
			queueBacklogs(w, tc.counts, tc.size)
			got, want := tc.take(w), roundRobin(tc.counts)
			if !same(got, want) {
				t.Fatalf("frames went out as\n%v\nwant turns of a frame each\n%v", got, want)
			}
		})
	}
}

// flushed flushes w and reads back every frame written, unpacking Batches.
func flushed(t *testing.T, w *stream.Writer) []string {
	t.Helper()
	var frames [][]byte
	if err := w.Flush(func(f []byte) error {
		frames = append(frames, unbatch(t, f)...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return labels(t, frames)
}

// unbatch returns copies of the frames that one write carries.
func unbatch(t *testing.T, f []byte) [][]byte {
	t.Helper()
	if len(f) > messages.MaxFrame {
		t.Errorf("wrote a frame of %d bytes, over MaxFrame", len(f))
	}
	m, err := messages.Decode(f)
	if err != nil {
		t.Fatalf("written frame does not decode: %v", err)
	}
	if b, ok := m.(*messages.Batch); ok {
		var out [][]byte
		for _, in := range b.Frames {
			out = append(out, bytes.Clone(in))
		}
		return out
	}
	return [][]byte{bytes.Clone(f)}
}

func TestWriterConnCredit(t *testing.T) {
	t.Run("data waits for credit, Credit releases it", func(t *testing.T) {
		w := stream.NewWriter(100, 1<<20)
		w.Data(idOf("a"), frame("a", "a0", 60), 60)
		w.Data(idOf("a"), frame("a", "a1", 60), 60)
		if got := takeAll(t, w); !same(got, []string{"a0"}) {
			t.Fatalf("took %v with credit for one frame", got)
		}
		w.Credit(19) // 59: one short
		if got := takeAll(t, w); len(got) != 0 {
			t.Fatalf("took %v with 59 credit for a frame of 60", got)
		}
		w.Credit(1)
		if got := takeAll(t, w); !same(got, []string{"a1"}) {
			t.Fatalf("took %v with exactly the credit", got)
		}
	})
	t.Run("control frames need no credit", func(t *testing.T) {
		w := stream.NewWriter(0, 1<<20)
		w.Data(idOf("a"), frame("a", "a0", 10), 10)
		w.Control(ctl("c"))
		if got := takeAll(t, w); !same(got, []string{"c"}) {
			t.Fatalf("took %v at zero credit", got)
		}
	})
	t.Run("a zero-credit End is not held back", func(t *testing.T) {
		w := stream.NewWriter(0, 1<<20)
		w.Data(idOf("a"), frame("a", "a0", 10), 10)
		w.Data(idOf("b"), frame("b", "bEnd", 0), 0)
		if got := takeAll(t, w); !same(got, []string{"bEnd"}) {
			t.Fatalf("took %v at zero credit", got)
		}
		w.Credit(10)
		if got := takeAll(t, w); !same(got, []string{"a0"}) {
			t.Fatalf("took %v once credit came", got)
		}
	})
	t.Run("a stream's End keeps its place behind its data", func(t *testing.T) {
		w := stream.NewWriter(0, 1<<20)
		w.Data(idOf("a"), frame("a", "a0", 10), 10)
		w.Data(idOf("a"), frame("a", "aEnd", 0), 0)
		if got := takeAll(t, w); len(got) != 0 {
			t.Fatalf("took %v: the End overtook its stream's data", got)
		}
		w.Credit(10)
		if got := takeAll(t, w); !same(got, []string{"a0", "aEnd"}) {
			t.Fatalf("took %v", got)
		}
	})
	t.Run("a stream short of credit holds back nobody", func(t *testing.T) {
		w := stream.NewWriter(50, 1<<20)
		w.Data(idOf("a"), frame("a", "a0", 60), 60)
		w.Data(idOf("b"), frame("b", "b0", 30), 30)
		w.Data(idOf("b"), frame("b", "b1", 20), 20)
		if got := takeAll(t, w); !same(got, []string{"b0", "b1"}) {
			t.Fatalf("took %v", got)
		}
	})
}

func TestWriterForget(t *testing.T) {
	w := stream.NewWriter(1<<20, 1<<20)
	for i := range 3 {
		w.Data(idOf("a"), frame("a", fmt.Sprint("a", i), 0), 0)
	}
	w.Data(idOf("b"), frame("b", "b0", 0), 0)
	if q := w.Queued(idOf("a")); q != 3 {
		t.Fatalf("Queued(a) = %d, want 3", q)
	}
	w.Forget(idOf("a"))
	w.Forget(idOf("unknown"))
	if q := w.Queued(idOf("a")); q != 0 {
		t.Fatalf("Queued(a) after Forget = %d", q)
	}
	if got := takeAll(t, w); !same(got, []string{"b0"}) {
		t.Fatalf("took %v after Forget(a)", got)
	}
	// The ID may be used again.
	w.Data(idOf("a"), frame("a", "again", 0), 0)
	if got := takeAll(t, w); !same(got, []string{"again"}) {
		t.Fatalf("took %v", got)
	}
	// Forget between Data and Take of a stream that is in the turn order,
	// then new frames for it: only the new ones go, once.
	w.Data(idOf("a"), frame("a", "old", 0), 0)
	w.Forget(idOf("a"))
	w.Data(idOf("a"), frame("a", "new", 0), 0)
	if got := takeAll(t, w); !same(got, []string{"new"}) {
		t.Fatalf("took %v", got)
	}
}

// TestWriterResetDropsData: a stream's Error, which goes ahead of all data,
// takes the stream's data still queued with it, or that data would reach
// the peer after the reset, for a stream the peer has forgotten.
func TestWriterResetDropsData(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset func(w *stream.Writer, m *messages.Error) bool
	}{
		{"Send", func(w *stream.Writer, m *messages.Error) bool { return w.Send(m) }},
		{"Reset", func(w *stream.Writer, m *messages.Error) bool { return w.Reset(m.ID, messages.Encode(m)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := stream.NewWriter(1<<20, 1<<20)
			w.Data(idOf("a"), frame("a", "a1", 0), 2)
			w.Data(idOf("b"), frame("b", "b1", 0), 2)
			w.Data(idOf("a"), frame("a", "a2", 0), 2)
			if !tc.reset(w, &messages.Error{ID: idOf("a"), Code: messages.CodeTooLarge, Reason: "reset a"}) {
				t.Fatal("the reset was refused")
			}
			if got, want := takeAll(t, w), []string{"reset a", "b1"}; !same(got, want) {
				t.Fatalf("took %v, want %v", got, want)
			}
		})
	}
	// A connection-level Error, and any other frame, leaves data alone.
	w := stream.NewWriter(1<<20, 1<<20)
	w.Data(idOf("a"), frame("a", "a1", 0), 2)
	w.Send(&messages.Error{Code: messages.CodeGoingAway, Reason: "going away"})
	w.Send(&messages.Credit{ID: idOf("a"), Increment: 1})
	frames := w.Take(nil, 1<<30)
	if len(frames) != 3 {
		t.Fatalf("took %d frames, want the Error, the Credit and a1", len(frames))
	}
	if got := labels(t, frames[2:]); !same(got, []string{"a1"}) {
		t.Fatalf("took %v last, want a1", got)
	}
}

// TestWriterOnReady: every way of making a frame writable runs OnReady's
// function, as it signals Ready; a frame refused does not.
func TestWriterOnReady(t *testing.T) {
	w := stream.NewWriter(1<<20, 1<<20)
	calls := 0
	w.OnReady(func() { calls++ })
	for _, step := range []struct {
		name string
		do   func()
	}{
		{"Control", func() { w.Control(ctl("c")) }},
		{"Data", func() { w.Data(idOf("a"), frame("a", "a1", 0), 2) }},
		{"Credit", func() { w.Credit(1) }},
		{"Send", func() { w.Send(&messages.Credit{ID: idOf("a"), Increment: 1}) }},
		{"Reset", func() { w.Reset(idOf("a"), ctl("reset a")) }},
	} {
		before := calls
		step.do()
		if calls != before+1 {
			t.Fatalf("%s: OnReady ran %d times, want once", step.name, calls-before)
		}
	}
	w.Close()
	before := calls
	w.Control(ctl("refused"))
	w.Data(idOf("a"), frame("a", "refused", 0), 2)
	if calls != before {
		t.Fatalf("refused frames ran OnReady %d times", calls-before)
	}
}

func TestWriterClose(t *testing.T) {
	w := stream.NewWriter(1<<20, 1<<20)
	w.Control(ctl("c"))
	w.Data(idOf("a"), frame("a", "a0", 0), 0)
	w.Close()
	if got := takeAll(t, w); len(got) != 0 {
		t.Fatalf("took %v after Close", got)
	}
	if w.Control(ctl("c")) {
		t.Error("Control accepted a frame after Close")
	}
	if w.Data(idOf("a"), frame("a", "a1", 0), 0) {
		t.Error("Data accepted a frame after Close")
	}
	if q := w.Queued(idOf("a")); q != 0 {
		t.Errorf("Queued after Close = %d", q)
	}
	w.Credit(10)
	w.Forget(idOf("a"))
}

func TestWriterControlLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []int // frames offered, in bytes
		ok    []bool
	}{
		{"up to the limit", []int{60, 40}, []bool{true, true}},
		{"one byte over", []int{60, 41}, []bool{true, false}},
		{"full, then a small one", []int{100, 1}, []bool{true, false}},
		{"a big frame into an empty queue", []int{150}, []bool{true}},
		{"nothing behind a big frame", []int{150, 1}, []bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const maxControl = 100
			w := stream.NewWriter(0, maxControl)
			for i, n := range tc.sizes {
				if got := w.Control(make([]byte, n)); got != tc.ok[i] {
					t.Fatalf("Control(%d bytes) #%d = %v, want %v", n, i, got, tc.ok[i])
				}
			}
			// Once taken, the queue has room again.
			if len(w.Take(nil, 1<<20)) == 0 {
				t.Fatal("nothing taken")
			}
			if !w.Control(make([]byte, maxControl)) {
				t.Fatal("Control refused into an emptied queue")
			}
		})
	}
}

func TestWriterTakeMax(t *testing.T) {
	const size = 100 // bytes per frame, framing included
	ctlFrame := func() []byte { return make([]byte, size) }
	dataFrame := func() []byte { return make([]byte, size) }
	for _, tc := range []struct {
		name        string
		control     int
		data        int
		max         int
		wantPerTake []int
	}{
		{"control frames within max", 5, 0, 250, []int{2, 2, 1}},
		{"at least one frame over max", 3, 0, 50, []int{1, 1, 1}},
		{"at least one data frame over max", 0, 2, 50, []int{1, 1}},
		{"data frames within max", 0, 5, 250, []int{2, 2, 1}},
		{"control and data within max", 2, 3, 300, []int{3, 2}},
		{"exactly max", 4, 0, 200, []int{2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := stream.NewWriter(1<<20, 1<<20)
			for range tc.control {
				w.Control(ctlFrame())
			}
			for range tc.data {
				w.Data(idOf("a"), dataFrame(), 1)
			}
			var got []int
			for range 10 {
				taken := w.Take(nil, tc.max)
				if len(taken) == 0 {
					break
				}
				bytes := 0
				for _, f := range taken {
					bytes += len(f)
				}
				if len(taken) > 1 && bytes > tc.max {
					t.Fatalf("took %d bytes in %d frames, max %d", bytes, len(taken), tc.max)
				}
				got = append(got, len(taken))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantPerTake) {
				t.Fatalf("frames per Take %v, want %v", got, tc.wantPerTake)
			}
		})
	}
}

func TestWriterTakeAppends(t *testing.T) {
	w := stream.NewWriter(1<<20, 1<<20)
	w.Control(ctl("c"))
	buf := [][]byte{ctl("already")}
	if got := labels(t, w.Take(buf, 1<<20)); !same(got, []string{"already", "c"}) {
		t.Fatalf("Take(buf) = %v, want buf's frames kept and the new appended", got)
	}
}

func TestWriterFlush(t *testing.T) {
	for _, tc := range []struct {
		name    string
		queue   func(w *stream.Writer)
		writes  int // calls of write
		batched bool
		want    []string
	}{
		{"a single frame as itself", func(w *stream.Writer) { w.Control(ctl("c")) }, 1, false, []string{"c"}},
		{"small frames as one Batch", func(w *stream.Writer) {
			w.Control(ctl("c"))
			w.Data(idOf("a"), frame("a", "a0", 10), 10)
			w.Data(idOf("b"), frame("b", "b0", 10), 10)
			w.Data(idOf("a"), frame("a", "a1", 10), 10)
		}, 1, true, []string{"c", "a0", "b0", "a1"}},
		{"full frames one a write", func(w *stream.Writer) {
			for i := range 3 {
				w.Data(idOf("a"), stream.EncodeData(&messages.Data{ID: idOf("a"),
					Data: append([]byte(fmt.Sprint("a", i, ".")), make([]byte, messages.MaxData-3)...)}), messages.MaxData)
			}
		}, 3, false, []string{"a0", "a1", "a2"}},
		{"nothing", func(*stream.Writer) {}, 0, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := stream.NewWriter(1<<30, 1<<20)
			tc.queue(w)
			var writes int
			var frames [][]byte
			err := w.Flush(func(f []byte) error {
				writes++
				m, err := messages.Decode(f)
				if err != nil {
					t.Fatalf("written frame does not decode: %v", err)
				}
				if _, ok := m.(*messages.Batch); ok != tc.batched {
					t.Errorf("write %d: Batch %v, want %v", writes, ok, tc.batched)
				}
				frames = append(frames, unbatch(t, f)...)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if writes != tc.writes {
				t.Errorf("%d writes, want %d", writes, tc.writes)
			}
			if got := labels(t, frames); !same(got, tc.want) {
				t.Fatalf("wrote %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWriterFlushError(t *testing.T) {
	w := stream.NewWriter(1<<20, 1<<20)
	w.Control(ctl("c1"))
	broken := errors.New("connection broken")
	if err := w.Flush(func([]byte) error { return broken }); err != broken {
		t.Fatalf("Flush = %v, want the write's error", err)
	}
}

func TestWriterReady(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(w *stream.Writer)
	}{
		{"Control", func(w *stream.Writer) { w.Control(ctl("c")) }},
		{"Data", func(w *stream.Writer) { w.Data(idOf("a"), frame("a", "a", 0), 0) }},
		{"Credit", func(w *stream.Writer) { w.Credit(1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := stream.NewWriter(0, 1<<20)
			select {
			case <-w.Ready():
				t.Fatal("a new writer is ready")
			default:
			}
			tc.act(w)
			select {
			case <-w.Ready():
			default:
				t.Fatalf("no signal after %s", tc.name)
			}
		})
	}
}

func TestConnWindow(t *testing.T) {
	const window = 1000 // a quarter is 250
	// No room to grow: what is tested is the accounting.
	for _, tc := range []struct {
		name string
		ops  []string // "r N": Received(N) succeeds, "x N": it refuses, "p N=M": Passed(N) returns M
	}{
		{"the whole window, then refuse", []string{"r 1000", "x 1"}},
		{"over in one go", []string{"x 1001", "r 1000"}},
		{"no credit until a quarter passed", []string{"r 1000", "p 100=0", "p 149=0", "x 1", "p 1=250", "r 250", "x 1"}},
		{"the sum at once", []string{"r 1000", "p 999=999", "r 999", "x 1"}},
		{"quarter after quarter", []string{"r 1000", "p 250=250", "p 250=250", "p 249=0", "r 500", "x 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := stream.NewConnWindow(window, window)
			for _, op := range tc.ops {
				var n, m int
				switch op[0] {
				case 'r', 'x':
					fmt.Sscanf(op[2:], "%d", &n)
					if got := c.Received(n); got != (op[0] == 'r') {
						t.Fatalf("%q: Received(%d) = %v", op, n, got)
					}
				case 'p':
					fmt.Sscanf(op[2:], "%d=%d", &n, &m)
					if got := c.Passed(n); got != uint32(m) {
						t.Fatalf("%q: Passed(%d) = %d, want %d", op, n, got, m)
					}
				}
			}
		})
	}
}

// The connection window grows, up to max, when its credit is due again
// within a moment of the last.
func TestConnWindowGrowth(t *testing.T) {
	const window, quarter = 1000, 250
	for _, tc := range []struct {
		name string
		max  int
		wait time.Duration // between the two credits
		grow int
	}{
		{"credit due again at once", 2 * window, 0, window},
		{"at once, growth capped by max", 1500, 0, 500},
		{"at once, no room", window, 0, 0},
		{"credit due again after a while", 2 * window, 20 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := stream.NewConnWindow(window, tc.max)
			c.Received(window)
			if inc := c.Passed(quarter); inc != quarter {
				t.Fatalf("first credit %d, want %d", inc, quarter)
			}
			first := time.Now()
			eventually(t, time.Second, "the wait to pass", func() bool { return time.Since(first) >= tc.wait })
			inc := int(c.Passed(quarter))
			took := time.Since(first)
			if tc.wait == 0 && took >= time.Millisecond {
				t.Skipf("the two credits were %v apart, too slow to say", took)
			}
			if inc != quarter+tc.grow {
				t.Fatalf("second credit %d after %v, want %d", inc, took, quarter+tc.grow)
			}
			// The growth is credit the peer may use at once.
			if !c.Received(window/2 + tc.grow) {
				t.Fatal("the credit given is not honoured")
			}
			if c.Received(1) {
				t.Fatal("more than the credit given is accepted")
			}
		})
	}
}

func TestCopyData(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []byte
		pooled bool
	}{
		{"nil", nil, false},
		{"empty", []byte{}, false},
		{"small", []byte("hello"), true},
		{"a full data frame", bytes.Repeat([]byte{1}, messages.MaxData), true},
		{"exactly a buffer", bytes.Repeat([]byte{2}, stream.BufCap), true},
		{"bigger than a buffer", bytes.Repeat([]byte{3}, stream.BufCap+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := stream.CopyData(tc.in)
			if len(tc.in) == 0 {
				if got != nil {
					t.Fatalf("CopyData(%q) = %q, want nil", tc.in, got)
				}
				return
			}
			if !bytes.Equal(got, tc.in) {
				t.Fatal("copy differs")
			}
			if &got[0] == &tc.in[0] {
				t.Fatal("CopyData aliases its input")
			}
			if pooled := cap(got) == stream.BufCap; pooled != tc.pooled {
				t.Fatalf("cap %d: pooled %v, want %v", cap(got), pooled, tc.pooled)
			}
			stream.Release(got)
		})
	}
}

func TestReleaseForeign(t *testing.T) {
	for _, b := range [][]byte{nil, {}, make([]byte, 10), make([]byte, 0, stream.BufCap+1), make([]byte, stream.BufCap-1)} {
		stream.Release(b)
	}
	pooled := append(stream.Buf(), "ab"...)
	stream.Release(pooled[1:]) // a slice of a pooled buffer is not one
	stream.Release(pooled)
	for range 10 {
		if b := stream.Buf(); len(b) != 0 || cap(b) != stream.BufCap {
			t.Fatalf("Buf() after releasing foreign slices: len %d cap %d", len(b), cap(b))
		}
	}
}

// A full data frame, framed, fits a pooled buffer: EncodeData never grows
// it (which would leave the pool to the garbage collector).
func TestEncodeData(t *testing.T) {
	for _, m := range []messages.Message{
		&messages.Data{ID: messages.NewID(), End: true, Data: bytes.Repeat([]byte{7}, messages.MaxData)},
		&messages.WSMessage{ID: messages.NewID(), Opcode: messages.OpText, Fin: true, Data: bytes.Repeat([]byte{'x'}, messages.MaxData)},
		&messages.Data{ID: messages.NewID(), End: true},
	} {
		t.Run(fmt.Sprintf("%T", m), func(t *testing.T) {
			b := stream.EncodeData(m)
			if cap(b) != stream.BufCap {
				t.Fatalf("encoded into cap %d, want a pooled buffer of %d", cap(b), stream.BufCap)
			}
			if !bytes.Equal(b, messages.Encode(m)) {
				t.Fatal("EncodeData differs from messages.Encode")
			}
			// The proxy's envelope names an instance (16 hex digits) and a
			// holder (instance/connection, 33 characters).
			instance, holder := strings.Repeat("a", 16), strings.Repeat("b", 16)+"/"+strings.Repeat("c", 16)
			if env := messages.AppendEnvelopeFrame(nil, instance, holder, b); len(env) > stream.BufCap {
				t.Fatalf("in an envelope it takes %d bytes, over BufCap", len(env))
			}
			stream.Release(b)
			d, _ := messages.Decode(messages.Encode(m))
			stream.ReleaseData(d) // foreign memory: harmless
		})
	}
}
