package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsLoad is a closed-loop WebSocket echo load: streams connections, each
// sending a message and waiting for its echo before the next, for duration.
type wsLoad struct {
	url      string // ws://127.0.0.1:PORT/ws
	host     string // Host header; "" for the URL's
	streams  int
	size     int
	duration time.Duration
}

func (l wsLoad) run(ctx context.Context) (*loadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, l.duration+2*requestTimeout)
	defer cancel()
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	conns := make([]*websocket.Conn, l.streams)
	dialErrs := make([]error, l.streams)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, dcancel := context.WithTimeout(ctx, requestTimeout)
			defer dcancel()
			c, resp, err := websocket.Dial(dctx, l.url, &websocket.DialOptions{HTTPClient: hc, Host: l.host})
			if err != nil {
				if resp != nil {
					err = fmt.Errorf("%w (status %d)", err, resp.StatusCode)
				}
				dialErrs[i] = err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	for _, err := range dialErrs {
		if err != nil {
			return nil, fmt.Errorf("websocket dial %s (Host %q): %w", l.url, l.host, err)
		}
	}

	type stream struct {
		hist histogram
		ops  int64
		err  error
	}
	streams := make([]stream, l.streams)
	start := time.Now()
	deadline := start.Add(l.duration)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &streams[i]
			msg := make([]byte, l.size)
			rand.Read(msg)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
					s.err = fmt.Errorf("write: %w", err)
					return
				}
				typ, got, err := c.Read(ctx)
				if err != nil {
					s.err = fmt.Errorf("read: %w", err)
					return
				}
				if typ != websocket.MessageBinary || !bytes.Equal(got, msg) {
					s.err = fmt.Errorf("echo differs: type %v, %d bytes", typ, len(got))
					return
				}
				s.hist.record(time.Since(t0))
				s.ops++
			}
		}()
	}
	wg.Wait()
	r := &loadResult{elapsed: time.Since(start)}
	var all histogram
	for i := range streams {
		s := &streams[i]
		r.ops += s.ops
		if s.err != nil {
			r.errors++
			if r.firstErr == "" {
				r.firstErr = s.err.Error()
			}
		}
		all.merge(&s.hist)
	}
	if err := ctx.Err(); err != nil && r.ops == 0 {
		return nil, err
	}
	r.p50, r.p99 = all.quantile(0.50), all.quantile(0.99)
	// Close politely, all at once: the close handshake crosses the
	// tunnel too.
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Close(websocket.StatusNormalClosure, "")
			conns[i] = nil
		}()
	}
	wg.Wait()
	return r, nil
}
