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
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
)

func main() { cli.Main("client", run) }

const synopsis = `Usage: client [flags] TARGET

Publishes the local web service TARGET through a keyhole proxy. TARGET is a
port (3000), a host:port (127.0.0.1:3000) or a URL (http://localhost:3000/app);
h2c://127.0.0.1:50051 speaks HTTP/2 without TLS to the service, as a gRPC
server wants.
The public URL is printed on stdout each time the client registers; logs,
including one line per request, go to stderr.`

// options are the command's settings, filled in by the flags of newFlags.
type options struct {
	proxyURL, keyFile, hostHeader, token, caFile, logLevel string
	maxConcurrent                                          int
	cpuProfile                                             string
}

func newFlags() (*flag.FlagSet, *options) {
	o := &options{}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&o.proxyURL, "proxy", "ws://localhost:8080", "the proxy's `URL`, ws:// or wss://")
	fs.StringVar(&o.keyFile, "key", "", "private key `file` (JWK); created on first use. The same key\nalways gets the same hostname (default keyhole/client.jwk in the\nuser's config directory)")
	fs.StringVar(&o.hostHeader, "host-header", "", "Host header sent to the local service: empty keeps the public\nhostname, \"rewrite\" uses TARGET's host, anything else is sent as given")
	fs.StringVar(&o.token, "token", "", "registration `token`, if the proxy requires one")
	fs.StringVar(&o.caFile, "ca", "", "PEM `file` of CA certificates to trust for a wss:// proxy, in\naddition to the system roots")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.IntVar(&o.maxConcurrent, "max-concurrent", 1024, "requests and WebSocket streams served at once; more get 503")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to `file`, for performance work")
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
	c := &client.Client{
		Proxy:         o.proxyURL,
		Key:           key,
		Target:        target,
		HostHeader:    o.hostHeader,
		Token:         o.token,
		TLSConfig:     tlsConfig,
		Logger:        log,
		OnRegister:    func(u string) { fmt.Fprintln(stdout, u) },
		MaxConcurrent: o.maxConcurrent,
	}
	return c.Run(ctx)
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
