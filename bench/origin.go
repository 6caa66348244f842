package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
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

// bulkChunk is the largest piece of the pattern written or checked at
// once: bulk bodies of any size come from one buffer of this size.
const bulkChunk = 64 << 10

// bulkBuf holds the pattern from every phase: the pattern at offset off
// starts at bulkBuf[off%26].
var bulkBuf = pattern(bulkChunk + 26)

// patternAt returns the pattern from offset off on, at most n bytes and at
// most bulkChunk, without allocating.
func patternAt(off, n int64) []byte {
	s := off % 26
	return bulkBuf[s : s+min(n, bulkChunk)]
}

// patternReader reads n bytes of the pattern, from the fixed buffer.
type patternReader struct{ off, n int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && r.off < r.n {
		c := copy(p, patternAt(r.off, r.n-r.off))
		p = p[c:]
		r.off += int64(c)
		total += c
	}
	return total, nil
}

// patternWriter checks that what is written to it is the pattern, and
// counts it.
type patternWriter struct{ off int64 }

func (w *patternWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		want := patternAt(w.off, int64(len(p)))
		if !bytes.Equal(p[:len(want)], want) {
			for i := range want {
				if p[i] != want[i] {
					return total + i, fmt.Errorf("body differs from the pattern at byte %d", w.off+int64(i))
				}
			}
		}
		p = p[len(want):]
		w.off += int64(len(want))
		total += len(want)
	}
	return total, nil
}

// echoMax bounds what POST /echo keeps in memory.
const echoMax = 16 << 20

// randBody is the pseudo-random stream of GET /rand for seed: ChaCha8, so
// that both ends make the same bytes quickly and any two seeds differ.
func randBody(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "keyhole bench body")
	return rand.NewChaCha8(key)
}

// randChecker checks that what is written to it is randBody(seed), and
// counts it.
type randChecker struct {
	src  *rand.ChaCha8
	off  int64
	want []byte
}

func newRandChecker(seed uint64) *randChecker { return &randChecker{src: randBody(seed)} }

func (c *randChecker) Write(p []byte) (int, error) {
	if cap(c.want) < len(p) {
		c.want = make([]byte, len(p))
	}
	want := c.want[:len(p)]
	c.src.Read(want)
	if !bytes.Equal(p, want) {
		for i := range p {
			if p[i] != want[i] {
				return i, fmt.Errorf("%w: differs from the expected body at byte %d", errWrongBody, c.off+int64(i))
			}
		}
	}
	c.off += int64(len(p))
	return len(p), nil
}

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
//	GET  /sse?n=N&interval=D
//	              N Server-Sent Events, D apart, each carrying the
//	              wall-clock time (Unix ns) at which it was written
//	GET  /bulk?size=N[&id=ID]
//	              N bytes of the pattern, streamed from one fixed buffer; with
//	              an id, the bytes written so far are kept for /progress
//	POST /bulk    reads the body, checks it is the pattern, answers its
//	              length in decimal
//	GET  /progress?id=ID
//	              bytes written so far by the GET /bulk with that id
//	GET  /rand?size=N&seed=S
//	              N pseudo-random bytes, the stream randBody(S) gives: a
//	              body of its own for every seed, which the caller can check
//	              without having kept it
//	POST /echo    reads the whole body (at most echoMax) and sends it back
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
	var progress sync.Map // id → *atomic.Int64
	mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		n, err1 := strconv.Atoi(r.URL.Query().Get("n"))
		interval, err2 := time.ParseDuration(r.URL.Query().Get("interval"))
		if err1 != nil || err2 != nil || n < 1 || interval <= 0 {
			http.Error(w, "want n=COUNT&interval=DURATION", http.StatusBadRequest)
			return
		}
		flusher, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "cannot flush", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		flusher.Flush()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := range n {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			// Wall-clock time, not monotonic: the reader is another
			// process on the same machine.
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %d\n\n", i, time.Now().UnixNano()); err != nil {
				return
			}
			flusher.Flush()
		}
	})
	mux.HandleFunc("GET /bulk", func(w http.ResponseWriter, r *http.Request) {
		size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if err != nil || size < 0 {
			http.Error(w, "want size=BYTES", http.StatusBadRequest)
			return
		}
		written := new(atomic.Int64)
		if id := r.URL.Query().Get("id"); id != "" {
			progress.Store(id, written)
			defer progress.Delete(id)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		for off := int64(0); off < size; {
			n, err := w.Write(patternAt(off, size-off))
			off += int64(n)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	mux.HandleFunc("POST /bulk", func(w http.ResponseWriter, r *http.Request) {
		pw := &patternWriter{}
		if _, err := io.CopyBuffer(pw, r.Body, make([]byte, bulkChunk)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strconv.FormatInt(pw.off, 10))
	})
	mux.HandleFunc("GET /rand", func(w http.ResponseWriter, r *http.Request) {
		size, err1 := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		seed, err2 := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		if err1 != nil || err2 != nil || size < 0 {
			http.Error(w, "want size=BYTES&seed=NUMBER", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		src := randBody(seed)
		buf := make([]byte, min(size, bulkChunk))
		for off := int64(0); off < size; {
			b := buf[:min(int64(len(buf)), size-off)]
			src.Read(b)
			if _, err := w.Write(b); err != nil {
				return
			}
			off += int64(len(b))
		}
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, echoMax))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})
	mux.HandleFunc("GET /progress", func(w http.ResponseWriter, r *http.Request) {
		v, ok := progress.Load(r.URL.Query().Get("id"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strconv.FormatInt(v.(*atomic.Int64).Load(), 10))
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
