package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
)

// clientsMain is the hidden "clients" subcommand: many client.Client in
// one process, each with its own in-memory Ed25519 key, all forwarding to
// one target. It prints, on stdout:
//
//	start N               when the keys exist and the first client dials
//	registered URL        each time a client registers (again after a reconnect)
//	error MESSAGE         when a client gives up
//
// and runs until ctx ends or --lifetime passes. With --capture, each client
// has an inspector store, as the client command has. At most --parallel
// registrations are in flight at once, so the proxy sees a steady stream of
// arrivals instead of one burst that would mostly measure the listen
// backlog.
func clientsMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench clients", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 100, "number of clients")
	proxyURL := fs.String("proxy", "", "proxy `URL` (ws://127.0.0.1:PORT)")
	targetURL := fs.String("target", "", "target `URL` (http://127.0.0.1:PORT)")
	parallel := fs.Int("parallel", 32, "registrations in flight at once")
	logLevel := fs.String("log-level", "info", "client log `level`; logs go to stderr")
	lifetime := fs.Duration("lifetime", 2*time.Hour, "exit after this long even if never stopped")
	capture := fs.Bool("capture", false, "each client records its exchanges in an inspector store of the\nclient command's default size, as the command does (no page is served)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*targetURL)
	if err != nil || *proxyURL == "" || target.Host == "" || *n < 1 || *parallel < 1 {
		return errors.New("clients: need --n ≥ 1, --parallel ≥ 1, --proxy and --target URLs")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("clients: --log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(ctx, *lifetime)
	defer cancel()

	keys := make([]ed25519.PrivateKey, *n)
	for i := range keys {
		if _, keys[i], err = ed25519.GenerateKey(rand.Reader); err != nil {
			return fmt.Errorf("clients: %w", err)
		}
	}
	out := &syncWriter{w: stdout}
	out.printf("start %d\n", *n)

	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range keys {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		registered := make(chan struct{})
		var once sync.Once
		var store *inspect.Store
		if *capture {
			store = inspect.New(inspect.Options{Budget: inspect.DefaultBudget})
		}
		c := &client.Client{
			Inspect: store,
			Proxy:   *proxyURL,
			Key:     keys[i],
			Target:  target,
			Logger:  log.With("client", i),
			OnRegister: func(u string) {
				once.Do(func() { close(registered) })
				out.printf("registered %s\n", u)
			},
		}
		runDone := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(runDone)
			if err := c.Run(ctx); err != nil {
				out.printf("error client %d: %s\n", i, strings.ReplaceAll(err.Error(), "\n", " "))
			}
		}()
		// Free the slot once this client registered, gave up, or took
		// too long.
		go func() {
			defer wg.Done()
			t := time.NewTimer(30 * time.Second)
			defer t.Stop()
			select {
			case <-registered:
			case <-runDone:
			case <-t.C:
			case <-ctx.Done():
			}
			<-sem
		}()
	}
	<-ctx.Done()
	return nil
}

// syncWriter serializes whole lines from many goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, format, args...)
}
