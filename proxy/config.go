package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// Config configures a [Proxy]. The zero value of every field is its
// documented default.
type Config struct {
	// Domain is the apex under which tunnels get hostnames:
	// "<label>.<Domain>". Default "localhost".
	Domain string
	// PublicURL is the base URL the public uses to reach the apex, such as
	// "https://tunnel.example.com" behind a load balancer. Tunnel URLs are
	// derived from it by prefixing the hostname label. Default
	// "http://<Domain>".
	PublicURL string
	// Bus carries requests between instances. Default: a private in-memory
	// bus. Registry must be set together with Bus.
	Bus bus.Bus
	// Registry records which instance holds which hostname. Default: the
	// in-memory bus, when Bus is also unset.
	Registry bus.Registry
	// Timeout bounds the wait for a response head (the HTTP status and
	// headers, or the WebSocket handshake's answer) while the tunnel makes
	// no progress; past it the public caller gets 504. Default 30s.
	Timeout time.Duration
	// IdleTimeout ends an HTTP exchange whose body moves no byte in either
	// direction for this long, once its head is answered (a stream that
	// keeps sending, like Server-Sent Events, lives on); it also bounds a
	// request body that stalls. Default 60s.
	IdleTimeout time.Duration
	// MinBodyRate is the slowest a request body may arrive, on average,
	// before its response head: a body that trickles in slower gets 408
	// once IdleTimeout has passed. Default 1KB per second.
	MinBodyRate limiter.Size
	// MaxBody caps the whole of each request body (413), each response
	// body (502, or the transfer aborted once it has begun) and each
	// WebSocket message (1009). Default 500KB; negative means no cap. Every
	// frame stays capped at messages.MaxFrame whatever this says.
	MaxBody limiter.Size
	// MaxWindow caps the receive window one stream may grow to. Default
	// 8MiB.
	MaxWindow limiter.Size
	// ConnWindowBudget bounds the window growth of the streams of one
	// client connection, together, on this instance; the client is told
	// to keep within it too. Default 16MiB.
	ConnWindowBudget limiter.Size
	// WindowBudget bounds the window growth of every stream on this
	// instance together. Default 24MiB: with a Redis bus, what one
	// instance has granted can sit in its pub/sub connection's output
	// buffer, which Redis cuts off at 32MB by default.
	WindowBudget limiter.Size
	// Rate and Burst limit requests and WebSocket messages per second on
	// each client connection. Rate 0 means no limit. Burst defaults to
	// twice Rate, at least 1.
	Rate  float64
	Burst int
	// Ping is how often each side of an idle client connection sends a
	// Ping; a client silent for twice as long is dropped. Default 10s.
	Ping time.Duration
	// TrustedProxies lists the peers whose X-Forwarded-* headers are
	// believed. Default: none.
	TrustedProxies []netip.Prefix
	// RegistrationToken, when set, must be presented by every client.
	RegistrationToken string
	// TokenKeys, when set, are the operator's public keys for access
	// tokens (see [IssueToken]); every client then needs a valid token.
	// The set may change while the proxy runs ([TokenKeys.Set],
	// [TokenKeys.Reloader]).
	TokenKeys *TokenKeys
	// AdminToken, when set, turns on POST /revoke on [Proxy.AdminHandler]
	// for callers presenting it as "Authorization: Bearer <AdminToken>".
	// Empty: the endpoint is off (404).
	AdminToken string
	// ReservedNames are friendly names no token can grant on this proxy,
	// besides [ReservedNames] and the first label of Domain.
	ReservedNames []string
	// Access restricts which keys may register (allow and deny lists);
	// nil admits every key. Proxy.SetAccess changes it later.
	Access *Access
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// Metrics, when set, receives the proxy's Prometheus collectors
	// (connected clients, requests by status, latency, bus errors,
	// WebSocket streams, dropped messages); serve them with
	// [Proxy.AdminHandler]. Default: no metrics.
	Metrics prometheus.Registerer

	// StreamWriteTimeout bounds one write to a public WebSocket: a visitor
	// that accepts nothing for this long fails its own stream (close 1008),
	// and the client's other streams are unaffected. Default 10s.
	StreamWriteTimeout time.Duration

	// TCPPorts, when set, is the range of public TCP ports a TCP tunnel's
	// client may ask to be exposed on as well (client tcp --remote-port),
	// for visitors who cannot run client connect. The instance holding the
	// client listens on the port while the client is connected, at
	// TCPBind. Default: none, and a client that asks is refused.
	TCPPorts PortRange
	// TCPBind is the address the public TCP ports listen on. Default ""
	// (every interface).
	TCPBind string

	// challengeTTL is how long a registration challenge stays valid.
	// Default 60s; tests shorten it.
	challengeTTL time.Duration
	// registrationTimeout bounds the registration handshake. Default 10s;
	// tests shorten it.
	registrationTimeout time.Duration
	// maxPending bounds the exchanges in flight on one client connection.
	// Default 4096; tests lower it.
	maxPending int
}

// MaxHeaderBytes is the header size limit the proxy's public listener
// should use (http.Server.MaxHeaderBytes); larger requests get 431. A
// request under it whose head would still encode to more than
// messages.MaxHead gets 431 from the proxy itself.
const MaxHeaderBytes = 64 << 10

const (
	defaultTimeout          = 30 * time.Second
	defaultIdleTimeout      = 60 * time.Second
	defaultMinBodyRate      = 1000
	defaultMaxBody          = 500 * 1000
	defaultMaxWindow        = 8 << 20
	defaultConnWindowBudget = 16 << 20
	defaultWindowBudget     = 24 << 20
	defaultPing             = 10 * time.Second
	// defaultRegistrationTimeout bounds the whole registration handshake.
	defaultRegistrationTimeout = 10 * time.Second
	// defaultMaxPending bounds the HTTP exchanges and streams in flight on
	// one client connection; more get 503.
	defaultMaxPending = 4096
	// writeTimeout bounds one websocket write; a peer that accepts nothing
	// for this long is dropped.
	writeTimeout = 10 * time.Second
)

func (c Config) withDefaults() (Config, error) {
	c.Domain = strings.TrimSuffix(strings.ToLower(c.Domain), ".")
	if c.Domain == "" {
		c.Domain = "localhost"
	}
	if strings.ContainsAny(c.Domain, "/: ") {
		return c, fmt.Errorf("invalid domain %q: want a bare DNS name like tunnel.example.com", c.Domain)
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.Domain
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return c, fmt.Errorf("invalid public URL %q: want scheme://host[:port], like https://%s", c.PublicURL, c.Domain)
	}
	if !strings.EqualFold(u.Hostname(), c.Domain) {
		return c, fmt.Errorf("public URL %q must name the domain %q", c.PublicURL, c.Domain)
	}
	if (c.Bus == nil) != (c.Registry == nil) {
		return c, errors.New("bus and registry must be set together")
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.MinBodyRate == 0 {
		c.MinBodyRate = defaultMinBodyRate
	}
	switch {
	case c.MaxBody == 0:
		c.MaxBody = defaultMaxBody
	case c.MaxBody < 0:
		c.MaxBody = 0 // no cap
	}
	if c.MaxWindow == 0 {
		c.MaxWindow = defaultMaxWindow
	}
	if c.ConnWindowBudget == 0 {
		c.ConnWindowBudget = defaultConnWindowBudget
	}
	if c.WindowBudget == 0 {
		c.WindowBudget = defaultWindowBudget
	}
	if c.Ping == 0 {
		c.Ping = defaultPing
	}
	if c.Timeout < 0 || c.IdleTimeout < 0 || c.MinBodyRate < 0 || c.Ping < 0 || c.Rate < 0 || c.Burst < 0 ||
		c.StreamWriteTimeout < 0 || c.MaxWindow < 0 || c.ConnWindowBudget < 0 || c.WindowBudget < 0 {
		return c, errors.New("timeouts, rates, ping, burst, windows and budgets must not be negative")
	}
	if c.MaxBody > 1<<30 {
		return c, errors.New("max body must be at most 1GiB, or negative for no cap")
	}
	if c.MaxWindow < messages.InitialWindow || c.MaxWindow > 1<<30 {
		return c, fmt.Errorf("max window must be from %v to 1GiB", limiter.Size(messages.InitialWindow))
	}
	if c.Rate > 0 && c.Burst == 0 {
		c.Burst = max(1, int(2*c.Rate))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := c.TCPPorts.check(); err != nil {
		return c, err
	}
	if c.StreamWriteTimeout == 0 {
		c.StreamWriteTimeout = writeTimeout
	}
	if c.challengeTTL == 0 {
		c.challengeTTL = 60 * time.Second
	}
	if c.registrationTimeout == 0 {
		c.registrationTimeout = defaultRegistrationTimeout
	}
	if c.maxPending == 0 {
		c.maxPending = defaultMaxPending
	}
	return c, nil
}

// tunnelURL returns the public URL of a hostname label.
func (c *Config) tunnelURL(label string) string {
	u, _ := url.Parse(c.PublicURL) // validated in withDefaults
	return u.Scheme + "://" + label + "." + u.Host
}
