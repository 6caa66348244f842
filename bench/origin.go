package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// Payload sizes of the origin's endpoints.
const (
	smallSize = 1 << 10   // GET /small
	largeSize = 400 << 10 // GET /large, and the POST /upload body
	wsSize    = 1 << 10   // WebSocket messages
)

// smallBody and largeBody are what the origin serves; a checked response
// must equal them byte for byte.
var (
	smallBody = pattern(smallSize)
	largeBody = pattern(largeSize)
)

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// originMain is the hidden "origin" subcommand: the service behind the
// tunnel. It prints "listening ADDR" on stdout once it accepts connections
// and serves until ctx ends or --lifetime passes.
//
//	GET  /small   1 KiB
//	GET  /large   400 KiB
//	POST /upload  reads the body, answers its length in decimal
//	     /ws      WebSocket echo: every message back, same type
func originMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench origin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to listen on")
	lifetime := fs.Duration("lifetime", 2*time.Hour, "exit after this long even if never stopped")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *lifetime)
	defer cancel()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	srv := &http.Server{Handler: originHandler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	select {
	case err := <-served:
		return fmt.Errorf("origin: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("origin: %w", err)
	}
	return nil
}

func originHandler() http.Handler {
	mux := http.NewServeMux()
	blob := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		}
	}
	mux.Handle("GET /small", blob(smallBody))
	mux.Handle("GET /large", blob(largeBody))
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		// The tunnel passes the public Host on; the bench sends no
		// Origin, so no origin check is in play either way.
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := r.Context()
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, b); err != nil {
				return
			}
		}
	})
	return mux
}
