package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/keyhole-tunnel/keyhole/proxy"
)

// server is one public listener and the http.Server on it.
type server struct {
	name string           // "http", "https" or "http-redirect", for logs
	tcp  *net.TCPListener // under ln, which may be a TLS listener
	ln   net.Listener
	srv  *http.Server
	busy busyConns
}

// busyConns tracks a server's connections that are new (no request read
// yet) or active (a request being answered).
type busyConns struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (b *busyConns) track(c net.Conn, s http.ConnState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch s {
	case http.StateNew, http.StateActive:
		if b.conns == nil {
			b.conns = make(map[net.Conn]bool)
		}
		b.conns[c] = true
	default:
		delete(b.conns, c)
	}
}

func (b *busyConns) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// settle waits, until ctx ends, for every connection of a server that no
// longer accepts to be idle or closed. http.Server.Shutdown drops a request
// it reads after it began (the connection closes unanswered), and a
// connection accepted a moment before may not have sent its request yet;
// once every one has been answered, Shutdown has only idle ones to close.
func (b *busyConns) settle(ctx context.Context) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for b.count() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// serverGroup runs the public listeners and stops them together.
type serverGroup struct {
	servers []*server
	done    chan error // one Serve result per server
	waiting int        // Serve results not yet received
}

// openListeners opens every public listener that the options ask for: plain HTTP
// (--listen), HTTPS (--listen-tls) and the port-80 redirector
// (--listen-http). On error it closes what it opened.
func (o *options) openListeners(p *proxy.Proxy, plain bool, s *tlsServing, log *slog.Logger) (*serverGroup, error) {
	g := &serverGroup{}
	add := func(name, addr string, h http.Handler, cfg *tls.Config) error {
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", name, err)
		}
		ln := tcp
		if cfg != nil {
			ln = tls.NewListener(ln, cfg)
		}
		sv := &server{name: name, tcp: tcp.(*net.TCPListener), ln: ln}
		sv.srv = &http.Server{
			Handler:           h,
			TLSConfig:         cfg,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    proxy.MaxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			ConnState:         sv.busy.track,
		}
		g.servers = append(g.servers, sv)
		return nil
	}
	var err error
	if plain {
		err = add("http", o.listen, p, nil)
	}
	if err == nil && s != nil {
		err = add("https", o.tls.listen, o.tls.handler(p), s.config)
		if err == nil && o.tls.listenHTTP != "" {
			err = add("http-redirect", o.tls.listenHTTP, s.http, nil)
		}
	}
	if err != nil {
		g.closeListeners()
		return nil, err
	}
	return g, nil
}

// closeListeners closes the listeners of a group that is not running.
func (g *serverGroup) closeListeners() {
	for _, s := range g.servers {
		s.ln.Close()
	}
}

// run serves every listener until ctx ends (it returns nil) or one of them
// fails (it closes the others, waits for them, and returns the error).
//
// A TLS listener is served with Serve rather than ServeTLS, which would
// wrap it again: http.Server enables HTTP/2 for connections from a
// tls.Listener whose configuration offers "h2".
func (g *serverGroup) run(ctx context.Context, log *slog.Logger) error {
	g.done = make(chan error, len(g.servers))
	for _, s := range g.servers {
		log.Info("proxy listening", "listener", s.name, "addr", s.ln.Addr().String())
		go func() { g.done <- s.srv.Serve(s.ln) }()
	}
	g.waiting = len(g.servers)
	select {
	case <-ctx.Done():
		return nil
	case err := <-g.done:
		g.waiting--
		for _, s := range g.servers {
			s.srv.Close()
		}
		g.wait()
		return err
	}
}

// quiesceTimeout bounds the wait for a listener's accept queue to empty.
const quiesceTimeout = 500 * time.Millisecond

// shutdown stops accepting on every listener (quiesce first: no
// connection the kernel completed is reset), answers every request on the
// connections accepted (settle), waits for idle connections until ctx
// ends, then waits for every Serve to return.
func (g *serverGroup) shutdown(ctx context.Context, log *slog.Logger) error {
	errs := make(chan error, len(g.servers))
	for _, s := range g.servers {
		go func() {
			qctx, cancel := context.WithTimeout(ctx, quiesceTimeout)
			if err := quiesce(qctx, s.tcp); err != nil {
				log.Warn("listener: stopping without draining its accept queue", "listener", s.name, "err", err)
			}
			cancel()
			s.busy.settle(ctx)
			errs <- s.srv.Shutdown(ctx)
		}()
	}
	var err error
	for range g.servers {
		err = errors.Join(err, <-errs)
	}
	g.wait()
	return err
}

func (g *serverGroup) wait() {
	for ; g.waiting > 0; g.waiting-- {
		<-g.done
	}
}
