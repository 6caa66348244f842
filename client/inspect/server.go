package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultAddr is where the client command serves the inspector, as ngrok
// does.
const DefaultAddr = "127.0.0.1:4040"

// portTries is how many ports Listen tries, from the one asked for up:
// ngrok too moves to 4041 when 4040 is taken.
const portTries = 10

// ErrNeedsToken is returned by [CheckAddr] and [Listen] for an address
// reachable from other machines when no token is set.
var ErrNeedsToken = errors.New("reachable beyond this machine: set a token to listen there")

// CheckAddr reports whether the inspector may listen at addr (host:port):
// any loopback address may; another needs a token.
func CheckAddr(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("inspector: invalid address %q: want host:port, like %s", addr, DefaultAddr)
	}
	if isLoopbackName(host) || token != "" {
		return nil
	}
	return fmt.Errorf("inspector: %s is %w", addr, ErrNeedsToken)
}

func isLoopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Listen opens the inspector's listener at addr, after [CheckAddr]. When
// the port is taken it tries the next ones, up to 9 more, as ngrok does
// (4040, 4041, ...); the listener's Addr says which it got.
func Listen(addr, token string) (net.Listener, error) {
	if err := CheckAddr(addr, token); err != nil {
		return nil, err
	}
	host, p, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("inspector: invalid port in %q", addr)
	}
	var first error
	for i := 0; i < portTries && port+i <= 65535; i++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port+i)))
		if err == nil {
			return ln, nil
		}
		if first == nil {
			first = err
		}
		if port == 0 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if errors.Is(first, syscall.EADDRINUSE) && port != 0 {
		return nil, fmt.Errorf("inspector: ports %d to %d on %s are all in use", port, min(port+portTries-1, 65535), host)
	}
	return nil, fmt.Errorf("inspector: %w", first)
}

// Serve serves the inspector on ln until ctx ends, then closes it,
// long-lived event streams included. o.Addr defaults to ln's address.
func (s *Store) Serve(ctx context.Context, ln net.Listener, o HandlerOptions) error {
	if o.Addr == "" {
		o.Addr = ln.Addr().String()
	}
	base, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s.Handler(o),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-base.Done()
		srv.Close()
	}()
	err := srv.Serve(ln)
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
