// Command client publishes a local web service through a keyhole proxy.
// It prints the public URL on stdout and one line per request on stderr.
// Run "client --help" for the flags.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/client/webhook"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/limiter"
)

func main() { cli.Main("client", run) }

const synopsis = `Usage: client [flags] TARGET

Publishes the local web service TARGET through a keyhole proxy. TARGET is a
port (3000), a host:port (127.0.0.1:3000) or a URL (http://localhost:3000/app);
h2c://127.0.0.1:50051 speaks HTTP/2 without TLS to the service, as a gRPC
server wants.
The public URL is printed on stdout each time the client registers; logs,
including one line per request, go to stderr.
The inspector, a page that lists the requests as they happen and can
replay them, is at http://127.0.0.1:4040 (see --inspect); its API speaks
ngrok's: curl -s localhost:4040/api/tunnels | jq -r '.tunnels[0].public_url'`

// options are the command's settings, filled in by the flags of newFlags.
type options struct {
	proxyURL, keyFile, hostHeader, token, caFile, logLevel string
	maxConcurrent                                          int
	cpuProfile                                             string
	inspectAddr, inspectToken                              string
	inspectBuffer                                          limiter.Size
	names                                                  cli.List
	webhooks                                               cli.List // specs; see webhook.ParseRule
}

func newFlags() (*flag.FlagSet, *options) {
	o := &options{}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&o.proxyURL, "proxy", "ws://localhost:8080", "the proxy's `URL`, ws:// or wss://")
	fs.StringVar(&o.keyFile, "key", "", "private key `file` (JWK); created on first use. The same key\nalways gets the same hostname (default keyhole/client.jwk in the\nuser's config directory)")
	fs.StringVar(&o.hostHeader, "host-header", "", "Host header sent to the local service: empty keeps the public\nhostname, \"rewrite\" uses TARGET's host, anything else is sent as given")
	fs.StringVar(&o.token, "token", "", "the `token` the proxy requires, if any: its shared registration token,\nor an access token its operator issued. Never logged")
	fs.Var(&o.names, "name", "also publish at `NAME`.<domain>, a friendly name the --token grants;\nrepeatable, or several separated by commas. The URL printed is the\nfirst name's")
	fs.StringVar(&o.caFile, "ca", "", "PEM `file` of CA certificates to trust for a wss:// proxy, in\naddition to the system roots")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.IntVar(&o.maxConcurrent, "max-concurrent", 1024, "requests and WebSocket streams served at once; more get 503")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to `file`, for performance work")
	fs.StringVar(&o.inspectAddr, "inspect", inspect.DefaultAddr, "serve the inspector (a page of the requests and an ngrok-compatible\nAPI) at `ADDR`, or \"off\". When the port is taken, the next free one\nof the 9 after it is used")
	o.inspectBuffer = inspect.DefaultBudget
	fs.Var(&o.inspectBuffer, "inspect-buffer", "memory the inspector keeps requests in, a `SIZE` such as 50MB; 0\nkeeps none (the status and the API still work)")
	fs.StringVar(&o.inspectToken, "inspect-token", "", "`token` the inspector requires, as a bearer token or once as\n/?token=TOKEN; needed for an --inspect address beyond loopback")
	fs.Var(&o.webhooks, "webhook", "check webhook signatures in the client, before the local service\nsees a request. `SPEC` is\n"+webhook.SpecSyntax+".\nA missing, wrong or replayed signature gets 401, a Stripe or Slack\ntimestamp over 5 minutes off too; other paths pass untouched.\nRepeatable, or several separated by commas. Examples:\n--webhook github=env:GITHUB_WEBHOOK_SECRET\n--webhook stripe:/hooks/stripe=file:/run/secrets/stripe")
	return fs, o
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, o := newFlags()
	if err := cli.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cli.PrintUsage(stdout, fs, synopsis, "")
			return err
		}
		return cli.Usage(err)
	}
	if fs.NArg() != 1 {
		return cli.Usage(errors.New("expected exactly one TARGET, like 3000 or http://localhost:3000"))
	}
	target, err := parseTarget(fs.Arg(0))
	if err != nil {
		return cli.Usage(err)
	}
	if _, err := client.ControlURL(o.proxyURL); err != nil {
		return cli.Usage(fmt.Errorf("invalid --proxy %q: want ws://host:port or wss://host", o.proxyURL))
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return cli.Usage(err)
	}
	if o.maxConcurrent < 1 {
		return cli.Usage(fmt.Errorf("invalid --max-concurrent %d: want at least 1", o.maxConcurrent))
	}
	webhooks := make([]webhook.Rule, 0, len(o.webhooks))
	for _, spec := range o.webhooks {
		// The error names the provider and path, never the secret.
		r, err := webhook.ParseRule(spec, getenv)
		if err != nil {
			return cli.Usage(fmt.Errorf("invalid --webhook: %v", err))
		}
		webhooks = append(webhooks, r)
	}
	if o.inspectAddr != "off" {
		switch err := inspect.CheckAddr(o.inspectAddr, o.inspectToken); {
		case errors.Is(err, inspect.ErrNeedsToken):
			return cli.Usage(fmt.Errorf("--inspect %s is reachable beyond this machine: set --inspect-token too, or listen on 127.0.0.1", o.inspectAddr))
		case err != nil:
			return cli.Usage(fmt.Errorf("invalid --inspect %q: want host:port, like %s, or off", o.inspectAddr, inspect.DefaultAddr))
		}
	}
	if o.cpuProfile != "" {
		stop, err := cli.StartCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	var tlsConfig *tls.Config
	if o.caFile != "" {
		tlsConfig, err = loadCA(o.caFile)
		if err != nil {
			return err
		}
	}
	path := o.keyFile
	if path == "" {
		if path, err = client.DefaultKeyPath(); err != nil {
			return err
		}
	}
	key, err := client.LoadOrCreateKey(path)
	if err != nil {
		return err
	}
	log.Info("forwarding", "target", target.String(), "proxy", o.proxyURL, "key", path)
	for _, r := range webhooks {
		log.Info("checking webhook signatures", "rule", r) // without the secret: see Rule.LogValue
	}
	store, stopInspector := startInspector(ctx, o, log)
	defer stopInspector()
	c := &client.Client{
		Proxy:         o.proxyURL,
		Key:           key,
		Target:        target,
		HostHeader:    o.hostHeader,
		Token:         o.token,
		Names:         lowerAll(o.names),
		TLSConfig:     tlsConfig,
		Logger:        log,
		OnRegister:    func(u string) { fmt.Fprintln(stdout, u) },
		MaxConcurrent: o.maxConcurrent,
		Inspect:       store,
		Webhooks:      webhooks,
	}
	return c.Run(ctx)
}

// startInspector serves the inspector as the flags say, and returns its
// store (nil when it is off) and a function that stops it. An inspector
// that cannot listen is not worth stopping the tunnel for: the client says
// why and goes on without it.
func startInspector(ctx context.Context, o *options, log *slog.Logger) (*inspect.Store, func()) {
	if o.inspectAddr == "off" {
		return nil, func() {}
	}
	ln, err := inspect.Listen(o.inspectAddr, o.inspectToken)
	if err != nil {
		log.Warn("inspector not started; going on without it", "err", err)
		return nil, func() {}
	}
	budget := int64(o.inspectBuffer)
	if budget == 0 {
		budget = -1 // capture off
	}
	store := inspect.New(inspect.Options{Budget: budget})
	host, _, _ := net.SplitHostPort(o.inspectAddr)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addr := net.JoinHostPort(host, port)
	shown := addr
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		addr, shown = ln.Addr().String(), net.JoinHostPort("127.0.0.1", port)
	}
	attrs := []any{"url", "http://" + shown}
	if asked := o.inspectAddr[strings.LastIndexByte(o.inspectAddr, ':')+1:]; asked != port {
		attrs = append(attrs, "note", "port "+asked+" is in use")
	}
	log.Info("inspector", attrs...)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := store.Serve(sctx, ln, inspect.HandlerOptions{Addr: addr, Token: o.inspectToken}); err != nil {
			log.Warn("inspector stopped", "err", err)
		}
	}()
	return store, func() {
		cancel()
		<-done
	}
}

// parseTarget accepts a port, a host:port or a URL.
func parseTarget(s string) (*url.URL, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 65535 {
			return nil, fmt.Errorf("invalid TARGET port %d", n)
		}
		return &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", s)}, nil
	}
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("invalid TARGET %q: want a port, host:port or http:// URL", s)
		}
		return &url.URL{Scheme: "http", Host: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "h2c") || u.Host == "" {
		return nil, fmt.Errorf("invalid TARGET %q: want a port, host:port, or an http://, https:// or h2c:// URL", s)
	}
	return u, nil
}

func loadCA(path string) (*tls.Config, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// lowerAll lowercases names: hostnames are case-insensitive, and the proxy
// checks them in lower case.
func lowerAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}
