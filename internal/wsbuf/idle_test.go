package wsbuf

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// acceptServer runs serve on every websocket Accept hands it, with the
// IdleConn under it.
func acceptServer(t *testing.T, serve func(ws *websocket.Conn, conn *IdleConn)) *httptest.Server {
	t.Helper()
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, conn, err := Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if conn == nil {
			t.Error("Accept over HTTP/1.1 gave no IdleConn")
			return
		}
		wg.Add(1)
		defer wg.Done()
		serve(ws, conn)
	}))
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return srv
}

// echo reads messages as the proxy does (Wait, then a pooled read) and
// writes each back as the proxy does (corked: one system call).
func echo(ws *websocket.Conn, conn *IdleConn) {
	ws.SetReadLimit(-1)
	for {
		conn.Wait()
		typ, buf, err := Read(context.Background(), ws)
		if err != nil {
			return
		}
		conn.Cork(5 * time.Second)
		err = ws.Write(context.Background(), typ, buf.Bytes())
		if uerr := conn.Uncork(); err == nil {
			err = uerr
		}
		buf.Release()
		if err != nil {
			return
		}
	}
}

func dial(t *testing.T, srv *httptest.Server) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// Messages of every size class (around the one-byte rule at 16, the
// 7-bit, 16-bit and 64-bit lengths, the pooled buffer's 4 KiB) come back
// intact through an IdleConn, one at a time and many in flight at once.
func TestIdleConnEcho(t *testing.T) {
	srv := acceptServer(t, echo)
	sizes := []int{0, 1, 2, 15, 16, 17, 125, 126, 127, 4095, 4096, 4097, 65535, 65536, 300_000}
	msg := func(i, n int) []byte {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*31 + j*7)
		}
		return b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name     string
		inFlight int
	}{
		{"one at a time", 1},
		{"all in flight", len(sizes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv)
			for start := 0; start < len(sizes); start += tc.inFlight {
				end := min(start+tc.inFlight, len(sizes))
				for i := start; i < end; i++ {
					if err := c.Write(ctx, websocket.MessageBinary, msg(i, sizes[i])); err != nil {
						t.Fatal(err)
					}
				}
				for i := start; i < end; i++ {
					_, got, err := c.Read(ctx)
					if err != nil {
						t.Fatalf("message %d (%d bytes): %v", i, sizes[i], err)
					}
					if !bytes.Equal(got, msg(i, sizes[i])) {
						t.Fatalf("message %d: got %d bytes, want %d, or different bytes", i, len(got), sizes[i])
					}
				}
			}
		})
	}
}

// Once a message is consumed, the connection holds no buffer: neither for
// reading nor for writing.
func TestIdleConnHoldsNoBufferBetweenMessages(t *testing.T) {
	type state struct{ rbuf, wbuf bool }
	states := make(chan state)
	srv := acceptServer(t, func(ws *websocket.Conn, conn *IdleConn) {
		ws.SetReadLimit(-1)
		for {
			conn.Wait()
			typ, buf, err := Read(context.Background(), ws)
			if err != nil {
				return
			}
			conn.Cork(5 * time.Second)
			ws.Write(context.Background(), typ, buf.Bytes())
			conn.Uncork()
			buf.Release()
			conn.rmu.Lock()
			s := state{rbuf: conn.rbuf != nil}
			conn.rmu.Unlock()
			conn.wmu.Lock()
			s.wbuf = conn.wbuf != nil
			conn.wmu.Unlock()
			states <- s
		}
	})
	c := dial(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range []int{10, 3000, 100_000} {
		if err := c.Write(ctx, websocket.MessageBinary, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		if s := <-states; s.rbuf || s.wbuf {
			t.Fatalf("after a %d-byte message: read buffer held %v, write buffer held %v", n, s.rbuf, s.wbuf)
		}
	}
}

// Wait returns when bytes arrive, and not before.
func TestIdleConnWait(t *testing.T) {
	waited := make(chan error, 1)
	release := make(chan struct{})
	srv := acceptServer(t, func(ws *websocket.Conn, conn *IdleConn) {
		waited <- conn.Wait()
		<-release
		echo(ws, conn)
	})
	defer close(release)
	c := dial(t, srv)
	// A measuring window: nothing was sent, so Wait must still be waiting.
	select {
	case err := <-waited:
		t.Fatalf("Wait returned %v before anything was sent", err)
	case <-time.After(100 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return once a message was sent")
	}
	release <- struct{}{}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "hello" {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

// A client that sends its first websocket frame together with the upgrade
// request (net/http reads it ahead, into the buffer Accept lets go) still
// has it read.
func TestIdleConnFrameWithTheUpgrade(t *testing.T) {
	srv := acceptServer(t, echo)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	payload := []byte("sent with the upgrade")
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x82, 0x80 | byte(len(payload))}
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("upgrade answered %d %v", resp.StatusCode, resp.Header)
	}
	// The echo, unmasked from the server.
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	if head[0] != 0x82 || int(head[1]) != len(payload) {
		t.Fatalf("echo header %x", head)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo %q, want %q", got, payload)
	}
}

// The library's bufio.Reader fills itself with reads of at most its own
// size; those get one byte, so that it never holds a byte it has not
// consumed. Larger reads get everything waiting.
func TestIdleConnSmallReadsGetOneByte(t *testing.T) {
	client, server := net.Pipe() // no file descriptor: the blocking path
	defer client.Close()
	c := newIdleConn(server)
	defer c.Close()
	data := bytes.Repeat([]byte("0123456789"), 10)
	go client.Write(data)
	var got []byte
	for _, tc := range []struct {
		size, want int
	}{
		{libBufSize, 1},
		{1, 1},
		{libBufSize + 1, libBufSize + 1},
		{ioBufSize - 1, len(data) - libBufSize - 3},
	} {
		p := make([]byte, tc.size)
		n, err := c.Read(p)
		if err != nil || n != tc.want {
			t.Fatalf("Read of %d bytes = %d, %v; want %d", tc.size, n, err, tc.want)
		}
		got = append(got, p[:n]...)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %q, want %q", got, data)
	}
}

// recorder is a net.Conn that records each Write.
type recorder struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

func (r *recorder) Close() error { return nil }

func (r *recorder) take() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.writes
	r.writes = nil
	return w
}

// Between Cork and Uncork small writes go out together at Uncork, a large
// one goes out at once after what was gathered, and outside writes pass
// straight through; the buffer is given back at Uncork.
func TestIdleConnCork(t *testing.T) {
	big := bytes.Repeat([]byte("b"), 2*ioBufSize)
	for _, tc := range []struct {
		name        string
		corked      bool
		writes      [][]byte
		whileCorked []string // what reached the connection before Uncork
		afterUncork []string // what Uncork wrote
	}{
		{name: "small writes gathered", corked: true,
			writes:      [][]byte{[]byte("ab"), []byte("cd"), []byte("ef")},
			afterUncork: []string{"abcdef"}},
		{name: "a large write goes out with what was gathered", corked: true,
			writes:      [][]byte{[]byte("hd"), big, []byte("tail")},
			whileCorked: []string{"hd", string(big)},
			afterUncork: []string{"tail"}},
		{name: "not corked", corked: false,
			writes:      [][]byte{[]byte("ab"), []byte("cd")},
			whileCorked: []string{"ab", "cd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			c := newIdleConn(rec)
			if tc.corked {
				c.Cork(time.Second)
			}
			for _, w := range tc.writes {
				if n, err := c.Write(w); n != len(w) || err != nil {
					t.Fatalf("Write of %d bytes = %d, %v", len(w), n, err)
				}
			}
			if got := strs(rec.take()); !equal(got, tc.whileCorked) {
				t.Fatalf("before Uncork the connection got %q, want %q", short(got), short(tc.whileCorked))
			}
			if err := c.Uncork(); err != nil {
				t.Fatal(err)
			}
			if got := strs(rec.take()); !equal(got, tc.afterUncork) {
				t.Fatalf("Uncork wrote %q, want %q", short(got), short(tc.afterUncork))
			}
			if c.wbuf != nil {
				t.Fatal("the write buffer is still held after Uncork")
			}
		})
	}
}

// A frame gathered while corked (the library's close frame, written from
// its own goroutine) still goes out when the library closes at once after.
func TestIdleConnCloseSendsWhatWasGathered(t *testing.T) {
	rec := &recorder{}
	c := newIdleConn(rec)
	c.Cork(time.Second)
	c.Write([]byte("close frame"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strs(rec.take()); !equal(got, []string{"close frame"}) {
		t.Fatalf("the connection got %q before closing, want the gathered frame", got)
	}
}

func strs(bs [][]byte) []string {
	var s []string
	for _, b := range bs {
		s = append(s, string(b))
	}
	return s
}

func equal(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func short(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		if len(v) > 16 {
			v = fmt.Sprintf("%s... (%d bytes)", v[:8], len(v))
		}
		out[i] = v
	}
	return out
}
