package client

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/client/webhook"
	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// Client publishes a local service through a keyhole proxy. Set Key and
// one of Target or Handler, then call Run. The zero value of every other
// field is its documented default. A Client must not be changed once Run
// has started.
type Client struct {
	// Proxy is the proxy's URL, ws:// or wss://, optionally with a path
	// prefix. http:// and https:// are accepted as synonyms. Default
	// "ws://localhost:8080".
	Proxy string
	// Key signs the registration and determines the hostname. Required;
	// see LoadOrCreateKey.
	Key crypto.Signer
	// Target is the local service's base URL, such as
	// "http://127.0.0.1:3000". Request paths are appended to its path.
	// The scheme h2c ("h2c://127.0.0.1:50051") speaks HTTP/2 without TLS
	// to the local service, as gRPC servers do.
	Target *url.URL
	// Handler, when set instead of Target, serves requests in-process.
	Handler http.Handler
	// HostHeader chooses the Host the local service sees: "" keeps the
	// public hostname (the local service can build absolute links and
	// check WebSocket origins); "rewrite" uses Target's host; anything
	// else is used as given.
	HostHeader string
	// Token is what the proxy requires to register, if anything: its
	// shared registration token, or an access token its operator issued.
	Token string
	// Pool shares the key's hostname with every other connection of the
	// same key that sets Pool too (replicas of one service): the proxy
	// spreads requests over them. Without it, the newest connection of a
	// key takes the hostname over. Default false.
	Pool bool
	// Names are friendly names to be served at as well, each
	// "<name>.<domain>"; the access token in Token must grant them.
	// Default: none, only the key's hostname.
	Names []string
	// TLSConfig verifies a wss:// proxy. Default: the system roots.
	TLSConfig *tls.Config
	// Transport carries requests to Target. Default: a keep-alive
	// transport sized for a busy tunnel.
	Transport http.RoundTripper
	// Logger receives one line per proxied request and connection
	// events. Default: discard.
	Logger *slog.Logger
	// OnRegister is called with the public URL each time the client
	// registers, after every reconnect too: the first name's URL when
	// Names are set, else the key's hostname's.
	OnRegister func(publicURL string)
	// MaxConcurrent bounds the requests and WebSocket streams served at
	// once; more are answered 503 by the proxy. Default 1024.
	MaxConcurrent int
	// Inspect, when set, records every exchange and the connection's
	// state, for the inspector's page and API (serve Inspect.Handler).
	// Default: nil, no capture.
	Inspect *inspect.Store
	// Webhooks, when set, checks webhook signatures (GitHub, Stripe,
	// Slack) in the client, before a request reaches the local service,
	// with Target and with Handler alike; the secrets never leave the
	// client. A request a rule covers gets 401 for a missing, wrong or
	// replayed signature and never reaches the service; one no rule
	// covers passes untouched. The replay memory lasts as long as Run,
	// across reconnects. The inspector's replays are not checked. See
	// package webhook for the rules and the limits. Default: none.
	Webhooks []webhook.Rule
	// BasicAuth, when set, makes the proxy ask every visitor for one of
	// these users and passwords (HTTP Basic authentication, a browser's
	// standard prompt) before anything reaches the tunnel: 401 otherwise.
	// The passwords never leave the client: the registration carries
	// bcrypt hashes, made once per Run. At most 16. Default: none.
	BasicAuth []Credential
	// AllowIP, when set, admits only visitors whose address is in one of
	// these prefixes; DenyIP refuses visitors in any of its, even when
	// AllowIP covers them. Refused visitors get 403 from the proxy. The
	// address is the one the proxy sees: the TCP peer, or what its
	// trusted proxies forward. An IPv4 prefix matches IPv4 visitors, an
	// IPv6 prefix IPv6 ones; an IPv4-mapped prefix counts as IPv4, and
	// host bits are ignored. At most 64 each. Default: none.
	AllowIP, DenyIP []netip.Prefix
	// TCP, set instead of Target and Handler, publishes a raw TCP service
	// (a database, SSH): visitors reach it with `client connect` or a
	// [Visitor], each of their connections a TCP stream to TCP.Target.
	// The tunnel then carries no HTTP: the proxy answers HTTP visitors
	// with a page saying how to reach it. See [TCPService].
	TCP *TCPService

	// pipe, set by Listen instead of Handler, is the in-process listener
	// whose connections Listen's caller serves.
	pipe *pipeListener
}

// ErrReplaced is returned by Run when another connection registered the
// same key; reconnecting would only take the hostname back and forth.
var ErrReplaced = errors.New("replaced by a newer connection with the same key")

// RefusedError is returned by Run when the proxy refuses the registration.
// Retrying would not help, so Run stops.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "proxy refused registration: " + e.Reason }

// Backoff bounds between reconnection attempts.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// errUnavailable marks a refusal from an instance that takes no
// connections now (it is draining). Right after a move, the client tries
// again quickly, movingTries times at most: the load balancer will send it
// elsewhere, and the old connection, still carrying its traffic, will not
// be there for long.
var errUnavailable = errors.New("the proxy instance is not taking connections")

const (
	movingTries = 8
	movingWait  = 100 * time.Millisecond
)

// Run connects to the proxy and serves until ctx ends, reconnecting as
// needed. It returns nil when ctx ends, or an error that retrying cannot
// fix: a bad configuration, a [*RefusedError], or [ErrReplaced].
func (c *Client) Run(ctx context.Context) error {
	r, err := c.newRunner()
	if err != nil {
		return err
	}
	defer r.close()
	c.Inspect.Start(inspect.Upstream{Addr: r.target.String(), RoundTrip: r.replay})
	defer c.Inspect.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := minBackoff
	moving := 0 // quick tries left after a move
	for {
		s := r.newSession()
		moved := make(chan struct{}, 1)
		done := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			done <- s.run(ctx, moved)
		}()
		var err error
		select {
		case err = <-done:
		case <-moved:
			// The proxy is draining: connect again at once, through the
			// load balancer to another instance, while this session
			// finishes what it has in flight.
			r.log.Info("proxy is draining; moving to another instance")
			backoff, moving = minBackoff, movingTries
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		c.Inspect.Disconnected(err)
		var refused *RefusedError
		if errors.As(err, &refused) || errors.Is(err, ErrReplaced) {
			return err
		}
		if s.registered && (s.carried.Load() || time.Since(s.started) > 2*maxBackoff) {
			// The last connection worked: this is a new failure, not the
			// same one again.
			backoff = minBackoff
		}
		if s.registered {
			moving = 0
		}
		var wait time.Duration
		wait, backoff, moving = nextWait(backoff, moving, err)
		r.log.Warn("connection lost; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// nextWait returns how long to wait after a failed connection, and the
// backoff and quick tries left for the one after. Full jitter keeps many
// clients from reconnecting in step.
func nextWait(backoff time.Duration, moving int, err error) (wait, nextBackoff time.Duration, nextMoving int) {
	if moving > 0 && errors.Is(err, errUnavailable) {
		return movingWait/2 + rand.N(movingWait/2+1), backoff, moving - 1
	}
	return backoff/2 + rand.N(backoff/2+1), min(2*backoff, maxBackoff), moving
}

// runner holds what every session of one Run shares.
type runner struct {
	maxConcurrent int
	c             *Client
	log           *slog.Logger
	controlURL    string
	transport     http.RoundTripper
	wsTransport   http.RoundTripper // WebSocket handshakes: always HTTP/1.1
	target        *url.URL
	server        *http.Server // in-process handler mode
	listener      *pipeListener
	serveDone     chan struct{}
	webhooks      *webhook.Verifier    // nil: no checks
	protect       *messages.Protection // hashed once per Run; nil: none
}

func (c *Client) newRunner() (*runner, error) {
	if c.Key == nil {
		return nil, errors.New("client: Key is required")
	}
	if err := checkKey(c.Key); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if countSet(c.Target != nil, c.Handler != nil || c.pipe != nil, c.TCP != nil) != 1 {
		return nil, errors.New("client: set exactly one of Target, Handler and TCP")
	}
	control, err := ControlURL(c.Proxy)
	if err != nil {
		return nil, err
	}
	var webhooks *webhook.Verifier
	if len(c.Webhooks) > 0 {
		if webhooks, err = webhook.New(webhook.Config{Rules: c.Webhooks}); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	protect, err := c.protection()
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	r := &runner{c: c, log: c.Logger, controlURL: control, maxConcurrent: c.MaxConcurrent, webhooks: webhooks, protect: protect}
	if c.Inspect != nil {
		// The sessions tell registrations to OnRegister: the inspector
		// hears them there too, through a copy of c.
		cc := *c
		cc.OnRegister = func(u string) {
			c.Inspect.Registered(u)
			if c.OnRegister != nil {
				c.OnRegister(u)
			}
		}
		r.c = &cc
	}
	if r.maxConcurrent <= 0 {
		r.maxConcurrent = defaultMaxConcurrent
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if c.TCP != nil {
		if err := r.setupTCP(); err != nil {
			return nil, err
		}
	} else if c.Target != nil {
		switch {
		case c.Target.Host == "",
			c.Target.Scheme != "http" && c.Target.Scheme != "https" && c.Target.Scheme != "h2c":
			return nil, fmt.Errorf("client: target %q must be an http://, https:// or h2c:// URL", c.Target)
		}
		dial := (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t := *c.Target
		r.target = &t
		r.transport = c.Transport
		if r.transport == nil {
			r.transport = newTransport(dial)
		}
		r.wsTransport = r.transport
		if t.Scheme == "h2c" {
			r.target.Scheme = "http"
			if c.Transport == nil {
				r.transport = newH2CTransport(dial)
			}
			r.wsTransport = newTransport(dial)
		}
	} else {
		r.target = &url.URL{Scheme: "http", Host: "in-process"}
		r.listener = c.pipe // Listen's: its caller serves the connections
		if r.listener == nil {
			r.listener = newPipeListener()
			r.server = &http.Server{Handler: c.Handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(r.log.Handler(), slog.LevelDebug)}
			r.serveDone = make(chan struct{})
			go func() {
				defer close(r.serveDone)
				r.server.Serve(r.listener)
			}()
		}
		r.transport = newTransport(r.listener.dial)
		r.wsTransport = r.transport
	}
	return r, nil
}

// replay sends a request the inspector replays to the local service, the
// way serveHTTP sends one.
func (r *runner) replay(req *http.Request) (*http.Response, error) {
	u, err := joinURL(r.target, req.URL.RequestURI())
	if err != nil {
		return nil, err
	}
	req.URL = u
	req.Host = r.hostHeader(req.Host)
	return r.transport.RoundTrip(req)
}

func (r *runner) close() {
	if r.server != nil {
		r.server.Close() // also closes upgraded in-process connections' listener
		<-r.serveDone
	}
	for _, rt := range []http.RoundTripper{r.transport, r.wsTransport} {
		if t, ok := rt.(*http.Transport); ok && rt != r.c.Transport {
			t.CloseIdleConnections()
		}
	}
	if r.listener != nil {
		// Upgraded connections outlive the server; end what is left.
		r.listener.closeAll()
	}
}

// dialProxy returns the HTTP client that opens one connection to the proxy,
// and the connection it dialed, once it has: its writes are corked for each
// websocket message (see wsbuf.CorkConn).
func (r *runner) dialProxy() (client *http.Client, dialed func() *wsbuf.CorkConn, done func()) {
	var conn atomic.Pointer[wsbuf.CorkConn]
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cc := wsbuf.NewCorkConn(c)
			conn.Store(cc)
			return cc, nil
		},
		TLSClientConfig:     r.c.TLSConfig,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: t}, conn.Load, t.CloseIdleConnections
}

// newTransport returns a keep-alive transport for the local service. It
// keeps plenty of idle connections: a tunnel funnels all its traffic to one
// host, and a small per-host idle limit would make most requests dial.
func newTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // the local service is local: never via an HTTP proxy
		DialContext:           dial,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // the proxy's timeout governs
		// A local service may answer before the body of an Expect:
		// 100-continue request moves; one that never says 100 gets the
		// body after a second.
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// newH2CTransport returns a transport that speaks HTTP/2 without TLS
// ("prior knowledge") to the local service, for gRPC servers and others
// that speak nothing else.
func newH2CTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	t := newTransport(dial)
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

// ControlURL turns a proxy URL as users write it into the websocket URL
// of its control endpoint.
func ControlURL(proxy string) (string, error) {
	if proxy == "" {
		proxy = "ws://localhost:8080"
	}
	if !strings.Contains(proxy, "://") {
		proxy = "ws://" + proxy
	}
	u, err := url.Parse(proxy)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("client: invalid proxy URL %q: want ws://host:port or wss://host", proxy)
	}
	switch u.Scheme {
	case "ws", "http":
		u.Scheme = "ws"
	case "wss", "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("client: invalid proxy URL %q: scheme must be ws or wss", proxy)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + controlPath
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// controlPath is the proxy's control endpoint; see docs/PROTOCOL.md.
const controlPath = messages.ControlPath
