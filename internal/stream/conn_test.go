package stream_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// peerNext takes the next frame the Conn's peer received.
func peerNext(t *testing.T, s *stream.Stream) (messages.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Next(ctx)
}

// Close ends the stream as closing a socket ends a TCP connection: in
// order when nothing the peer sent is left unread, with a reset when
// something is, or when the peer sends more after it.
func TestConnClose(t *testing.T) {
	addr := &net.TCPAddr{}
	for _, tc := range []struct {
		name string
		// before runs before Close on the Conn c and its peer p.
		before func(t *testing.T, c *stream.Conn, p *stream.Stream)
		// after runs after Close, on the peer.
		after     func(t *testing.T, p *stream.Stream)
		wantReset bool
	}{
		{"peer's direction read to its end", func(t *testing.T, c *stream.Conn, p *stream.Stream) {
			p.SendData(&messages.Data{ID: p.ID(), End: true, Data: []byte("bye")}, 3)
			if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
				t.Fatalf("read %q, %v", b, err)
			}
		}, nil, false},
		{"data left unread", func(t *testing.T, c *stream.Conn, p *stream.Stream) {
			p.SendData(&messages.Data{ID: p.ID(), Data: []byte("unread")}, 6)
		}, nil, true},
		{"peer still open, then ends", nil, func(t *testing.T, p *stream.Stream) {
			p.End()
		}, false},
		{"peer still open, then sends", nil, func(t *testing.T, p *stream.Stream) {
			p.SendData(&messages.Data{ID: p.ID(), Data: []byte("too late")}, 8)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, _, _ := newPair(t, stream.Config{}, stream.Config{})
			var ended atomic.Int32
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := stream.NewConn(ctx, a, addr, addr, func() { ended.Add(1) })
			c.Write([]byte("hello"))
			if tc.before != nil {
				tc.before(t, c, b)
			}
			c.Close()
			if tc.after != nil {
				tc.after(t, b)
			}
			// The peer reads what was written, then the end or the reset.
			var got []byte
			var err error
			for {
				var m messages.Message
				if m, err = peerNext(t, b); err != nil {
					break
				}
				if d, ok := m.(*messages.Data); ok {
					got = append(got, d.Data...)
					b.Consumed(len(d.Data))
				}
			}
			if tc.wantReset {
				// The reset may come after the End, for data sent after it.
				var reset *stream.ResetError
				eventually(t, 5*time.Second, "the peer's stream was never reset", func() bool { return errors.As(b.Err(), &reset) })
			} else if err != io.EOF || string(got) != "hello" || b.Err() != nil {
				t.Fatalf("the peer read %q then %v (reset %v), want everything then EOF", got, err, b.Err())
			}
			eventually(t, 5*time.Second, "the Conn's end was never reported", func() bool { return ended.Load() == 1 })
			c.Close()
			if n := ended.Load(); n != 1 {
				t.Fatalf("onEnd ran %d times", n)
			}
		})
	}
}

// Deadlines interrupt a Read or a Write that waits, and a later deadline
// lets them go on.
func TestConnDeadlines(t *testing.T) {
	addr := &net.TCPAddr{}
	a, b, _, _ := newPair(t, stream.Config{}, stream.Config{})
	// The session's context: its end ends what Close leaves waiting.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := stream.NewConn(ctx, a, addr, addr, nil)
	defer c.Close()

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	b.SendData(&messages.Data{ID: b.ID(), Data: []byte("x")}, 1)
	if n, err := c.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("read after the deadline was lifted: %d, %v", n, err)
	}

	// The peer consumes nothing: a write of more than its window waits
	// for credit that never comes.
	c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := c.Write(make([]byte, messages.InitialWindow+1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || n != messages.InitialWindow {
		t.Fatalf("write past its deadline: %d bytes, %v; want %d and a timeout", n, err, messages.InitialWindow)
	}
	c.SetWriteDeadline(time.Time{})
	b.Consumed(messages.InitialWindow) // credit, in quarters
	if n, err := c.Write([]byte("more")); n != 4 || err != nil {
		t.Fatalf("write once credit came: %d, %v", n, err)
	}
}
