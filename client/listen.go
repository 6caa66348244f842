package client

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sync"
)

// Listener is a tunnel as a net.Listener, made by [Listen]: Accept yields
// the connections that arrive through the tunnel, as those of net.Listen
// would arrive from the network.
type Listener struct {
	pipe *pipeListener // an HTTP tunnel's in-process connections
	tcp  chan net.Conn // a TCP tunnel's streams

	cancel    context.CancelFunc
	closed    chan struct{}
	closeOnce sync.Once
	runDone   chan struct{}
	runErr    error

	mu   sync.Mutex
	addr Addr
}

// Listen publishes a tunnel as [Client.Run] does, with opts (Proxy, Key
// and the rest, but neither Target nor Handler), and returns once the
// proxy has registered it. Accept then yields:
//
//   - for an HTTP tunnel (opts.TCP nil), connections that carry the
//     tunnel's HTTP requests, HTTP/1.1 in-process: serve them with
//     http.Serve(l, handler), WebSocket upgrades included;
//   - for a TCP tunnel (opts.TCP set, its Target empty), each TCP stream a
//     visitor opens, as a net.Conn with half-close (CloseWrite).
//
// Addr reports the public URL (HTTP) or hostname (TCP), the same after
// every reconnect. The tunnel stays up, reconnecting as Run does, until
// Close or until ctx ends; Accept then fails with net.ErrClosed, or with
// the error that stopped the tunnel (a *RefusedError, ErrReplaced).
func Listen(ctx context.Context, opts Client) (*Listener, error) {
	if opts.Target != nil || opts.Handler != nil {
		return nil, errors.New("client: Listen serves the connections itself: leave Target and Handler unset")
	}
	l := &Listener{closed: make(chan struct{}), runDone: make(chan struct{})}
	c := opts
	if c.TCP != nil {
		t := *c.TCP
		if t.Target != "" {
			return nil, errors.New("client: Listen hands TCP streams to Accept: leave TCP.Target unset")
		}
		l.tcp = make(chan net.Conn)
		t.accept, t.done = l.tcp, l.closed
		c.TCP = &t
	} else {
		l.pipe = newPipeListener()
		c.pipe = l.pipe
	}
	registered := make(chan struct{}, 1)
	tcp := c.TCP != nil
	onRegister := opts.OnRegister
	c.OnRegister = func(u string) {
		a := Addr(u)
		if pu, err := url.Parse(u); err == nil && tcp {
			a = Addr(pu.Hostname())
		}
		l.mu.Lock()
		l.addr = a
		l.mu.Unlock()
		select {
		case registered <- struct{}{}:
		default:
		}
		if onRegister != nil {
			onRegister(u)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	go func() {
		defer close(l.runDone)
		l.runErr = c.Run(rctx)
		if l.runErr == nil {
			l.runErr = net.ErrClosed
		}
		// Accept returns the reason from now on.
		l.closeOnce.Do(l.shut)
	}()
	select {
	case <-registered:
		return l, nil
	case <-l.runDone:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, l.runErr
	}
}

func (l *Listener) shut() {
	close(l.closed)
	if l.pipe != nil {
		l.pipe.Close()
	}
}

// Accept waits for the next connection through the tunnel.
func (l *Listener) Accept() (net.Conn, error) {
	if l.pipe != nil {
		c, err := l.pipe.Accept()
		if err != nil {
			return nil, l.acceptErr()
		}
		return c, nil
	}
	select {
	case c := <-l.tcp:
		return c, nil
	case <-l.closed:
		return nil, l.acceptErr()
	}
}

// acceptErr is why Accept fails: the tunnel's own reason if it stopped by
// itself, else net.ErrClosed.
func (l *Listener) acceptErr() error {
	select {
	case <-l.runDone:
		return l.runErr
	default:
		return net.ErrClosed
	}
}

// Close ends the tunnel: the proxy forgets it, Accept returns
// net.ErrClosed, and the connections in flight end. It waits for the
// tunnel to stop.
func (l *Listener) Close() error {
	l.closeOnce.Do(l.shut)
	l.cancel()
	<-l.runDone
	return nil
}

// Addr returns the tunnel's public URL (an HTTP tunnel) or hostname (a
// TCP tunnel), as an [Addr].
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}
