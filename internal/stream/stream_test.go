package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// sent is one frame a Sender was given.
type sent struct {
	m    messages.Message
	n    int  // the credit SendData was told the frame uses
	data bool // through SendData, not Send
}

// recorder is a Sender that keeps a copy of every frame, as a connection
// would have to: senders reuse the memory of what they send.
type recorder struct {
	mu     sync.Mutex
	frames []sent
}

func (r *recorder) Send(m messages.Message) error { r.add(m, 0, false); return nil }

func (r *recorder) SendData(m messages.Message, n int) error { r.add(m, n, true); return nil }

func (r *recorder) add(m messages.Message, n int, data bool) {
	c, err := messages.Decode(messages.Encode(m))
	if err != nil {
		panic(fmt.Sprintf("frame %T does not round-trip: %v", m, err))
	}
	r.mu.Lock()
	r.frames = append(r.frames, sent{c, n, data})
	r.mu.Unlock()
}

// take returns the frames recorded since the last take.
func (r *recorder) take() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.frames
	r.frames = nil
	return f
}

// credits returns the increments of the Credit frames recorded since the
// last take, and fails the test on any other frame.
func (r *recorder) credits(t *testing.T) []uint32 {
	t.Helper()
	var incs []uint32
	for _, f := range r.take() {
		c, ok := f.m.(*messages.Credit)
		if !ok {
			t.Errorf("sent %T, want only Credit", f.m)
			continue
		}
		incs = append(incs, c.Increment)
	}
	return incs
}

// link is the Sender of one end of a pair of streams: it hands each frame
// straight to the other end's Receive, as a connection would deliver it,
// copying the data, since senders reuse their buffers (the receiver gives
// the copy back with stream.Release, as the real read path does). It calls
// no goroutine, so the pair runs at the speed of its callers.
type link struct {
	t    testing.TB
	peer *stream.Stream

	dataBytes atomic.Int64 // data bytes sent through SendData
	credited  atomic.Int64 // credit sent to the peer

	mu  sync.Mutex
	log []frameInfo
}

// frameInfo is what a link remembers of a frame.
type frameInfo struct {
	typ  messages.Type
	n    int  // data bytes
	end  bool // Data with End, or WSMessage with Fin
	data bool // through SendData
}

func (l *link) Send(m messages.Message) error {
	if c, ok := m.(*messages.Credit); ok {
		l.credited.Add(int64(c.Increment))
	}
	return l.deliver(m, false)
}

func (l *link) SendData(m messages.Message, n int) error {
	switch d := m.(type) {
	case *messages.Data:
		c := *d
		c.Data = stream.CopyData(d.Data)
		m = &c
	case *messages.WSMessage:
		c := *d
		c.Data = stream.CopyData(d.Data)
		m = &c
	}
	if n != messages.CreditBytes(m) {
		l.t.Errorf("SendData(%T of %d data bytes) says it uses %d credit", m, messages.CreditBytes(m), n)
	}
	l.dataBytes.Add(int64(n))
	return l.deliver(m, true)
}

func (l *link) deliver(m messages.Message, data bool) error {
	info := frameInfo{typ: m.Type(), n: messages.CreditBytes(m), data: data}
	switch d := m.(type) {
	case *messages.Data:
		info.end = d.End
	case *messages.WSMessage:
		info.end = d.Fin
	}
	l.mu.Lock()
	l.log = append(l.log, info)
	l.mu.Unlock()
	if err := l.peer.Receive(m); err != nil {
		l.t.Errorf("peer refused %v of %d bytes: %v", m.Type(), info.n, err)
		return err
	}
	return nil
}

// frames returns what went through the link so far.
func (l *link) frames() []frameInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]frameInfo(nil), l.log...)
}

// newPair returns the two ends of one stream wired to each other through
// links, so that credit really flows both ways. Each end's SendCredit is
// set from the other's window, as the heads of a real stream would.
func newPair(t testing.TB, ca, cb stream.Config) (a, b *stream.Stream, la, lb *link) {
	window := func(c stream.Config) int {
		if c.NoInitialCredit {
			return 0
		}
		if c.RecvWindow == 0 {
			return messages.InitialWindow
		}
		return c.RecvWindow
	}
	ca.SendCredit, cb.SendCredit = window(cb), window(ca)
	la, lb = &link{t: t}, &link{t: t}
	id := messages.NewID()
	a = stream.New(id, la, ca)
	b = stream.New(id, lb, cb)
	la.peer, lb.peer = b, a
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b, la, lb
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// result is what a call made in another goroutine returned.
type result struct {
	n   int
	m   messages.Message
	err error
}

// await waits for a goroutine's result, failing the test if it takes
// longer than a few seconds (a wait that never ends).
func await(t *testing.T, c <-chan result, what string) result {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return", what)
		return result{}
	}
}

func data(id messages.ID, n int) *messages.Data {
	return &messages.Data{ID: id, Data: bytes.Repeat([]byte{'x'}, n)}
}

func TestReceiveWithinCredit(t *testing.T) {
	const window = 1000
	for _, tc := range []struct {
		name   string
		sizes  []int // data frames received in turn
		wsMsg  bool  // as WSMessage fragments rather than Data
		refuse int   // index of the first frame refused, -1 for none
	}{
		{"exactly the window in one frame", []int{window}, false, -1},
		{"exactly the window in frames", []int{600, 399, 1}, false, -1},
		{"one byte over in one frame", []int{window + 1}, false, 0},
		{"one byte over after the window", []int{window, 1}, false, 1},
		{"one byte over after frames", []int{500, 400, 101}, false, 2},
		{"websocket fragments count too", []int{window, 1}, true, 1},
		{"empty frames cost nothing at zero credit", []int{window, 0, 0}, false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stream.New(messages.NewID(), &recorder{}, stream.Config{RecvWindow: window})
			accepted := 0
			for i, n := range tc.sizes {
				var m messages.Message = data(s.ID(), n)
				if tc.wsMsg {
					m = &messages.WSMessage{ID: s.ID(), Opcode: messages.OpBinary, Data: make([]byte, n)}
				}
				err := s.Receive(m)
				refused := tc.refuse >= 0 && i >= tc.refuse
				switch {
				case refused && !errors.Is(err, stream.ErrFlowControl):
					t.Fatalf("frame %d (%d bytes): err %v, want ErrFlowControl", i, n, err)
				case !refused && err != nil:
					t.Fatalf("frame %d (%d bytes): %v", i, n, err)
				case !refused:
					accepted++
				}
				if q := s.Queued(); q != accepted {
					t.Fatalf("after frame %d: %d frames queued, want %d (a refused frame is not queued)", i, q, accepted)
				}
			}
			ctx := context.Background()
			for i := range accepted {
				m, err := s.Next(ctx)
				if err != nil {
					t.Fatalf("Next %d: %v", i, err)
				}
				if got := messages.CreditBytes(m); got != tc.sizes[i] {
					t.Fatalf("Next %d: %d bytes, want %d (frames out of order)", i, got, tc.sizes[i])
				}
			}
		})
	}
}

// A refused frame uses no credit: once credit comes back, exactly that much
// more is accepted.
func TestRefusedFrameUsesNoCredit(t *testing.T) {
	const window = 1000
	s := stream.New(messages.NewID(), &recorder{}, stream.Config{RecvWindow: window})
	if err := s.Receive(data(s.ID(), window-10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Receive(data(s.ID(), 11)); !errors.Is(err, stream.ErrFlowControl) {
		t.Fatalf("11 bytes over 10 of credit: %v, want ErrFlowControl", err)
	}
	if err := s.Receive(data(s.ID(), 10)); err != nil {
		t.Fatalf("the 10 bytes still due: %v", err)
	}
	if err := s.Receive(data(s.ID(), 1)); !errors.Is(err, stream.ErrFlowControl) {
		t.Fatalf("1 byte over: %v, want ErrFlowControl", err)
	}
}

func TestNextOrderAndEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(id messages.ID) messages.Message
	}{
		{"Data with End and data", func(id messages.ID) messages.Message {
			return &messages.Data{ID: id, End: true, Data: []byte("last")}
		}},
		{"empty Data with End", func(id messages.ID) messages.Message { return &messages.Data{ID: id, End: true} }},
		{"Trailer", func(id messages.ID) messages.Message {
			return &messages.Trailer{ID: id, Header: messages.Header{"X-Sum": {"1"}}}
		}},
		{"WSTeardown", func(id messages.ID) messages.Message {
			return &messages.WSTeardown{ID: id, Code: 1000, Reason: "bye"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const window = 1000
			s := stream.New(messages.NewID(), &recorder{}, stream.Config{RecvWindow: window})
			want := []messages.Message{
				&messages.Data{ID: s.ID(), Data: []byte("one")},
				&messages.Data{ID: s.ID(), Data: []byte("two")},
				tc.end(s.ID()),
			}
			for _, m := range want {
				if err := s.Receive(m); err != nil {
					t.Fatal(err)
				}
			}
			// Frames that cross the end are dropped, even beyond the
			// credit: they are late, not a violation.
			for _, late := range []messages.Message{
				&messages.Data{ID: s.ID(), Data: []byte("late")},
				data(s.ID(), 2*window),
				&messages.WSMessage{ID: s.ID(), Opcode: messages.OpText, Fin: true, Data: []byte("late")},
				&messages.Data{ID: s.ID(), End: true},
			} {
				if err := s.Receive(late); err != nil {
					t.Errorf("late %v: %v, want it dropped silently", late.Type(), err)
				}
			}
			if q := s.Queued(); q != len(want) {
				t.Fatalf("%d frames queued, want %d: late frames must be dropped", q, len(want))
			}
			ctx := context.Background()
			for i, w := range want {
				m, err := s.Next(ctx)
				if err != nil {
					t.Fatalf("Next %d: %v", i, err)
				}
				if got, want := messages.Encode(m), messages.Encode(w); !bytes.Equal(got, want) {
					t.Fatalf("Next %d: %v, want %v", i, m, w)
				}
			}
			for i := range 2 {
				if m, err := s.Next(ctx); err != io.EOF {
					t.Fatalf("Next after the end (%d): %v %v, want io.EOF", i, m, err)
				}
			}
		})
	}
}

// The end is reported only once the frames before it have been taken.
func TestNextEOFWaitsForQueue(t *testing.T) {
	s := stream.New(messages.NewID(), &recorder{}, stream.Config{})
	s.Receive(&messages.Data{ID: s.ID(), Data: []byte("a")})
	s.Receive(&messages.Data{ID: s.ID(), End: true})
	ctx := context.Background()
	if m, err := s.Next(ctx); err != nil || string(m.(*messages.Data).Data) != "a" {
		t.Fatalf("first Next: %v %v", m, err)
	}
	if m, err := s.Next(ctx); err != nil || !m.(*messages.Data).End {
		t.Fatalf("second Next: %v %v, want the End frame", m, err)
	}
	if _, err := s.Next(ctx); err != io.EOF {
		t.Fatalf("third Next: %v, want io.EOF", err)
	}
}

// Next waits for a frame that arrives later, from another goroutine.
func TestNextWaitsForFrame(t *testing.T) {
	s := stream.New(messages.NewID(), &recorder{}, stream.Config{})
	res := make(chan result, 1)
	go func() {
		m, err := s.Next(context.Background())
		res <- result{m: m, err: err}
	}()
	if err := s.Receive(&messages.Data{ID: s.ID(), Data: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	r := await(t, res, "Next")
	if r.err != nil || string(r.m.(*messages.Data).Data) != "hi" {
		t.Fatalf("Next: %v %v", r.m, r.err)
	}
}

func TestResetDropsAndUnblocks(t *testing.T) {
	peerErr := &messages.Error{Code: messages.CodeRateLimited, Reason: "slow down", RetryAfter: 7}
	for _, tc := range []struct {
		name  string
		reset func(s *stream.Stream)
		want  stream.ResetError
	}{
		{"local Reset", func(s *stream.Stream) { s.Reset(messages.CodeCanceled, "gone") },
			stream.ResetError{Code: messages.CodeCanceled, Reason: "gone", Local: true}},
		{"peer Error", func(s *stream.Stream) { e := *peerErr; e.ID = s.ID(); s.Receive(&e) },
			stream.ResetError{Code: messages.CodeRateLimited, Reason: "slow down", RetryAfter: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				var re *stream.ResetError
				if !errors.As(err, &re) {
					t.Fatalf("%s: %v, want a *ResetError", what, err)
				}
				if *re != tc.want {
					t.Fatalf("%s: %+v, want %+v", what, *re, tc.want)
				}
			}
			s := stream.New(messages.NewID(), &recorder{}, stream.Config{})
			s.Receive(&messages.Data{ID: s.ID(), Data: []byte("queued")})
			next, reserve := make(chan result, 1), make(chan result, 1)
			// A second stream blocks in Next (empty queue) and Reserve (no
			// credit); the reset must wake both.
			w := stream.New(messages.NewID(), &recorder{}, stream.Config{})
			go func() { m, err := w.Next(context.Background()); next <- result{m: m, err: err} }()
			go func() { n, err := w.Reserve(context.Background(), 10); reserve <- result{n: n, err: err} }()
			tc.reset(s)
			tc.reset(w)
			check("blocked Next", await(t, next, "Next").err)
			check("blocked Reserve", await(t, reserve, "Reserve").err)

			// What was queued is dropped: Next reports the reset at once.
			_, err := s.Next(context.Background())
			check("Next with a frame queued before the reset", err)
			check("Err", s.Err())
			_, err = s.Reserve(context.Background(), 10)
			check("Reserve", err)
			select {
			case <-s.Done():
			default:
				t.Fatal("Done not closed")
			}
			// Frames after the reset are dropped.
			if err := s.Receive(data(s.ID(), 2*messages.InitialWindow)); err != nil {
				t.Fatalf("data after the reset: %v, want it dropped", err)
			}
			if q := s.Queued(); q != 0 {
				t.Fatalf("%d frames queued after the reset", q)
			}
		})
	}
}

func TestResetErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  stream.ResetError
		want []string
	}{
		{stream.ResetError{Code: messages.CodeUpstream, Reason: "refused", Local: true}, []string{"local", "6", "refused"}},
		{stream.ResetError{Code: messages.CodeTimeout, Reason: "slow"}, []string{"peer", "11", "slow"}},
	} {
		msg := tc.err.Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%+v: Error() = %q, want it to contain %q", tc.err, msg, w)
			}
		}
	}
}

func TestNextAndReserveHonourContext(t *testing.T) {
	s := stream.New(messages.NewID(), &recorder{}, stream.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	next, reserve := make(chan result, 1), make(chan result, 1)
	go func() { m, err := s.Next(ctx); next <- result{m: m, err: err} }()
	go func() { n, err := s.Reserve(ctx, 10); reserve <- result{n: n, err: err} }()
	cancel()
	if r := await(t, next, "Next"); r.err != context.Canceled {
		t.Errorf("Next: %v, want context.Canceled", r.err)
	}
	if r := await(t, reserve, "Reserve"); r.err != context.Canceled {
		t.Errorf("Reserve: %v, want context.Canceled", r.err)
	}
	if s.Err() != nil {
		t.Errorf("a cancelled wait reset the stream: %v", s.Err())
	}
}

func TestReserve(t *testing.T) {
	ctx := context.Background()
	t.Run("takes at most max", func(t *testing.T) {
		s := stream.New(messages.NewID(), &recorder{}, stream.Config{SendCredit: 500})
		for _, tc := range []struct{ max, want int }{{100, 100}, {1000, 400}} {
			if n, err := s.Reserve(ctx, tc.max); err != nil || n != tc.want {
				t.Fatalf("Reserve(%d) = %d, %v; want %d", tc.max, n, err, tc.want)
			}
		}
	})
	t.Run("waits for credit", func(t *testing.T) {
		s := stream.New(messages.NewID(), &recorder{}, stream.Config{})
		res := make(chan result, 1)
		go func() { n, err := s.Reserve(ctx, 100); res <- result{n: n, err: err} }()
		s.Receive(&messages.Credit{ID: s.ID(), Increment: 30})
		if r := await(t, res, "Reserve"); r.err != nil || r.n != 30 {
			t.Fatalf("Reserve = %d, %v; want the 30 bytes of credit", r.n, r.err)
		}
	})
	t.Run("Unreserve gives back and wakes a waiter", func(t *testing.T) {
		s := stream.New(messages.NewID(), &recorder{}, stream.Config{SendCredit: 100})
		if n, err := s.Reserve(ctx, 1000); err != nil || n != 100 {
			t.Fatalf("Reserve = %d, %v", n, err)
		}
		res := make(chan result, 1)
		go func() { n, err := s.Reserve(ctx, 1000); res <- result{n: n, err: err} }()
		s.Unreserve(40)
		if r := await(t, res, "Reserve"); r.err != nil || r.n != 40 {
			t.Fatalf("Reserve after Unreserve(40) = %d, %v", r.n, r.err)
		}
		s.Unreserve(0)
		s.Unreserve(-5)
		s.Receive(&messages.Credit{ID: s.ID(), Increment: 1})
		if n, err := s.Reserve(ctx, 1000); err != nil || n != 1 {
			t.Fatalf("Unreserve of nothing changed the credit: Reserve = %d, %v; want 1", n, err)
		}
	})
	t.Run("credit still arrives after the peer's end", func(t *testing.T) {
		s := stream.New(messages.NewID(), &recorder{}, stream.Config{})
		s.Receive(&messages.Data{ID: s.ID(), End: true})
		s.Receive(&messages.Credit{ID: s.ID(), Increment: 5})
		if n, err := s.Reserve(ctx, 10); err != nil || n != 5 {
			t.Fatalf("Reserve = %d, %v; want 5: the peer's end ends only its direction", n, err)
		}
	})
}

func TestResetSendsOneError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before func(s *stream.Stream) // what happened to the stream first
		errors int                    // Error frames the Resets send
	}{
		{"first Reset", func(*stream.Stream) {}, 1},
		{"after the peer's Error", func(s *stream.Stream) {
			s.Receive(&messages.Error{ID: s.ID(), Code: messages.CodeCanceled})
		}, 0},
		{"after Abandon", func(s *stream.Stream) { s.Abandon(errors.New("connection dropped")) }, 0},
		{"after the peer's end", func(s *stream.Stream) { s.Receive(&messages.Data{ID: s.ID(), End: true}) }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			s := stream.New(messages.NewID(), r, stream.Config{})
			tc.before(s)
			r.take()
			s.Reset(messages.CodeTooLarge, "too big")
			s.Reset(messages.CodeCanceled, "again")
			frames := r.take()
			if len(frames) != tc.errors {
				t.Fatalf("sent %d frames, want %d Error", len(frames), tc.errors)
			}
			if tc.errors == 0 {
				return
			}
			e, ok := frames[0].m.(*messages.Error)
			if !ok || e.ID != s.ID() || e.Code != messages.CodeTooLarge || e.Reason != "too big" {
				t.Fatalf("sent %+v, want Error %v code %d %q", frames[0].m, s.ID(), messages.CodeTooLarge, "too big")
			}
			if frames[0].data {
				t.Error("the Error went through SendData: a reset must not wait behind data")
			}
		})
	}
}

// TestNoDataAfterReset: once a stream is reset, from either side, it sends
// no more data: the peer has forgotten it and would take a data frame for
// a violation of the protocol.
func TestNoDataAfterReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset func(s *stream.Stream)
	}{
		{"Reset", func(s *stream.Stream) { s.Reset(messages.CodeTooLarge, "") }},
		{"peer's Error", func(s *stream.Stream) {
			s.Receive(&messages.Error{ID: s.ID(), Code: messages.CodeCanceled})
		}},
		{"Abandon", func(s *stream.Stream) { s.Abandon(errors.New("connection dropped")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			s := stream.New(messages.NewID(), r, stream.Config{})
			if err := s.SendData(&messages.Data{ID: s.ID(), Data: []byte("before")}, 6); err != nil {
				t.Fatalf("SendData before the reset: %v", err)
			}
			tc.reset(s)
			if err := s.SendData(&messages.Data{ID: s.ID(), Data: []byte("after")}, 5); err == nil {
				t.Fatal("SendData after the reset: no error")
			}
			for _, f := range r.take() {
				if d, ok := f.m.(*messages.Data); ok && string(d.Data) == "after" {
					t.Fatal("a data frame went out after the reset")
				}
			}
		})
	}
}

func TestAbandonSendsNothing(t *testing.T) {
	r := &recorder{}
	s := stream.New(messages.NewID(), r, stream.Config{})
	gone := errors.New("connection dropped")
	s.Abandon(gone)
	s.Abandon(errors.New("second"))
	if f := r.take(); len(f) != 0 {
		t.Fatalf("Abandon sent %d frames", len(f))
	}
	if _, err := s.Next(context.Background()); err != gone {
		t.Fatalf("Next: %v, want the first Abandon's error", err)
	}
	s.Consumed(messages.InitialWindow)
	if f := r.take(); len(f) != 0 {
		t.Fatalf("Consumed after Abandon sent %d frames", len(f))
	}
}

func TestConsumedReturnsCreditByQuarter(t *testing.T) {
	const window = 1000 // a quarter is 250
	for _, tc := range []struct {
		name     string
		consumed []int
		credits  []uint32
	}{
		{"below a quarter", []int{100, 100, 49}, nil},
		{"exactly a quarter", []int{100, 100, 49, 1}, []uint32{250}},
		{"past a quarter", []int{100, 100, 100}, []uint32{300}},
		{"each quarter", []int{250, 250, 250, 249}, []uint32{250, 250, 250}},
		{"the whole window at once", []int{window}, []uint32{window}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: window})
			// Frames of 100: the consumer takes them with the peer never
			// out of credit, so the window has no reason to grow.
			for range window / 100 {
				if err := s.Receive(data(s.ID(), 100)); err != nil {
					t.Fatal(err)
				}
			}
			for range window / 100 {
				if _, err := s.Next(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			var got []uint32
			for _, n := range tc.consumed {
				s.Consumed(n)
				for _, f := range r.take() {
					c, ok := f.m.(*messages.Credit)
					if !ok || c.ID != s.ID() {
						t.Fatalf("sent %+v, want a Credit for the stream", f.m)
					}
					got = append(got, c.Increment)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.credits) {
				t.Fatalf("credits %v, want %v", got, tc.credits)
			}
		})
	}
}

func TestConsumedNoCreditAfterEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(s *stream.Stream)
	}{
		{"peer's End", func(s *stream.Stream) { s.Receive(&messages.Data{ID: s.ID(), End: true}) }},
		{"peer's Trailer", func(s *stream.Stream) { s.Receive(&messages.Trailer{ID: s.ID()}) }},
		{"peer's WSTeardown", func(s *stream.Stream) { s.Receive(&messages.WSTeardown{ID: s.ID(), Code: 1000}) }},
		{"Reset", func(s *stream.Stream) { s.Reset(messages.CodeCanceled, "") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: 1000})
			s.Receive(data(s.ID(), 1000))
			s.Next(context.Background())
			tc.end(s)
			r.take()
			s.Consumed(1000)
			if f := r.take(); len(f) != 0 {
				t.Fatalf("Consumed after the end sent %v", f[0].m)
			}
		})
	}
}

// round is one turn of a peer that sends all its credit at once, in
// frames, followed by a consumer that takes each frame as it arrives and
// consumes them all.
type round struct {
	frames int // the credit sent, in this many frames
}

// runRounds plays rounds against s, the test standing in for the peer. It
// returns the window after each round and fails on a credit that does not
// match the growth.
func runRounds(t *testing.T, s *stream.Stream, r *recorder, initial int, rounds []round) []int {
	t.Helper()
	credit := initial
	var windows []int
	for i, rd := range rounds {
		before := s.Window()
		total := credit
		per := total / rd.frames
		var taken []messages.Message
		for f := range rd.frames {
			n := per
			if f == rd.frames-1 {
				n = total - per*(rd.frames-1)
			}
			if err := s.Receive(data(s.ID(), n)); err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			credit -= n
			m, _ := s.Next(context.Background())
			taken = append(taken, m)
		}
		// All at once: credit due is returned whole, so the round's
		// credit shows the growth exactly.
		consumed := 0
		for _, m := range taken {
			consumed += messages.CreditBytes(m)
		}
		s.Consumed(consumed)
		inc := 0
		for _, c := range r.credits(t) {
			inc += int(c)
		}
		credit += inc
		grown := s.Window() - before
		if inc != total+grown {
			t.Fatalf("round %d: credit %d for %d consumed and window growth %d", i, inc, total, grown)
		}
		if credit != s.Window() {
			t.Fatalf("round %d: the peer has %d credit, the window is %d", i, credit, s.Window())
		}
		windows = append(windows, s.Window())
	}
	return windows
}

func TestWindowGrowth(t *testing.T) {
	const w = 1024
	fast := func(n int) []round { return make([]round, n) }
	// budgets returns the stream's budget and its parent (either nil).
	type budgets func() (b, parent *stream.Budget)
	flat := func(limit int64) budgets {
		return func() (*stream.Budget, *stream.Budget) { return stream.NewBudget(limit, nil), nil }
	}
	nested := func(limit int64) budgets {
		return func() (*stream.Budget, *stream.Budget) {
			p := stream.NewBudget(limit, nil)
			return stream.NewBudget(1<<20, p), p
		}
	}
	for _, tc := range []struct {
		name    string
		max     int
		budget  budgets
		rounds  []round
		windows []int
	}{
		{"doubles up to MaxWindow", 4 * w, nil, fast(3), []int{2 * w, 4 * w, 4 * w}},
		{"stops at a MaxWindow that is no doubling", 3000, nil, fast(3), []int{2 * w, 3000, 3000}},
		{"no MaxWindow: no growth", 0, nil, fast(2), []int{w, w}},
		{"MaxWindow below the window: no growth", w / 2, nil, fast(1), []int{w}},
		{"budget too small for the growth", 4 * w, flat(w - 1), fast(2), []int{w, w}},
		{"budget for one doubling", 4 * w, flat(w), fast(3), []int{2 * w, 2 * w, 2 * w}},
		{"parent budget too small", 4 * w, nested(w - 1), fast(1), []int{w}},
		{"parent budget for one doubling", 4 * w, nested(w), fast(2), []int{2 * w, 2 * w}},
		{"fast consumer in small frames", 4 * w, nil, []round{{frames: 4}}, []int{2 * w}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.rounds {
				if tc.rounds[i].frames == 0 {
					tc.rounds[i].frames = 1
				}
			}
			var b, parent *stream.Budget
			if tc.budget != nil {
				b, parent = tc.budget()
			}
			r := &recorder{}
			s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: w, MaxWindow: tc.max, Budget: b})
			got := runRounds(t, s, r, w, tc.rounds)
			if fmt.Sprint(got) != fmt.Sprint(tc.windows) {
				t.Fatalf("windows %v, want %v", got, tc.windows)
			}
			if b == nil {
				return
			}
			grown := int64(got[len(got)-1] - w)
			if b.Used() != grown || (parent != nil && parent.Used() != grown) {
				t.Fatalf("budget used %d (parent %d), want the growth %d", b.Used(), parent.Used(), grown)
			}
			s.Close()
			s.Close() // a second Close must not release twice
			if b.Used() != 0 || parent.Used() != 0 {
				t.Fatalf("after Close the budget has %d used (parent %d), want 0", b.Used(), parent.Used())
			}
		})
	}
}

// A consumer that lags (half the window or more still queued whenever it
// returns credit) never grows the window, however long it goes on and
// however quickly its credit follows the last.
func TestWindowNoGrowthSlowConsumer(t *testing.T) {
	const w, frame = 1024, 256
	r := &recorder{}
	s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: w, MaxWindow: 8 * w})
	for range w / frame {
		if err := s.Receive(data(s.ID(), frame)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		// The oldest frame is written out; three quarters stay queued.
		s.Next(context.Background())
		s.Consumed(frame)
		incs := r.credits(t)
		if len(incs) != 1 || incs[0] != frame {
			t.Fatalf("round %d: credits %v, want one of %d", i, incs, frame)
		}
		// The peer spends the credit at once, running out again.
		if err := s.Receive(data(s.ID(), frame)); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if s.Window() != w {
		t.Fatalf("window %d, want %d", s.Window(), w)
	}
}

// A consumer that keeps up and is due credit again within a moment of the
// last (a fast path, where the sender seldom runs dry) grows the window
// too; one due credit only after a while does not.
func TestWindowGrowthFastCredit(t *testing.T) {
	const w, quarter = 1024, 256
	for _, tc := range []struct {
		name string
		wait time.Duration // between the two credits
	}{
		{"credit due again at once", 0},
		{"credit due again after a while", 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: w, MaxWindow: 8 * w})
			// Half the window, a quarter at a time, each taken and consumed
			// as it comes: the peer never runs out of credit.
			consume := func() {
				s.Receive(data(s.ID(), quarter))
				s.Next(context.Background())
				s.Consumed(quarter)
			}
			consume()
			first := time.Now()
			if incs := r.credits(t); len(incs) != 1 || incs[0] != quarter {
				t.Fatalf("first credit %v, want %d", incs, quarter)
			}
			eventually(t, time.Second, "the wait to pass", func() bool { return time.Since(first) >= tc.wait })
			consume()
			took := time.Since(first)
			incs := r.credits(t)
			if len(incs) != 1 {
				t.Fatalf("credits %v, want one", incs)
			}
			switch grew := int(incs[0]) - quarter; {
			case tc.wait > 0 && grew != 0:
				t.Fatalf("credit %d after %v: the window grew by %d", incs[0], took, grew)
			case tc.wait == 0 && took < time.Millisecond && (grew != w || s.Window() != 2*w):
				t.Fatalf("credit %d within %v: window %d, want it doubled", incs[0], took, s.Window())
			case tc.wait == 0 && took >= time.Millisecond:
				t.Logf("the two credits were %v apart, too slow to say", took)
			}
		})
	}
}

// The edges of "the consumer keeps up": the peer must have run out of
// credit, and the frames not yet taken must be under half the window.
func TestWindowGrowthEdges(t *testing.T) {
	const w = 1024
	for _, tc := range []struct {
		name   string
		frames []int // received in order, none taken until all arrived
		grows  bool
	}{
		{"queue just under half when credit runs out", []int{w/2 - 1, w/2 + 1}, true},
		{"queue at half when credit runs out", []int{w / 2, w / 2}, false},
		{"credit never ran out", []int{w - 1}, false},
		{"all credit in one frame", []int{w}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: w, MaxWindow: 8 * w})
			total := 0
			for _, n := range tc.frames {
				if err := s.Receive(data(s.ID(), n)); err != nil {
					t.Fatal(err)
				}
				total += n
			}
			for range tc.frames {
				s.Next(context.Background())
			}
			s.Consumed(total)
			want, wantInc := w, total
			if tc.grows {
				want, wantInc = 2*w, total+w
			}
			if got := s.Window(); got != want {
				t.Errorf("window %d, want %d", got, want)
			}
			if incs := r.credits(t); len(incs) != 1 || int(incs[0]) != wantInc {
				t.Errorf("credits %v, want one of %d", incs, wantInc)
			}
		})
	}
}

func TestBudgetParent(t *testing.T) {
	const w = 1024
	parent := stream.NewBudget(w, nil)
	child1 := stream.NewBudget(1<<20, parent)
	child2 := stream.NewBudget(1<<20, parent)
	grow := func(b *stream.Budget) *stream.Stream {
		r := &recorder{}
		s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: w, MaxWindow: 2 * w, Budget: b})
		runRounds(t, s, r, w, []round{{frames: 1}})
		return s
	}
	s1 := grow(child1)
	if s1.Window() != 2*w || child1.Used() != w || parent.Used() != w {
		t.Fatalf("first stream: window %d, child used %d, parent used %d", s1.Window(), child1.Used(), parent.Used())
	}
	// The parent is full: a stream in the other child cannot grow, and
	// its child keeps nothing of the failed attempt.
	s2 := grow(child2)
	if s2.Window() != w || child2.Used() != 0 || parent.Used() != w {
		t.Fatalf("second stream: window %d, child used %d, parent used %d", s2.Window(), child2.Used(), parent.Used())
	}
	s1.Close()
	if child1.Used() != 0 || parent.Used() != 0 {
		t.Fatalf("after Close: child used %d, parent used %d", child1.Used(), parent.Used())
	}
	s3 := grow(child2)
	if s3.Window() != 2*w || parent.Used() != w {
		t.Fatalf("after the first stream's Close: window %d, parent used %d", s3.Window(), parent.Used())
	}
	s2.Close()
	s3.Close()
	if parent.Used() != 0 || child2.Used() != 0 {
		t.Fatalf("at the end: parent used %d, child used %d", parent.Used(), child2.Used())
	}
}

func TestNilBudget(t *testing.T) {
	var b *stream.Budget
	if !b.TryTake(1 << 40) {
		t.Error("a nil budget refused")
	}
	b.Release(1 << 40)
	if b.Used() != 0 {
		t.Error("a nil budget has use")
	}
}

func TestGrant(t *testing.T) {
	const w = 1000
	ctx := context.Background()
	t.Run("no initial credit until Grant", func(t *testing.T) {
		r := &recorder{}
		s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: w, NoInitialCredit: true})
		if err := s.Receive(data(s.ID(), 1)); !errors.Is(err, stream.ErrFlowControl) {
			t.Fatalf("data before Grant: %v, want ErrFlowControl", err)
		}
		if err := s.Receive(&messages.Data{ID: s.ID(), End: true}); err != nil {
			t.Fatalf("an empty End before Grant costs nothing: %v", err)
		}
	})
	t.Run("Grant sends the window once", func(t *testing.T) {
		r := &recorder{}
		s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: w, NoInitialCredit: true})
		s.Grant()
		if incs := r.credits(t); len(incs) != 1 || incs[0] != w {
			t.Fatalf("Grant sent credits %v, want one of %d", incs, w)
		}
		s.Grant()
		if incs := r.credits(t); len(incs) != 0 {
			t.Fatalf("second Grant sent credits %v", incs)
		}
		if err := s.Receive(data(s.ID(), w)); err != nil {
			t.Fatalf("the window after Grant: %v", err)
		}
		if err := s.Receive(data(s.ID(), 1)); !errors.Is(err, stream.ErrFlowControl) {
			t.Fatalf("one byte more than the window: %v", err)
		}
	})
	for _, tc := range []struct {
		name  string
		cfg   stream.Config
		setup func(s *stream.Stream)
	}{
		{"on a stream with initial credit", stream.Config{RecvWindow: w}, func(*stream.Stream) {}},
		{"with data queued", stream.Config{RecvWindow: w}, func(s *stream.Stream) { s.Receive(data(s.ID(), 100)) }},
		{"with data consumed, credit not yet due", stream.Config{RecvWindow: w}, func(s *stream.Stream) {
			s.Receive(data(s.ID(), 100))
			s.Next(ctx)
			s.Consumed(100)
		}},
		{"with data taken, not yet consumed", stream.Config{RecvWindow: w}, func(s *stream.Stream) {
			s.Receive(data(s.ID(), 100))
			s.Next(ctx)
		}},
		{"second Grant with data taken, not yet consumed", stream.Config{RecvWindow: w, NoInitialCredit: true},
			func(s *stream.Stream) {
				s.Grant()
				s.Receive(data(s.ID(), 100))
				s.Next(ctx)
			}},
		{"after a reset", stream.Config{RecvWindow: w, NoInitialCredit: true}, func(s *stream.Stream) {
			s.Abandon(errors.New("gone"))
		}},
	} {
		t.Run("Grant sends nothing "+tc.name, func(t *testing.T) {
			r := &recorder{}
			s := stream.New(messages.NewID(), r, tc.cfg)
			tc.setup(s)
			r.take()
			s.Grant()
			if f := r.take(); len(f) != 0 {
				t.Fatalf("Grant sent %+v", f[0].m)
			}
		})
	}
}

func TestLastActive(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(s *stream.Stream)
	}{
		{"Receive data", func(s *stream.Stream) { s.Receive(data(s.ID(), 1)) }},
		{"Receive credit", func(s *stream.Stream) { s.Receive(&messages.Credit{ID: s.ID(), Increment: 1}) }},
		{"Send", func(s *stream.Stream) { s.Send(&messages.Credit{ID: s.ID(), Increment: 1}) }},
		{"SendData", func(s *stream.Stream) { s.SendData(&messages.Data{ID: s.ID(), End: true}, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stream.New(messages.NewID(), &recorder{}, stream.Config{})
			before := s.LastActive()
			if before.IsZero() || time.Since(before) > time.Minute {
				t.Fatalf("a new stream's LastActive is %v", before)
			}
			// Let the clock move past it, so that a touch shows.
			eventually(t, time.Second, "the clock to move", func() bool { return time.Now().After(before) })
			if !s.LastActive().Equal(before) {
				t.Fatal("LastActive moved by itself")
			}
			tc.act(s)
			if after := s.LastActive(); !after.After(before) {
				t.Fatalf("LastActive %v did not move past %v", after, before)
			}
		})
	}
}

// chanSender carries a stream's frames over a channel to a goroutine that
// plays the connection's reader, copying data as the real read path does.
type chanSender struct {
	wire chan<- messages.Message
	done <-chan struct{}
}

func (c chanSender) Send(m messages.Message) error { return c.SendData(m, 0) }

func (c chanSender) SendData(m messages.Message, _ int) error {
	if d, ok := m.(*messages.Data); ok {
		cp := *d
		cp.Data = stream.CopyData(d.Data)
		m = &cp
	}
	select {
	case c.wire <- m:
		return nil
	case <-c.done:
		return errors.New("receiver gone")
	}
}

// One goroutine receives, one consumes, one sends, as the package doc
// says; run with -race. Every byte must arrive, in order, within the
// credit, with the window growing as it may.
func TestConcurrentStream(t *testing.T) {
	const frames = 2000
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wire := make(chan messages.Message)
	stop := make(chan struct{})
	id := messages.NewID()
	back := &link{t: t} // credit travels straight back to the sender
	snd := stream.New(id, chanSender{wire, stop}, stream.Config{SendCredit: 16 << 10})
	rcv := stream.New(id, back, stream.Config{RecvWindow: 16 << 10, MaxWindow: 256 << 10})
	back.peer = snd
	defer rcv.Close()

	pattern := func(i int) byte { return byte(i % 251) }
	var wg sync.WaitGroup
	var sentBytes int
	wg.Add(3)
	go func() { // the connection's reader
		defer wg.Done()
		for m := range wire {
			if err := rcv.Receive(m); err != nil {
				t.Errorf("Receive: %v", err)
				close(stop)
				for range wire {
				}
				return
			}
		}
	}()
	go func() { // the sender
		defer wg.Done()
		defer close(wire)
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 4000)
		pos := 0
		for range frames {
			want := 1 + rng.IntN(len(buf))
			n, err := snd.Reserve(ctx, want)
			if err != nil {
				t.Errorf("Reserve: %v", err)
				return
			}
			for i := range n {
				buf[i] = pattern(pos + i)
			}
			if err := snd.SendData(&messages.Data{ID: id, Data: buf[:n]}, n); err != nil {
				t.Errorf("SendData: %v", err)
				return
			}
			pos += n
		}
		sentBytes = pos
		snd.SendData(&messages.Data{ID: id, End: true}, 0)
	}()
	var got int
	go func() { // the consumer
		defer wg.Done()
		for {
			m, err := rcv.Next(ctx)
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Errorf("Next: %v", err)
				return
			}
			d := m.(*messages.Data)
			for i, b := range d.Data {
				if b != pattern(got+i) {
					t.Errorf("byte %d is %d, want %d", got+i, b, pattern(got+i))
					rcv.Abandon(errors.New("corrupt"))
					return
				}
			}
			got += len(d.Data)
			rcv.Consumed(len(d.Data))
			stream.Release(d.Data)
		}
	}()
	wg.Wait()
	if got != sentBytes || got == 0 {
		t.Fatalf("received %d bytes, sent %d", got, sentBytes)
	}
	t.Logf("%d bytes; window grew to %d", got, rcv.Window())
}
