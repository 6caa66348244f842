package client

import (
	"context"
	"io"
	"net"
	"sync"
)

// pipeListener is a net.Listener whose connections are in-memory, so
// an http.Server can serve a Handler in-process with full HTTP semantics,
// WebSocket upgrades included.
//
// Each connection is two net.Pipes joined by a relay that buffers up to
// 32 KiB in each direction, as a socket would. With one bare net.Pipe a
// write completes only when the peer reads it, so a close frame could not
// reach a local service that is busy writing a message the client has
// stopped reading (one over the size limit, say): the two would stall each
// other until a 5 s close timeout.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	live   map[*relay]struct{}
	relays sync.WaitGroup
}

// relay joins the inner ends of one connection's two pipes.
type relay struct {
	client, server net.Conn // inner ends: the peers of the outer ends
	closeOnce      sync.Once
}

// close ends both directions; data still in flight is dropped.
func (r *relay) close() {
	r.closeOnce.Do(func() {
		r.client.Close()
		r.server.Close()
	})
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{}), live: make(map[*relay]struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial returns the client end of a new connection whose server end is
// accepted.
func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	c, ci := net.Pipe()
	si, s := net.Pipe()
	r := &relay{client: ci, server: si}
	select {
	case l.conns <- s:
	case <-l.done:
		c.Close()
		s.Close()
		r.close()
		return nil, net.ErrClosed
	case <-ctx.Done():
		c.Close()
		s.Close()
		r.close()
		return nil, ctx.Err()
	}
	l.mu.Lock()
	l.live[r] = struct{}{}
	l.mu.Unlock()
	// When either direction ends (an outer end was closed), both end: a
	// pipe has no half-close. Everything one side wrote before closing has
	// been read by the other, because a pipe write waits for its reader.
	var wg sync.WaitGroup
	l.relays.Add(1)
	wg.Add(2)
	copyTo := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		r.close()
	}
	go copyTo(si, ci)
	go copyTo(ci, si)
	go func() {
		defer l.relays.Done()
		wg.Wait()
		l.mu.Lock()
		delete(l.live, r)
		l.mu.Unlock()
	}()
	return c, nil
}

// closeAll ends every connection, as the end of the client process would,
// and waits for the relays to stop.
func (l *pipeListener) closeAll() {
	l.mu.Lock()
	for r := range l.live {
		r.close()
	}
	l.mu.Unlock()
	l.relays.Wait()
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }
