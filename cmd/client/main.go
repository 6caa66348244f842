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
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/client/webhook"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

func main() { cli.Main("client", run) }

const synopsis = `Usage: client [flags] TARGET
       client --config FILE [--check] [flags]
       client tcp [flags] TARGET                     (a TCP service; see client tcp --help)
       client connect [flags] --listen ADDR HOSTNAME (reach one; see client connect --help)

Publishes the local web service TARGET through a keyhole proxy. TARGET is a
port (3000), a host:port (127.0.0.1:3000) or a URL (http://localhost:3000/app);
h2c://127.0.0.1:50051 speaks HTTP/2 without TLS to the service, as a gRPC
server wants.
The public URL is printed on stdout each time the client registers; logs,
including one line per request, go to stderr.
The inspector, a page that lists the requests as they happen and can
replay them, is at http://127.0.0.1:4040 (see --inspect); its API speaks
ngrok's: curl -s localhost:4040/api/tunnels | jq -r '.tunnels[0].public_url'

With --config, the TOML file FILE lists the tunnels, one [[tunnel]] table
each, with target and key (each tunnel its own key file, so its own
hostname) and optionally name, basic_auth, allow_ip, deny_ip, host_header,
pool, max_concurrent, webhook and token, which mean what the flags of the
same name (with - for _) mean, for that tunnel only. This one process runs
them all, one connection each; each registration prints "URL TARGET" on
stdout. The file's top-level keys proxy, token, log_level, ca, inspect,
inspect_token and inspect_buffer set those flags, and the rule is: the
command line beats the environment, which beats the file, which beats the
default; a tunnel's own token beats the global one. The other flags, and
a TARGET, are per tunnel: with --config they are an error. Relative paths
in the file are relative to its directory. --check validates FILE, prints
each mistake as FILE:LINE: message and exits 1, or exits 0. Each tunnel
has its own inspector, on the ports from --inspect's up.`

// options are the command's settings, filled in by the flags of newFlags.
type options struct {
	proxyURL, keyFile, hostHeader, token, caFile, logLevel string
	maxConcurrent                                          int
	cpuProfile                                             string
	configFile                                             string
	check                                                  bool
	inspectAddr, inspectToken                              string
	inspectBuffer                                          limiter.Size
	names                                                  cli.List
	pool                                                   bool
	webhooks                                               cli.List  // specs; see webhook.ParseRule
	basicAuth                                              cli.Lines // USER:PASSWORD each
	allowIP, denyIP                                        cli.List
}

func newFlags() (*flag.FlagSet, *options) {
	o := &options{}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&o.proxyURL, "proxy", "ws://localhost:8080", "the proxy's `URL`, ws:// or wss://")
	fs.StringVar(&o.keyFile, "key", "", "private key `file` (JWK); created on first use. The same key\nalways gets the same hostname (default keyhole/client.jwk in the\nuser's config directory)")
	fs.StringVar(&o.hostHeader, "host-header", "", "Host header sent to the local service: empty keeps the public\nhostname, \"rewrite\" uses TARGET's host, anything else is sent as given")
	fs.StringVar(&o.token, "token", "", "the `token` the proxy requires, if any: its shared registration token,\nor an access token its operator issued. Never logged")
	fs.Var(&o.names, "name", "also publish at `NAME`.<domain>, a friendly name the --token grants;\nrepeatable, or several separated by commas. The URL printed is the\nfirst name's")
	fs.BoolVar(&o.pool, "pool", false, "share the key's hostname with the other clients of the same key that\nset --pool too (replicas of one service): the proxy spreads requests\nover them. Without it, the newest client of a key takes the hostname")
	fs.StringVar(&o.caFile, "ca", "", "PEM `file` of CA certificates to trust for a wss:// proxy, in\naddition to the system roots")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.IntVar(&o.maxConcurrent, "max-concurrent", 1024, "requests and WebSocket streams served at once; more get 503")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to `file`, for performance work")
	fs.StringVar(&o.configFile, "config", "", "run the tunnels the TOML `FILE` lists, instead of one TARGET (see above)")
	fs.BoolVar(&o.check, "check", false, "with --config: validate the file, report every mistake and exit")
	fs.StringVar(&o.inspectAddr, "inspect", inspect.DefaultAddr, "serve the inspector (a page of the requests and an ngrok-compatible\nAPI) at `ADDR`, or \"off\". When the port is taken, the next free one\nof the 9 after it is used")
	o.inspectBuffer = inspect.DefaultBudget
	fs.Var(&o.inspectBuffer, "inspect-buffer", "memory the inspector keeps requests in, a `SIZE` such as 50MB; 0\nkeeps none (the status and the API still work)")
	fs.StringVar(&o.inspectToken, "inspect-token", "", "`token` the inspector requires, as a bearer token or once as\n/?token=TOKEN; needed for an --inspect address beyond loopback")
	fs.Var(&o.webhooks, "webhook", "check webhook signatures in the client, before the local service\nsees a request. `SPEC` is\n"+webhook.SpecSyntax+".\nA missing, wrong or replayed signature gets 401, a Stripe or Slack\ntimestamp over 5 minutes off too; other paths pass untouched.\nRepeatable, or several separated by commas. Examples:\n--webhook github=env:GITHUB_WEBHOOK_SECRET\n--webhook stripe:/hooks/stripe=file:/run/secrets/stripe")
	fs.Var(&o.basicAuth, "basic-auth", "ask every visitor for this user name and password (HTTP Basic\nauthentication: a browser shows its login prompt) before anything\nreaches the tunnel; others get 401. `USER:PASSWORD` splits at the\nfirst colon: the password may hold ':' and ','. Repeatable, one user\neach, at most 16. The proxy gets a bcrypt hash, never the password.\nThe environment variable keeps it out of the process list, one\nUSER:PASSWORD a line")
	fs.Var(&o.allowIP, "allow-ip", "admit only visitors whose address is in `CIDR`, like 203.0.113.0/24\nor 2001:db8::/32 (a bare address is just that one); others get 403.\nThe address is the one the proxy sees: the peer, or what the\nproxy's trusted proxies forward. Repeatable, or several separated by\ncommas, at most 64")
	fs.Var(&o.denyIP, "deny-ip", "refuse visitors whose address is in `CIDR` with 403, even when\n--allow-ip covers it. Same syntax and limit as --allow-ip")
	return fs, o
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		if sub := subcommands[args[0]]; sub != nil { // client tcp, client connect: see tcp.go
			return sub(ctx, args[1:], getenv, stdout, stderr)
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
	if o.configFile != "" {
		return runConfig(ctx, fs, o, getenv, stdout, stderr)
	}
	if o.check {
		return cli.Usage(errors.New("--check checks a configuration file: give --config FILE too"))
	}
	if fs.NArg() != 1 {
		return cli.Usage(errors.New("expected exactly one TARGET, like 3000 or http://localhost:3000"))
	}
	target, err := parseTarget(fs.Arg(0))
	if err != nil {
		return cli.Usage(err)
	}
	log, err := o.checkCommon(stderr) // tcp.go
	if err != nil {
		return err
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
	basicAuth, err := parseBasicAuth(o.basicAuth)
	if err != nil {
		return cli.Usage(fmt.Errorf("invalid --basic-auth: %v", err))
	}
	allowIP, denyIP, err := o.ipRules() // tcp.go
	if err != nil {
		return err
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
	tlsConfig, err := tlsFor(o.caFile)
	if err != nil {
		return err
	}
	key, path, err := loadKey(o.keyFile)
	if err != nil {
		return err
	}
	log.Info("forwarding", "target", target.String(), "proxy", o.proxyURL, "key", path)
	for _, r := range webhooks {
		log.Info("checking webhook signatures", "rule", r) // without the secret: see Rule.LogValue
	}
	if len(basicAuth) > 0 || len(allowIP) > 0 || len(denyIP) > 0 {
		users := make([]string, len(basicAuth))
		for i, c := range basicAuth {
			users[i] = c.User // never the password
		}
		log.Info("visitor protection", "basic_auth_users", users, "allow_ip", allowIP, "deny_ip", denyIP)
	}
	store, stopInspector := startInspector(ctx, o, log, "")
	defer stopInspector()
	c := &client.Client{
		Proxy:         o.proxyURL,
		Key:           key,
		Target:        target,
		HostHeader:    o.hostHeader,
		Token:         o.token,
		Names:         lowerAll(o.names),
		Pool:          o.pool,
		TLSConfig:     tlsConfig,
		Logger:        log,
		OnRegister:    func(u string) { fmt.Fprintln(stdout, u) },
		MaxConcurrent: o.maxConcurrent,
		Inspect:       store,
		Webhooks:      webhooks,
		BasicAuth:     basicAuth,
		AllowIP:       allowIP,
		DenyIP:        denyIP,
	}
	return c.Run(ctx)
}

// startInspector serves the inspector as the flags say, and returns its
// store (nil when it is off) and a function that stops it. name is the
// tunnel's name in its API; "" is the default, ngrok's "command_line". An
// inspector that cannot listen is not worth stopping the tunnel for: the
// client says why and goes on without it.
func startInspector(ctx context.Context, o *options, log *slog.Logger, name string) (*inspect.Store, func()) {
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
	store := inspect.New(inspect.Options{Budget: budget, TunnelName: name})
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

// parseBasicAuth reads --basic-auth values. Its errors never repeat a
// password.
func parseBasicAuth(specs []string) ([]client.Credential, error) {
	if len(specs) > messages.MaxBasicAuthUsers {
		return nil, fmt.Errorf("%d users, more than %d", len(specs), messages.MaxBasicAuthUsers)
	}
	var creds []client.Credential
	for _, spec := range specs {
		user, password, ok := strings.Cut(spec, ":")
		if !ok {
			return nil, errors.New("want USER:PASSWORD, with a colon")
		}
		c := client.Credential{User: user, Password: password}
		if err := c.Check(); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(creds, func(o client.Credential) bool { return o.User == user }) {
			return nil, fmt.Errorf("user %q given twice", user)
		}
		creds = append(creds, c)
	}
	return creds, nil
}

// parsePrefixes reads --allow-ip or --deny-ip values: CIDR prefixes, or
// bare addresses for one address each.
func parsePrefixes(flagName string, specs []string) ([]netip.Prefix, error) {
	if len(specs) > messages.MaxIPRules {
		return nil, fmt.Errorf("invalid %s: %d prefixes, more than %d", flagName, len(specs), messages.MaxIPRules)
	}
	var out []netip.Prefix
	for _, s := range specs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("invalid %s %q: want an IP address or a CIDR prefix, like 203.0.113.0/24 or 2001:db8::/32", flagName, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
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
