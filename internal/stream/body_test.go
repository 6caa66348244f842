package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// countingReader yields bytes of a known pattern, n of them (forever when
// n < 0), and counts what it gave.
type countingReader struct {
	n    int64
	read atomic.Int64
}

func patternByte(i int64) byte { return byte(i*7 + i/251) }

func (r *countingReader) Read(p []byte) (int, error) {
	pos := r.read.Load()
	if r.n >= 0 && pos >= r.n {
		return 0, io.EOF
	}
	if r.n >= 0 {
		p = p[:min(int64(len(p)), r.n-pos)]
	}
	for i := range p {
		p[i] = patternByte(pos + int64(i))
	}
	r.read.Add(int64(len(p)))
	return len(p), nil
}

func body(n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// bodyResult is what SendBody returned and what the reader read.
type bodyResult struct {
	n    int64
	err  error
	got  []byte
	rerr error
}

// sendBody runs SendBody on a and reads the body from b.
func sendBody(t *testing.T, a, b *stream.Stream, r io.Reader, o stream.BodyOptions) bodyResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type ret struct {
		n   int64
		err error
	}
	done := make(chan ret, 1)
	go func() {
		n, err := stream.SendBody(ctx, a, r, o)
		if err != nil {
			// As SendBody's doc asks of its caller; it also ends the
			// reader's wait.
			a.Reset(messages.CodeTooLarge, err.Error())
		}
		done <- ret{n, err}
	}()
	got, rerr := io.ReadAll(stream.NewBodyReader(ctx, b))
	res := <-done
	return bodyResult{res.n, res.err, got, rerr}
}

// dataFrames returns the Data and Trailer frames that went through l.
func dataFrames(l *link) []frameInfo {
	var out []frameInfo
	for _, f := range l.frames() {
		if f.typ == messages.TypeData || f.typ == messages.TypeTrailer {
			out = append(out, f)
		}
	}
	return out
}

func TestSendBodyFrames(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		length bool // the length is known in advance
		eofTag bool // the reader returns its last bytes with io.EOF
		// What the last frames must be: the last data frame carries End
		// (no extra empty frame), or an empty End follows it.
		endOnData bool
	}{
		{"empty, unknown length", 0, false, false, false},
		{"one byte, known length", 1, true, false, true},
		{"one byte, unknown length", 1, false, false, false},
		{"one byte with io.EOF", 1, false, true, true},
		{"MaxData, known length", messages.MaxData, true, false, true},
		{"MaxData+1, known length", messages.MaxData + 1, true, false, true},
		{"three frames and a bit, known length", 3*messages.MaxData + 17, true, false, true},
		{"three frames and a bit, unknown length", 3*messages.MaxData + 17, false, false, false},
		{"three frames and a bit with io.EOF", 3*messages.MaxData + 17, false, true, true},
		{"more than the window, known length", 5 * messages.InitialWindow / 2, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, la, _ := newPair(t, stream.Config{}, stream.Config{})
			want := body(tc.size)
			var r io.Reader = bytes.NewReader(want)
			if tc.eofTag {
				r = iotest.DataErrReader(r)
			}
			o := stream.BodyOptions{}
			if tc.length {
				o.Length = int64(tc.size)
			}
			res := sendBody(t, a, b, r, o)
			n, err, got, rerr := res.n, res.err, res.got, res.rerr
			if err != nil || rerr != nil {
				t.Fatalf("SendBody: %d, %v; reader: %v", n, err, rerr)
			}
			if n != int64(tc.size) || !bytes.Equal(got, want) {
				t.Fatalf("SendBody sent %d, reader got %d bytes (equal %v), want %d", n, len(got), bytes.Equal(got, want), tc.size)
			}
			frames := dataFrames(la)
			for i, f := range frames {
				if f.n > messages.MaxData {
					t.Fatalf("frame %d carries %d bytes, over MaxData", i, f.n)
				}
				if !f.data {
					t.Fatalf("frame %d went through Send, not SendData", i)
				}
				if f.end != (i == len(frames)-1) {
					t.Fatalf("frame %d of %d: End %v", i, len(frames), f.end)
				}
			}
			last := frames[len(frames)-1]
			if tc.size > 0 && tc.endOnData && last.n == 0 {
				t.Fatalf("the body ended with an extra empty frame: %+v", frames)
			}
			if !tc.endOnData && last.n != 0 {
				t.Fatalf("last frame %+v, want an empty End", last)
			}
		})
	}
}

// A peer that consumes nothing stops the reading after exactly its window;
// once it reads, the rest flows.
func TestSendBodyStopsAtCredit(t *testing.T) {
	const window = 100_000 // not a multiple of MaxData
	for _, length := range []bool{false, true} {
		t.Run(map[bool]string{false: "unknown length", true: "known length"}[length], func(t *testing.T) {
			a, b, la, _ := newPair(t, stream.Config{}, stream.Config{RecvWindow: window})
			r := &countingReader{n: 3 * window}
			o := stream.BodyOptions{}
			if length {
				o.Length = r.n
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan result, 1)
			go func() {
				n, err := stream.SendBody(ctx, a, r, o)
				done <- result{n: int(n), err: err}
			}()
			// A frame beyond the credit would fail the link.
			eventually(t, 5*time.Second, "the window's worth sent", func() bool { return la.dataBytes.Load() == window })
			// SendBody now waits for credit; it must not have read beyond
			// what it could send (it reads before it sends, so what it has
			// read is final now).
			if got := r.read.Load(); got != window {
				t.Fatalf("read %d bytes with credit for %d", got, window)
			}
			got, err := io.ReadAll(stream.NewBodyReader(ctx, b))
			if err != nil {
				t.Fatal(err)
			}
			res := await(t, done, "SendBody")
			if res.err != nil || res.n != int(r.n) || len(got) != int(r.n) {
				t.Fatalf("SendBody %d, %v; read %d; want %d", res.n, res.err, len(got), r.n)
			}
			for i, c := range got {
				if c != patternByte(int64(i)) {
					t.Fatalf("byte %d differs", i)
				}
			}
		})
	}
}

// A reader that ends short of a known length is an error, and the body
// is not ended as if it were complete.
func TestSendBodyShortReader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int   // what the reader has
		length int64 // the length promised
		eofTag bool  // the reader returns its last bytes with io.EOF
	}{
		{"EOF after the data", 999, 1000, false},
		{"EOF with the data", 999, 1000, true},
		{"EOF with the data, over frames", messages.MaxData + 999, messages.MaxData + 1000, true},
		{"nothing at all", 0, 1000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _, la, _ := newPair(t, stream.Config{}, stream.Config{})
			var r io.Reader = bytes.NewReader(body(tc.size))
			if tc.eofTag {
				r = iotest.DataErrReader(r)
			}
			n, err := stream.SendBody(context.Background(), a, r, stream.BodyOptions{Length: tc.length})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("SendBody = %d, %v; want io.ErrUnexpectedEOF", n, err)
			}
			for _, f := range la.frames() {
				if f.end || f.typ == messages.TypeTrailer {
					t.Fatalf("a short body was ended as complete: %+v", la.frames())
				}
			}
		})
	}
}

// A reader with more than the known length is read no further than it.
func TestSendBodyLongReader(t *testing.T) {
	const length = messages.MaxData + 10
	a, b, _, _ := newPair(t, stream.Config{}, stream.Config{})
	r := &countingReader{n: -1}
	res := sendBody(t, a, b, r, stream.BodyOptions{Length: length})
	if res.err != nil || res.rerr != nil || res.n != length || len(res.got) != length {
		t.Fatalf("SendBody %d, %v; read %d, %v", res.n, res.err, len(res.got), res.rerr)
	}
	if r.read.Load() != length {
		t.Fatalf("read %d bytes of the reader for a body of %d", r.read.Load(), length)
	}
}

func TestSendBodyLimit(t *testing.T) {
	const limit = 100_000
	for _, tc := range []struct {
		name   string
		size   int
		length bool
		limit  int64
		over   bool
	}{
		{"at the limit", limit, false, limit, false},
		{"at the limit, known length", limit, true, limit, false},
		{"one byte over", limit + 1, false, limit, true},
		{"one byte over, known length", limit + 1, true, limit, true},
		{"far over", 4 * limit, false, limit, true},
		{"small limit, one over", 11, false, 10, true},
		{"small limit, at it", 10, false, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, la, _ := newPair(t, stream.Config{}, stream.Config{RecvWindow: 1 << 20})
			want := body(tc.size)
			o := stream.BodyOptions{Limit: tc.limit}
			if tc.length {
				o.Length = int64(tc.size)
			}
			res := sendBody(t, a, b, bytes.NewReader(want), o)
			n, err, got, rerr := res.n, res.err, res.got, res.rerr
			if sent := la.dataBytes.Load(); sent > tc.limit {
				t.Fatalf("%d bytes went out with a limit of %d", sent, tc.limit)
			}
			if !tc.over {
				if err != nil || rerr != nil || !bytes.Equal(got, want) {
					t.Fatalf("SendBody %d, %v; reader %d bytes, %v", n, err, len(got), rerr)
				}
				return
			}
			if !errors.Is(err, limiter.ErrTooLarge) {
				t.Fatalf("SendBody = %d, %v; want limiter.ErrTooLarge", n, err)
			}
			if n > tc.limit || n != la.dataBytes.Load() {
				t.Fatalf("SendBody reports %d sent; %d went out; limit %d", n, la.dataBytes.Load(), tc.limit)
			}
			if !errors.Is(rerr, stream.ErrIncomplete) {
				t.Fatalf("reader: %v, want ErrIncomplete (the body has no end)", rerr)
			}
			for _, f := range la.frames() {
				if f.end {
					t.Fatal("a body over the limit was ended")
				}
			}
		})
	}
}

func TestSendBodyTrailer(t *testing.T) {
	trailer := messages.Header{"X-Checksum": {"abc"}, "X-Count": {"1", "2"}}
	for _, tc := range []struct {
		name    string
		size    int
		length  bool
		trailer messages.Header
	}{
		{"fields end the body", 2*messages.MaxData + 5, false, trailer},
		{"fields after a known length", 2*messages.MaxData + 5, true, trailer},
		{"fields after an empty body", 0, false, trailer},
		{"no fields: an End", 100, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, la, _ := newPair(t, stream.Config{}, stream.Config{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			want := body(tc.size)
			o := stream.BodyOptions{Trailer: func() messages.Header { return tc.trailer }}
			if tc.length {
				o.Length = int64(tc.size)
			}
			done := make(chan result, 1)
			go func() {
				n, err := stream.SendBody(ctx, a, bytes.NewReader(want), o)
				done <- result{n: int(n), err: err}
			}()
			br := stream.NewBodyReader(ctx, b)
			var gotTrailer messages.Header
			br.OnTrailer = func(h messages.Header) { gotTrailer = h }
			var got []byte
			buf := make([]byte, 1000)
			for {
				n, err := br.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if gotTrailer != nil {
					t.Fatal("OnTrailer ran before the body was all read")
				}
			}
			// OnTrailer has run by the time io.EOF is returned.
			if len(tc.trailer) > 0 && !equalHeader(gotTrailer, tc.trailer) {
				t.Fatalf("trailer %v at io.EOF, want %v", gotTrailer, tc.trailer)
			}
			if len(tc.trailer) == 0 && gotTrailer != nil {
				t.Fatalf("OnTrailer got %v with no trailer", gotTrailer)
			}
			if r := await(t, done, "SendBody"); r.err != nil || !bytes.Equal(got, want) {
				t.Fatalf("SendBody %v; read %d bytes, want %d", r.err, len(got), len(want))
			}
			frames := dataFrames(la)
			last := frames[len(frames)-1]
			if len(tc.trailer) > 0 {
				if last.typ != messages.TypeTrailer {
					t.Fatalf("last frame %+v, want a Trailer", last)
				}
				for _, f := range frames {
					if f.end {
						t.Fatal("a body ended by a Trailer also has a Data with End")
					}
				}
			} else if !last.end {
				t.Fatalf("last frame %+v, want End", last)
			}
		})
	}
}

func equalHeader(a, b messages.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, vs := range a {
		if !same(vs, b[k]) {
			return false
		}
	}
	return true
}

// BodyReader gives the bytes exactly, whatever the frame boundaries and
// the reads' sizes.
func TestBodyReaderByteExact(t *testing.T) {
	sizes := []int{1, 0, 5000, 3, messages.MaxData, 17}
	for _, readSize := range []int{1, 7, 4096, 1 << 20} {
		t.Run("reads of "+strconv.Itoa(readSize), func(t *testing.T) {
			s := stream.New(messages.NewID(), &recorder{}, stream.Config{RecvWindow: 1 << 20})
			var want []byte
			for i, n := range sizes {
				d := body(n + i)
				want = append(want, d...)
				s.Receive(&messages.Data{ID: s.ID(), Data: stream.CopyData(d), End: i == len(sizes)-1})
			}
			br := stream.NewBodyReader(context.Background(), s)
			var got []byte
			buf := make([]byte, readSize)
			for {
				n, err := br.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, want %d (equal %v)", len(got), len(want), bytes.Equal(got, want))
			}
			if n, err := br.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("Read after the end = %d, %v", n, err)
			}
			br.Close()
		})
	}
}

// Credit goes back as the bytes are read, not as they arrive.
func TestBodyReaderReturnsCredit(t *testing.T) {
	const window = 1000
	r := &recorder{}
	s := stream.New(messages.NewID(), r, stream.Config{RecvWindow: window})
	for range 4 {
		s.Receive(data(s.ID(), 250))
	}
	if incs := r.credits(t); len(incs) != 0 {
		t.Fatalf("credit %v before anything was read", incs)
	}
	br := stream.NewBodyReader(context.Background(), s)
	buf := make([]byte, 249)
	if n, err := br.Read(buf); n != 249 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if incs := r.credits(t); len(incs) != 0 {
		t.Fatalf("credit %v after 249 bytes read, under a quarter", incs)
	}
	if n, err := br.Read(buf); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want the frame's last byte", n, err)
	}
	if incs := r.credits(t); len(incs) != 1 || incs[0] != 250 {
		t.Fatalf("credit %v after 250 bytes read, want one of 250", incs)
	}
	// And a body much bigger than the window gets through a pair.
	a, b, _, _ := newPair(t, stream.Config{}, stream.Config{RecvWindow: window})
	want := body(50 * window)
	if res := sendBody(t, a, b, bytes.NewReader(want), stream.BodyOptions{}); res.err != nil || res.rerr != nil || !bytes.Equal(res.got, want) {
		t.Fatalf("50 windows: SendBody %d, %v; read %d, %v", res.n, res.err, len(res.got), res.rerr)
	}
}

func TestBodyReaderOnFirstRead(t *testing.T) {
	// The peer may send nothing before Grant; OnFirstRead grants. If it did
	// not run before the first read, the read would wait for ever.
	a, b, la, lb := newPair(t, stream.Config{}, stream.Config{NoInitialCredit: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := body(3 * messages.MaxData)
	done := make(chan result, 1)
	go func() {
		n, err := stream.SendBody(ctx, a, bytes.NewReader(want), stream.BodyOptions{Length: int64(len(want))})
		done <- result{n: int(n), err: err}
	}()
	br := stream.NewBodyReader(ctx, b)
	calls := 0
	br.OnFirstRead = func() {
		calls++
		if la.dataBytes.Load() != 0 {
			t.Error("data flowed before the first read's grant")
		}
		b.Grant()
	}
	if lb.credited.Load() != 0 {
		t.Fatal("credit before the first read")
	}
	got, err := io.ReadAll(br)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if calls != 1 {
		t.Fatalf("OnFirstRead ran %d times, want once", calls)
	}
	if r := await(t, done, "SendBody"); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestBodyReaderReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset func(a, b *stream.Stream)
		want  stream.ResetError
	}{
		{"peer resets", func(a, _ *stream.Stream) { a.Reset(messages.CodeUpstream, "service gone") },
			stream.ResetError{Code: messages.CodeUpstream, Reason: "service gone"}},
		{"reader's side resets", func(_, b *stream.Stream) { b.Reset(messages.CodeCanceled, "visitor gone") },
			stream.ResetError{Code: messages.CodeCanceled, Reason: "visitor gone", Local: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _, _ := newPair(t, stream.Config{}, stream.Config{})
			a.SendData(&messages.Data{ID: a.ID(), Data: []byte("half a bo")}, 9)
			br := stream.NewBodyReader(context.Background(), b)
			buf := make([]byte, 100)
			if n, err := br.Read(buf); err != nil || string(buf[:n]) != "half a bo" {
				t.Fatalf("first read %q, %v", buf[:n], err)
			}
			res := make(chan result, 1)
			go func() { n, err := br.Read(buf); res <- result{n: n, err: err} }()
			tc.reset(a, b)
			r := await(t, res, "Read")
			if !errors.Is(r.err, stream.ErrIncomplete) {
				t.Fatalf("Read = %d, %v; want ErrIncomplete", r.n, r.err)
			}
			var re *stream.ResetError
			if !errors.As(r.err, &re) || *re != tc.want {
				t.Fatalf("Read error %v, want it to wrap %+v", r.err, tc.want)
			}
			if r.err == io.EOF || errors.Is(r.err, io.EOF) {
				t.Fatal("a reset body reads as complete")
			}
		})
	}
	t.Run("context ends", func(t *testing.T) {
		_, b, _, _ := newPair(t, stream.Config{}, stream.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := stream.NewBodyReader(ctx, b).Read(make([]byte, 10))
		if !errors.Is(err, stream.ErrIncomplete) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Read = %v, want ErrIncomplete and context.Canceled", err)
		}
	})
}
