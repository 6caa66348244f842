package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// wsEnd is one leg of a tunnelled websocket: the test's end of a real
// websocket, whose server end PumpWebSocket carries over st.
type wsEnd struct {
	conn   *websocket.Conn
	st     *stream.Stream
	link   *link // st's Sender
	cancel context.CancelFunc
	done   chan struct{} // closed when PumpWebSocket has returned
}

// wsSetup tunes startWS.
type wsSetup struct {
	a, b   stream.WSOptions
	window int // both streams' windows; 0 for messages.InitialWindow
}

// sockBuf is the size of every socket buffer of a test's websockets:
// small, so that a reader that stops reading stalls its writer soon.
const sockBuf = 64 << 10

// startWS starts ws A ↔ PumpWebSocket ↔ stream A ⇄ stream B ↔
// PumpWebSocket ↔ ws B and returns the test's ends A and B. Cleanup closes
// the test's websockets, ends both pumps and fails the test if either
// does not return.
func startWS(t *testing.T, setup wsSetup) (a, b *wsEnd) {
	t.Helper()
	sa, sb, la, lb := newPair(t, stream.Config{RecvWindow: setup.window}, stream.Config{RecvWindow: setup.window})
	a = &wsEnd{st: sa, link: la, done: make(chan struct{})}
	b = &wsEnd{st: sb, link: lb, done: make(chan struct{})}
	ends := map[string]*wsEnd{"/a": a, "/b": b}
	opts := map[string]stream.WSOptions{"/a": setup.a, "/b": setup.b}
	ctxs := map[string]context.Context{}
	for path, e := range ends {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[path], e.cancel = ctx, cancel
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := ends[r.URL.Path]
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			t.Errorf("accept %s: %v", r.URL.Path, err)
			close(e.done)
			return
		}
		stream.PumpWebSocket(ctxs[r.URL.Path], conn, e.st, opts[r.URL.Path])
		close(e.done)
	}))
	srv.Listener = smallBufListener{srv.Listener}
	srv.Start()
	dialer := &net.Dialer{}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err == nil {
			smallBufs(c)
		}
		return c, err
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for path, e := range ends {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+path, &websocket.DialOptions{
			HTTPClient:      hc,
			CompressionMode: websocket.CompressionDisabled,
		})
		if err != nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		c.SetReadLimit(-1)
		e.conn = c
	}
	t.Cleanup(func() {
		// The test's ends first: a pump's close handshake then need not
		// wait for a peer that is no longer reading.
		for _, e := range []*wsEnd{a, b} {
			e.conn.CloseNow()
		}
		for _, e := range []*wsEnd{a, b} {
			e.cancel()
		}
		for name, e := range map[string]*wsEnd{"A": a, "B": b} {
			select {
			case <-e.done:
			case <-time.After(10 * time.Second):
				t.Errorf("PumpWebSocket %s did not return", name)
			}
		}
		srv.Close()
		hc.CloseIdleConnections()
	})
	return a, b
}

type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		smallBufs(c)
	}
	return c, err
}

func smallBufs(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(sockBuf)
		tc.SetWriteBuffer(sockBuf)
	}
}

// wsMsg is one websocket message.
type wsMsg struct {
	typ  websocket.MessageType
	data []byte
}

func (m wsMsg) String() string { return fmt.Sprintf("%v of %d bytes", m.typ, len(m.data)) }

// reader reads a test's end of a websocket in the background, so that a
// close from the far side completes its handshake.
type reader struct {
	msgs chan wsMsg
	err  chan error // why reading ended
}

func startReader(c *websocket.Conn) *reader {
	r := &reader{msgs: make(chan wsMsg, 1024), err: make(chan error, 1)}
	go func() {
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				r.err <- err
				close(r.msgs)
				return
			}
			r.msgs <- wsMsg{typ, b}
		}
	}()
	return r
}

func (r *reader) next(t *testing.T) wsMsg {
	t.Helper()
	select {
	case m, ok := <-r.msgs:
		if !ok {
			t.Fatalf("websocket ended: %v", <-r.err)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return wsMsg{}
	}
}

// closed waits for the websocket to end and returns its close code and
// reason; messages still arriving are skipped.
func (r *reader) closed(t *testing.T) (websocket.StatusCode, string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-r.msgs:
			if ok {
				continue
			}
			err := <-r.err
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				return -1, err.Error()
			}
			return ce.Code, ce.Reason
		case <-timeout:
			t.Fatal("websocket not closed within 10s")
			return 0, ""
		}
	}
}

func waitPumps(t *testing.T, ends ...*wsEnd) {
	t.Helper()
	for _, e := range ends {
		select {
		case <-e.done:
		case <-time.After(10 * time.Second):
			t.Fatal("PumpWebSocket did not return")
		}
	}
}

// write writes m to c; it may be called from any goroutine, and reports
// whether it succeeded.
func write(t *testing.T, c *websocket.Conn, m wsMsg) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, m.typ, m.data); err != nil {
		t.Errorf("write %v: %v", m, err)
		return false
	}
	return true
}

func TestPumpWebSocketMessages(t *testing.T) {
	msgs := []wsMsg{
		{websocket.MessageText, []byte("hello")},
		{websocket.MessageBinary, []byte{0, 1, 2, 255}},
		{websocket.MessageText, nil},
		{websocket.MessageBinary, nil},
		{websocket.MessageBinary, body(messages.MaxData)},
		{websocket.MessageText, append([]byte("x"), bytes.Repeat([]byte("é"), messages.MaxData/2)...)}, // cut mid-character
		{websocket.MessageBinary, body(3*messages.InitialWindow/2 + 5)},                                // more than the window
		{websocket.MessageText, []byte("last")},
	}
	for _, dir := range []string{"A to B", "B to A"} {
		t.Run(dir, func(t *testing.T) {
			a, b := startWS(t, wsSetup{})
			from, to := a, b
			if dir == "B to A" {
				from, to = b, a
			}
			r := startReader(to.conn)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for _, m := range msgs {
					if !write(t, from.conn, m) {
						return
					}
				}
			}()
			for i, want := range msgs {
				got := r.next(t)
				if got.typ != want.typ || !bytes.Equal(got.data, want.data) {
					t.Fatalf("message %d: got %v, want %v", i, got, want)
				}
			}
			<-done
			// The big ones crossed as fragments of at most MaxData.
			var fragments, fins int
			for _, f := range from.link.frames() {
				if f.typ != messages.TypeWSMessage {
					continue
				}
				fragments++
				if f.end {
					fins++
				}
				if f.n > messages.MaxData {
					t.Fatalf("a fragment of %d bytes, over MaxData", f.n)
				}
			}
			if fins != len(msgs) || fragments <= len(msgs) {
				t.Fatalf("%d fragments, %d with Fin, for %d messages", fragments, fins, len(msgs))
			}
		})
	}
}

// Both directions at once, many messages, under -race.
func TestPumpWebSocketBothWays(t *testing.T) {
	a, b := startWS(t, wsSetup{window: 64 << 10})
	const n = 200
	ra, rb := startReader(a.conn), startReader(b.conn)
	msg := func(from string, i int) wsMsg {
		return wsMsg{websocket.MessageBinary, append([]byte(fmt.Sprintf("%s%d:", from, i)), body(i*97%20000)...)}
	}
	var wg sync.WaitGroup
	for _, e := range []struct {
		name string
		conn *websocket.Conn
	}{{"a", a.conn}, {"b", b.conn}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if !write(t, e.conn, msg(e.name, i)) {
					return
				}
			}
		}()
	}
	for i := range n {
		if got, want := rb.next(t), msg("a", i); !bytes.Equal(got.data, want.data) {
			t.Fatalf("B's message %d: %.10q, want %.10q", i, got.data, want.data)
		}
		if got, want := ra.next(t), msg("b", i); !bytes.Equal(got.data, want.data) {
			t.Fatalf("A's message %d: %.10q, want %.10q", i, got.data, want.data)
		}
	}
	wg.Wait()
}

func TestPumpWebSocketClose(t *testing.T) {
	long := strings.Repeat("r", messages.MaxCloseReason)
	for _, tc := range []struct {
		name       string
		code       websocket.StatusCode
		reason     string
		wantCode   websocket.StatusCode
		wantReason string
	}{
		{"normal", websocket.StatusNormalClosure, "bye", websocket.StatusNormalClosure, "bye"},
		{"going away, no reason", websocket.StatusGoingAway, "", websocket.StatusGoingAway, ""},
		{"application code", 4001, "custom reason", 4001, "custom reason"},
		{"longest reason", 4002, long, 4002, long},
		{"invalid UTF-8", 4003, "bad \xff\xfe reason", 4003, "bad \uFFFD reason"},
		{"invalid UTF-8 that grows", 4004, strings.Repeat("a\xff", messages.MaxCloseReason/2),
			4004, messages.CloseReason(strings.Repeat("a\xff", messages.MaxCloseReason/2))},
	} {
		for _, dir := range []string{"A closes", "B closes"} {
			t.Run(tc.name+"/"+dir, func(t *testing.T) {
				a, b := startWS(t, wsSetup{})
				from, to := a, b
				if dir == "B closes" {
					from, to = b, a
				}
				rf, rt := startReader(from.conn), startReader(to.conn)
				if err := from.conn.Close(tc.code, tc.reason); err != nil {
					t.Fatalf("close: %v", err)
				}
				code, reason := rt.closed(t)
				if code != tc.wantCode || reason != tc.wantReason {
					t.Fatalf("the other side got %d %q, want %d %q", code, reason, tc.wantCode, tc.wantReason)
				}
				checkReason(t, reason)
				rf.closed(t)
				waitPumps(t, a, b)
			})
		}
	}
}

func checkReason(t *testing.T, reason string) {
	t.Helper()
	if !utf8.ValidString(reason) || len(reason) > messages.MaxCloseReason {
		t.Fatalf("close reason %q: valid UTF-8 %v, %d bytes", reason, utf8.ValidString(reason), len(reason))
	}
}

// A WSTeardown from the peer closes the websocket with its code and a
// reason made to fit a close frame.
func TestPumpWebSocketTeardown(t *testing.T) {
	for _, tc := range []struct {
		name       string
		code       uint16
		reason     string
		wantCode   websocket.StatusCode
		wantReason string
	}{
		{"code and reason", 4005, "done", 4005, "done"},
		{"reason of 200 bytes", 4006, strings.Repeat("x", 200), 4006, strings.Repeat("x", messages.MaxCloseReason)},
		{"reason of 200 bytes of 2-byte characters", 4006, strings.Repeat("é", 100), 4006, strings.Repeat("é", messages.MaxCloseReason/2)},
		{"invalid UTF-8", 4007, "a\xffb", 4007, "a\uFFFDb"},
		{"a code only a peer observes", uint16(websocket.StatusAbnormalClosure), "gone", websocket.StatusGoingAway, "gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, b := startWS(t, wsSetup{})
			rb := startReader(b.conn)
			// As if stream A's side had sent it.
			b.st.Receive(&messages.WSTeardown{ID: b.st.ID(), Code: tc.code, Reason: tc.reason})
			code, reason := rb.closed(t)
			if code != tc.wantCode || reason != tc.wantReason {
				t.Fatalf("got %d %q, want %d %q", code, reason, tc.wantCode, tc.wantReason)
			}
			checkReason(t, reason)
			waitPumps(t, b)
			// The peer ended the stream: nothing goes back.
			for _, f := range b.link.frames() {
				if f.typ == messages.TypeWSTeardown || f.typ == messages.TypeError {
					t.Fatalf("sent a %v in return", f.typ)
				}
			}
		})
	}
}

func TestPumpWebSocketMaxMessage(t *testing.T) {
	const max = 100_000 // more than MaxData: the message crosses fragmented
	for _, tc := range []struct {
		name       string
		capA, capB int64 // MaxMessage of each pump
	}{
		{"cap on both pumps", max, max},
		{"cap at the sending pump only", max, 0},
		{"cap at the receiving pump only", 0, max},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startWS(t, wsSetup{a: stream.WSOptions{MaxMessage: tc.capA}, b: stream.WSOptions{MaxMessage: tc.capB}})
			ra, rb := startReader(a.conn), startReader(b.conn)
			at := wsMsg{websocket.MessageBinary, body(max)}
			if !write(t, a.conn, at) {
				t.FailNow()
			}
			if got := rb.next(t); !bytes.Equal(got.data, at.data) {
				t.Fatalf("a message of MaxMessage bytes: got %v", got)
			}
			if !write(t, a.conn, wsMsg{websocket.MessageBinary, body(max + 1)}) {
				t.FailNow()
			}
			for name, r := range map[string]*reader{"A": ra, "B": rb} {
				if code, reason := r.closed(t); code != websocket.StatusMessageTooBig {
					t.Errorf("%s closed with %d %q, want 1009", name, code, reason)
				}
			}
			waitPumps(t, a, b)
		})
	}
}

// A reader that stops reading stalls its own direction: its peer runs out
// of credit and stops reading its own leg, and the other direction goes
// on. Once it reads again, everything arrives. (That the peer never sends
// beyond its credit, the link checks on every frame.)
func TestPumpWebSocketStalledReaderBackpressure(t *testing.T) {
	const window = 64 << 10
	a, b := startWS(t, wsSetup{window: window})
	ra := startReader(a.conn)
	// B does not read. A writes far more than the window and every buffer
	// on the way (a few socket buffers of sockBuf) can hold.
	const count, size = 192, 16 << 10
	msg := func(i int) []byte { return append([]byte(fmt.Sprintf("%d:", i)), body(size)...) }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	writerDone := make(chan error, 1)
	go func() {
		for i := range count {
			if err := a.conn.Write(ctx, websocket.MessageBinary, msg(i)); err != nil {
				writerDone <- err
				return
			}
		}
		writerDone <- nil
	}()
	eventually(t, 10*time.Second, "stream A to run out of credit", func() bool {
		return a.link.dataBytes.Load() == window+b.link.credited.Load()
	})
	// The other direction flows meanwhile.
	if !write(t, b.conn, wsMsg{websocket.MessageText, []byte("still here")}) {
		t.FailNow()
	}
	if got := ra.next(t); string(got.data) != "still here" {
		t.Fatalf("A got %v", got)
	}
	select {
	case err := <-writerDone:
		t.Fatalf("all of A's writes returned (%v) while B read nothing: no backpressure", err)
	default:
	}
	// B reads again: everything arrives, in order.
	rb := startReader(b.conn)
	for i := range count {
		if got := rb.next(t); !bytes.Equal(got.data, msg(i)) {
			t.Fatalf("message %d: %.10q", i, got.data)
		}
	}
	if err := <-writerDone; err != nil {
		t.Fatalf("A's writes: %v", err)
	}
}

// With a write timeout, a reader that stops reading fails its stream with
// 1008 and the TooSlow reason, told to the other side.
func TestPumpWebSocketStalledReaderTimeout(t *testing.T) {
	for _, size := range []int{4 << 10, 3 * messages.MaxData / 2} { // whole messages, and fragmented ones
		t.Run(fmt.Sprintf("messages of %d bytes", size), func(t *testing.T) {
			const tooSlow = "the test reads too slowly"
			a, b := startWS(t, wsSetup{
				window: 64 << 10,
				b:      stream.WSOptions{WriteTimeout: 300 * time.Millisecond, TooSlow: tooSlow},
			})
			ra := startReader(a.conn)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			writerDone := make(chan struct{})
			go func() {
				defer close(writerDone)
				for i := 0; i < 4096 && ctx.Err() == nil; i++ {
					if a.conn.Write(ctx, websocket.MessageBinary, body(size)) != nil {
						return
					}
				}
			}()
			code, reason := ra.closed(t)
			if code != websocket.StatusPolicyViolation || reason != tooSlow {
				t.Fatalf("A closed with %d %q, want 1008 %q", code, reason, tooSlow)
			}
			cancel()
			<-writerDone
			waitPumps(t, a, b)
		})
	}
}

// A reset stream closes the websocket with 1014 "tunnel offline".
func TestPumpWebSocketReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset func(a, b *wsEnd)
		legs  []string // the legs that must close with 1014
	}{
		{"peer's Error", func(_, b *wsEnd) {
			b.st.Receive(&messages.Error{ID: b.st.ID(), Code: messages.CodeUnavailable, Reason: "tunnel dropped"})
		}, []string{"B"}},
		{"Reset on one side reaches the other", func(a, _ *wsEnd) {
			a.st.Reset(messages.CodeUnavailable, "giving up")
		}, []string{"A", "B"}},
		{"Abandon", func(a, _ *wsEnd) { a.st.Abandon(errors.New("connection dropped")) }, []string{"A"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startWS(t, wsSetup{})
			readers := map[string]*reader{"A": startReader(a.conn), "B": startReader(b.conn)}
			// The stream works first.
			if !write(t, a.conn, wsMsg{websocket.MessageText, []byte("before")}) {
				t.FailNow()
			}
			if got := readers["B"].next(t); string(got.data) != "before" {
				t.Fatalf("got %v", got)
			}
			tc.reset(a, b)
			for _, leg := range tc.legs {
				code, reason := readers[leg].closed(t)
				if code != websocket.StatusBadGateway || reason != "tunnel offline" {
					t.Errorf("%s closed with %d %q, want 1014 %q", leg, code, reason, "tunnel offline")
				}
			}
			ends := map[string]*wsEnd{"A": a, "B": b}
			for _, leg := range tc.legs {
				waitPumps(t, ends[leg])
				// A reset stream says nothing more.
				for _, f := range ends[leg].link.frames() {
					if f.typ == messages.TypeWSTeardown {
						t.Errorf("%s sent a WSTeardown after the reset", leg)
					}
				}
			}
		})
	}
}

// Cancelling a pump's ctx closes its websocket with ClosingCode and
// ClosingReason, and tells the other side, which closes its own the same.
func TestPumpWebSocketContext(t *testing.T) {
	// The close races the cancellation of the pump's own reads, so one
	// attempt may pass by luck: try a few times, stopping at a failure.
	for i := range 5 {
		ok := t.Run(fmt.Sprint("attempt ", i), func(t *testing.T) {
			a, b := startWS(t, wsSetup{b: stream.WSOptions{ClosingCode: websocket.StatusGoingAway, ClosingReason: "shutting down"}})
			ra, rb := startReader(a.conn), startReader(b.conn)
			if !write(t, a.conn, wsMsg{websocket.MessageText, []byte("before")}) {
				t.FailNow()
			}
			rb.next(t)
			b.cancel()
			for name, r := range map[string]*reader{"B": rb, "A": ra} {
				if code, reason := r.closed(t); code != websocket.StatusGoingAway || reason != "shutting down" {
					t.Errorf("%s closed with %d %q, want 1001 %q", name, code, reason, "shutting down")
				}
			}
			waitPumps(t, a, b)
		})
		if !ok {
			break
		}
	}
}

// A websocket that ends without a close frame is reported to the other
// side with GoneCode and GoneReason.
func TestPumpWebSocketGone(t *testing.T) {
	a, b := startWS(t, wsSetup{a: stream.WSOptions{GoneCode: websocket.StatusGoingAway, GoneReason: "visitor went away"}})
	rb := startReader(b.conn)
	a.conn.CloseNow()
	if code, reason := rb.closed(t); code != websocket.StatusGoingAway || reason != "visitor went away" {
		t.Fatalf("B closed with %d %q, want 1001 %q", code, reason, "visitor went away")
	}
	waitPumps(t, a, b)
}
