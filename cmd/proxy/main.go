// Command proxy runs a keyhole proxy: it gives each connected client a
// public hostname and forwards that hostname's HTTP and WebSocket traffic
// to it. Run "proxy --help" for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func main() { cli.Main("proxy", run) }

const synopsis = `Usage: proxy [flags]
       proxy token keygen|new [flags]
       proxy revoke [flags]

Runs a keyhole proxy. Clients connect to ws://<listen>` + proxy.ControlPath + `;
the public reaches each client at <hostname>.<domain>.

"proxy token" makes signing keys and access tokens for --token-keys, and
"proxy revoke" revokes a key, a name or a token through --admin; run
"proxy token --help" and "proxy revoke --help".`

// options are the command's settings, filled in by the flags of newFlags.
type options struct {
	access                    accessFiles
	tokens                    tokenOptions
	listen, domain, publicURL string
	cpuProfile                string
	timeout, idleTimeout      time.Duration
	drain                     time.Duration
	ping                      time.Duration
	maxBody, minBodyRate      limiter.Size
	maxWindow                 limiter.Size
	windowBudget, connBudget  limiter.Size
	rate                      float64
	burst                     int
	trusted                   prefixList
	token, logLevel           string
	bus, admin                string
	tls                       tlsOptions
	tcpPorts, tcpBind         string
}

func newFlags() (*flag.FlagSet, *options) {
	o := &options{maxBody: 500 * 1000, minBodyRate: 1000, maxWindow: 8 << 20, windowBudget: 24 << 20, connBudget: 16 << 20}
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", ":8080", "public `address` for HTTP and for client connections")
	fs.StringVar(&o.domain, "domain", "localhost", "apex `domain`; tunnels are served at <hostname>.<domain>")
	fs.StringVar(&o.publicURL, "public-url", "", "base `URL` the public uses to reach the apex, when it differs from\nwhat --listen implies (behind a load balancer or on port 443),\ne.g. https://tunnel.example.com")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for a response's status and headers, while the tunnel\nmakes no progress, before answering 504")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 60*time.Second, "end an HTTP response or request body that moves no byte in either\ndirection for this long (a stream that keeps sending, like Server-Sent\nEvents, lives on)")
	fs.Var(&o.minBodyRate, "min-body-rate", "slowest average `size` per second a request body may arrive at before\nits response starts; a slower one gets 408 once --idle-timeout has passed")
	fs.Var(&o.maxBody, "max-body", "largest whole request body (413), response body (502, or the transfer\naborted) and WebSocket message (1009): a `size` like 500KB or 2MiB\n(KB = 1000 bytes, KiB = 1024); 0 = no cap. Bodies stream whatever\ntheir size; every frame stays capped at 500KB")
	fs.Var(&o.maxWindow, "max-window", "largest flow-control window one stream may grow to: a `size`. A stream's\nspeed is at most its window per round trip")
	fs.Var(&o.connBudget, "conn-window-budget", "memory `size` the windows of one client connection's streams may grow\ninto, together")
	fs.Var(&o.windowBudget, "window-budget", "memory `size` the windows of all streams on this instance may grow\ninto, together; with --bus redis keep it below Redis's pub/sub output\nbuffer limit (32MB by default)")
	fs.Float64Var(&o.rate, "rate", 0, "requests and WebSocket messages per second allowed on each client connection\n(0 = no limit); over it, the public gets 429 with Retry-After")
	fs.IntVar(&o.burst, "burst", 0, "burst allowed above --rate (default twice the rate)")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "on SIGTERM, how long to go on serving while reporting not ready, so a\nload balancer moves away and clients move to other instances, before\nthe proxy stops listening (with --bus redis only; 0 stops at once)")
	fs.DurationVar(&o.ping, "ping", 10*time.Second, "ping interval on idle client connections; a client silent for\ntwice this long is dropped")
	fs.Var(&o.trusted, "trusted-proxies", "comma-separated `CIDRs` of load balancers whose X-Forwarded-* headers\nare believed (default none)")
	fs.StringVar(&o.token, "token", "", "registration `token` every client must present (default none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&o.bus, "bus", "memory", "how instances share tunnels: `memory` for a single instance, or a Redis\nURL shared by every instance behind one load balancer:\nredis://[:password@]host:port/db, or rediss:// for TLS; for a Redis Cluster,\nredis+cluster://[user:password@]host:port,host:port/ (or rediss+cluster://)\nnaming one or more of its nodes")
	fs.StringVar(&o.admin, "admin", "", "`address` of the admin listener: /healthz, /readyz and Prometheus\n/metrics (default off); keep it off the public network")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to `file`, for performance work")
	fs.StringVar(&o.tcpPorts, "tcp-ports", "", "public TCP `ports` (FIRST-LAST, like 20000-20099) that TCP tunnels may\nask to be exposed on too (client tcp --remote-port), on the instance\nholding the client, while it is connected (default none: off). Behind\na load balancer, each port must reach that instance")
	fs.StringVar(&o.tcpBind, "tcp-bind", "", "`address` the --tcp-ports listen on, like 127.0.0.1 (default every\ninterface)")
	o.access.register(fs) // access.go
	o.tokens.register(fs) // token.go
	o.tls.register(fs)    // tls.go
	return fs, o
}

// prefixList is a flag of comma-separated CIDRs or addresses.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	*l = nil
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return fmt.Errorf("%q is not an IP address or CIDR", f)
			}
			*l = append(*l, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return fmt.Errorf("%q is not an IP address or CIDR", f)
		}
		*l = append(*l, p.Masked())
	}
	return nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return runToken(ctx, args[1:], getenv, stdout, stderr) // token.go
		case "revoke":
			return runRevoke(ctx, args[1:], getenv, stdout, stderr) // revoke.go
		}
	}
	fs, o := newFlags()
	if err := cli.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cli.PrintUsage(stdout, fs, synopsis, "")
			return err
		}
		return cli.Usage(err)
	}
	if fs.NArg() > 0 {
		return cli.Usage(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return cli.Usage(err)
	}
	if err := o.tls.check(); err != nil {
		return cli.Usage(err)
	}
	// With HTTPS on, plain HTTP is served only when --listen is given.
	plain := !o.tls.on() || flagGiven(fs, "listen")
	if o.publicURL == "" && o.tls.on() {
		o.publicURL = o.tls.defaultPublicURL(o.domain)
	}
	if o.publicURL == "" {
		o.publicURL, err = defaultPublicURL(o.listen, o.domain)
		if err != nil {
			return cli.Usage(err)
		}
	}
	if o.cpuProfile != "" {
		stop, err := cli.StartCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	o.access.log = log
	var access *proxy.Access
	if o.access.on() {
		if access, err = o.access.load(); err != nil {
			return cli.Usage(err)
		}
	}
	if o.access.interval < 0 {
		return cli.Usage(errors.New("--reload-interval must not be negative"))
	}
	if err := o.tokens.load(log); err != nil {
		return err
	}
	if o.tokens.adminToken != "" && o.admin == "" {
		log.Warn("--admin-token has no effect without --admin")
	}
	// A certificate that does not fit stops the proxy before it listens.
	certs, err := o.tls.loadCert(o.domain, log)
	if err != nil {
		return err
	}
	if err := checkBusURL(o.bus); err != nil {
		return cli.Usage(err)
	}
	// The Redis bus calls back when it has reconnected, possibly to a
	// restarted server that lost the registry; the proxy exists by then
	// unless Redis came back within the moment between the two.
	var current atomic.Pointer[proxy.Proxy]
	var b *redis.Bus
	if o.bus != "memory" {
		redis.LogTo(log)
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		b, err = redis.New(bctx, o.bus, redis.Options{
			Logger: log,
			OnReconnect: func() {
				if p := current.Load(); p != nil {
					rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if err := p.Reannounce(rctx); err != nil {
						log.Warn("re-announce hostnames", "err", err)
					}
				}
			},
		})
		cancel()
		if err != nil {
			return fmt.Errorf("bus: %w", err)
		}
		defer b.Close()
		log.Info("bus connected", "url", redactURL(o.bus))
	}
	var metrics *prometheus.Registry
	if o.admin != "" {
		metrics = prometheus.NewRegistry()
		metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	cfg := proxy.Config{
		Domain:            o.domain,
		PublicURL:         o.publicURL,
		Timeout:           o.timeout,
		IdleTimeout:       o.idleTimeout,
		MinBodyRate:       o.minBodyRate,
		MaxBody:           o.maxBody,
		MaxWindow:         o.maxWindow,
		WindowBudget:      o.windowBudget,
		ConnWindowBudget:  o.connBudget,
		Rate:              o.rate,
		Burst:             o.burst,
		Ping:              o.ping,
		TrustedProxies:    o.trusted,
		RegistrationToken: o.token,
		TokenKeys:         o.tokens.keys,
		AdminToken:        o.tokens.adminToken,
		ReservedNames:     o.tokens.reserved,
		Access:            access,
		Logger:            log,
	}
	if b != nil {
		cfg.Bus, cfg.Registry = b, b
	}
	if o.tcpPorts != "" {
		if cfg.TCPPorts, err = proxy.ParsePortRange(o.tcpPorts); err != nil {
			return cli.Usage(fmt.Errorf("invalid --tcp-ports: %v", err))
		}
		cfg.TCPBind = o.tcpBind
	}
	if metrics != nil {
		cfg.Metrics = metrics
	}
	if o.maxBody == 0 {
		cfg.MaxBody = -1 // the flag's 0 means no cap; the library's zero is the default
	}
	for name, v := range map[string]limiter.Size{"--min-body-rate": o.minBodyRate, "--max-window": o.maxWindow, "--window-budget": o.windowBudget, "--conn-window-budget": o.connBudget} {
		if v == 0 {
			return cli.Usage(fmt.Errorf("invalid %s 0: want a positive size", name))
		}
	}
	if o.idleTimeout <= 0 || o.timeout <= 0 {
		return cli.Usage(errors.New("--timeout and --idle-timeout must be positive"))
	}
	p, err := proxy.New(ctx, cfg)
	if err != nil {
		return cli.Usage(err)
	}
	current.Store(p)
	var tlsServe *tlsServing
	if o.tls.on() {
		var shared func(prefix string) autocert.Cache // ACME state in Redis
		if b != nil {
			shared = b.CertCache
		}
		if tlsServe, err = o.tls.serving(p, certs, shared, o.publicURL, log); err != nil {
			p.Shutdown(context.Background())
			return err
		}
	}
	servers, err := o.openListeners(p, plain, tlsServe, log) // serve.go
	if err != nil {
		p.Shutdown(context.Background())
		return err
	}
	if o.admin != "" {
		stop, err := serveAdmin(o.admin, p.AdminHandler(metrics), log)
		if err != nil {
			servers.closeListeners()
			p.Shutdown(context.Background())
			return err
		}
		// The admin listener outlives the drain, so probes see it.
		defer stop()
	}
	stopWatch := tlsServe.watch(ctx) // certificate files: SIGHUP and polling
	defer stopWatch()
	stopAccess := o.access.watch(ctx, p) // access lists: SIGHUP and polling
	defer stopAccess()
	stopKeys := o.tokens.watch(ctx, o.access.interval) // token keys: the same
	defer stopKeys()
	if err := servers.run(ctx, log.With("tunnels", strings.Replace(o.publicURL, "://", "://<hostname>.", 1))); err != nil {
		p.Shutdown(context.Background())
		return fmt.Errorf("serve: %w", err)
	}
	if o.bus != "memory" && o.drain > 0 {
		// Still serving, but not ready: the load balancer moves away, and
		// the clients move to the other instances. With the in-memory bus
		// there is no other instance to move to.
		log.Info("draining: not ready, still serving", "for", o.drain)
		p.Drain()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		select {
		case <-time.After(o.drain):
		case <-again:
			log.Info("second signal: stopping now")
		}
		signal.Stop(again)
	}
	log.Info("shutting down: no longer listening; finishing in-flight requests", "grace", o.timeout)
	sctx, cancel := context.WithTimeout(context.Background(), o.timeout+5*time.Second)
	defer cancel()
	// The listeners stop first, and every request already read is
	// answered while the proxy still receives its replies over the bus;
	// only then does the proxy close its clients and leave the bus. (The
	// other way round, a request read in the last moment waited for a
	// reply that nobody received, and got 504.)
	p.Drain()
	err = errors.Join(servers.shutdown(sctx, log), p.Shutdown(sctx))
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// checkBusURL accepts "memory", a redis:// or rediss:// URL with a host,
// or a redis+cluster:// or rediss+cluster:// URL naming one or more nodes.
func checkBusURL(s string) error {
	if s == "memory" {
		return nil
	}
	u, err := url.Parse(s)
	ok := err == nil && u.Host != ""
	if ok {
		switch strings.ToLower(u.Scheme) {
		case "redis", "rediss", "redis+cluster", "rediss+cluster":
		default:
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("invalid --bus %q: want memory, redis://host:port/db, rediss://host:port/db or redis+cluster://host:port,host:port/", redactURL(s))
	}
	return nil
}

// redactURL hides a password in a URL for logs and messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// serveAdmin serves h on addr until stop is called.
func serveAdmin(addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	log.Info("admin listening", "addr", ln.Addr().String())
	return func() {
		srv.Close()
		<-done
	}, nil
}

// flagGiven reports whether the flag name was set on the command line or
// through its environment variable.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// defaultPublicURL derives the public base URL from the listen address.
func defaultPublicURL(listen, domain string) (string, error) {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("invalid --listen %q: want host:port or :port", listen)
	}
	if port == "80" {
		return "http://" + domain, nil
	}
	return "http://" + net.JoinHostPort(domain, port), nil
}
