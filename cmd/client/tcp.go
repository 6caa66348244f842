package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
)

// subcommands run instead of the HTTP client when the first argument
// names one.
var subcommands = map[string]cli.RunFunc{
	"tcp":     runTCP,
	"connect": runConnect,
}

const tcpSynopsis = `Usage: client tcp [flags] TARGET

Publishes the TCP service TARGET (a database, an SSH server, anything that
speaks TCP) through a keyhole proxy. TARGET is a port (5432) or a
host:port (127.0.0.1:5432). The tunnel's hostname is printed on stdout
each time the client registers; visitors reach it with

    client connect --proxy URL --listen 127.0.0.1:PORT HOSTNAME

and point their program at 127.0.0.1:PORT. The proxy answers HTTP
visitors of the hostname with a page that says so.`

const connectSynopsis = `Usage: client connect [flags] --listen ADDR HOSTNAME

Listens on ADDR (like 127.0.0.1:5432) on this machine and carries each
connection to it through the proxy to the TCP tunnel HOSTNAME, which
"client tcp" printed; no port is opened on the proxy. The address it
listens on is printed on stdout (useful with port 0); a refused
connection is closed and logged with the tunnel's reason on stderr.`

// tcpShared are the HTTP client's flags that mean the same for a TCP
// tunnel: they are defined once, in newFlags.
var tcpShared = []string{"proxy", "key", "token", "name", "pool", "ca", "log-level", "max-concurrent", "allow-ip", "deny-ip"}

// subFlags returns a flag set named name with the flags of newFlags
// listed in shared, bound to the same options.
func subFlags(name string, shared []string) (*flag.FlagSet, *options) {
	all, o := newFlags()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	for _, n := range shared {
		if f := all.Lookup(n); f != nil {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	}
	return fs, o
}

// parseSub parses a subcommand's arguments; --help prints its usage.
func parseSub(fs *flag.FlagSet, synopsis string, args []string, getenv func(string) string, stdout io.Writer) error {
	if err := cli.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b bytes.Buffer
			cli.PrintUsage(&b, fs, synopsis, "")
			// connect's --token is the visitor token, whose variable is
			// not the proxy token's (see visitorEnv).
			u := b.String()
			if fs.Name() == "client connect" {
				u = strings.ReplaceAll(u, "["+cli.EnvName("token")+"]", "["+cli.EnvName("visitor-token")+"]")
			}
			io.WriteString(stdout, u)
			return err
		}
		return cli.Usage(err)
	}
	return nil
}

// runTCP is "client tcp": it publishes a TCP service.
func runTCP(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, o := subFlags("client tcp", tcpShared)
	var visitorToken string
	var remotePort int
	fs.StringVar(&visitorToken, "visitor-token", "", "require this `token` of every visitor (client connect --token); a\nvisitor without it, or with another, is refused. Never logged, and\nnever sent to the proxy")
	fs.IntVar(&remotePort, "remote-port", 0, "also expose the service on this public `PORT` of the proxy, for\nvisitors who cannot run client connect; the proxy's operator must\nallow it (proxy --tcp-ports)")
	if err := parseSub(fs, tcpSynopsis, args, getenv, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usage(errors.New("expected exactly one TARGET, like 5432 or 127.0.0.1:5432"))
	}
	target, err := parseTCPTarget(fs.Arg(0))
	if err != nil {
		return cli.Usage(err)
	}
	if remotePort < 0 || remotePort > 65535 {
		return cli.Usage(fmt.Errorf("invalid --remote-port %d", remotePort))
	}
	log, err := o.checkCommon(stderr)
	if err != nil {
		return err
	}
	allowIP, denyIP, err := o.ipRules()
	if err != nil {
		return err
	}
	tlsConfig, err := tlsFor(o.caFile)
	if err != nil {
		return err
	}
	key, path, err := loadKey(o.keyFile)
	if err != nil {
		return err
	}
	log.Info("publishing tcp", "target", target, "proxy", o.proxyURL, "key", path, "visitor_token", visitorToken != "")
	c := &client.Client{
		Proxy:     o.proxyURL,
		Key:       key,
		Token:     o.token,
		Names:     lowerAll(o.names),
		Pool:      o.pool,
		TLSConfig: tlsConfig,
		Logger:    log,
		// The hostname, which is what client connect takes.
		OnRegister: func(u string) {
			if pu, err := url.Parse(u); err == nil {
				u = pu.Hostname()
			}
			fmt.Fprintln(stdout, u)
		},
		MaxConcurrent: o.maxConcurrent,
		AllowIP:       allowIP,
		DenyIP:        denyIP,
		TCP:           &client.TCPService{Target: target, VisitorToken: visitorToken, RemotePort: remotePort},
	}
	return c.Run(ctx)
}

// parseTCPTarget accepts a port or a host:port.
func parseTCPTarget(s string) (string, error) {
	if strings.Contains(s, "://") {
		return "", fmt.Errorf("invalid TARGET %q: want a port or host:port, like 5432 or 127.0.0.1:5432", s)
	}
	u, err := parseTarget(s)
	if err != nil {
		return "", fmt.Errorf("invalid TARGET %q: want a port or host:port, like 5432 or 127.0.0.1:5432", s)
	}
	return u.Host, nil
}

// visitorEnv is getenv for connect: its --token is the visitor token,
// taken from KEYHOLE_VISITOR_TOKEN, so that a KEYHOLE_TOKEN set for the
// proxy is never sent to someone else's tunnel.
func visitorEnv(getenv func(string) string) func(string) string {
	return func(k string) string {
		switch k {
		case cli.EnvName("token"):
			return getenv(cli.EnvName("visitor-token"))
		case cli.EnvName("visitor-token"):
			return ""
		}
		return getenv(k)
	}
}

// runConnect is "client connect": it carries the connections to a local
// address to a TCP tunnel.
func runConnect(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, o := subFlags("client connect", []string{"proxy", "ca", "log-level"})
	var listen, token string
	fs.StringVar(&listen, "listen", "", "the local `ADDR` to listen on, like 127.0.0.1:5432 (required)")
	fs.StringVar(&token, "token", "", "the visitor `token` the tunnel requires, if it requires one (client tcp\n--visitor-token). Never logged")
	if err := parseSub(fs, connectSynopsis, args, visitorEnv(getenv), stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usage(errors.New("expected exactly one HOSTNAME, the one client tcp printed"))
	}
	host := fs.Arg(0)
	if listen == "" {
		return cli.Usage(errors.New("--listen ADDR is required, like --listen 127.0.0.1:5432"))
	}
	if _, err := client.VisitorURL(o.proxyURL); err != nil {
		return cli.Usage(fmt.Errorf("invalid --proxy %q: want ws://host:port or wss://host", o.proxyURL))
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return cli.Usage(err)
	}
	tlsConfig, err := tlsFor(o.caFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	log.Info("connecting", "listen", ln.Addr().String(), "tunnel", host, "proxy", o.proxyURL, "token", token != "")
	fmt.Fprintln(stdout, ln.Addr().String())
	v := &client.Visitor{Proxy: o.proxyURL, TLSConfig: tlsConfig, Logger: log}
	defer v.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() {
			from := c.RemoteAddr().String()
			err := v.Forward(ctx, c, host, token)
			var refused *client.RefusedStreamError
			switch {
			case errors.As(err, &refused):
				log.Warn("connection refused by the tunnel", "from", from, "reason", refused.Reason)
			case err != nil && ctx.Err() == nil:
				log.Warn("connection ended abruptly", "from", from, "err", err)
			default:
				log.Info("connection closed", "from", from)
			}
		})
	}
}

// checkCommon checks the flags that client and client tcp share, and
// returns the logger --log-level asks for.
func (o *options) checkCommon(stderr io.Writer) (*slog.Logger, error) {
	if _, err := client.ControlURL(o.proxyURL); err != nil {
		return nil, cli.Usage(fmt.Errorf("invalid --proxy %q: want ws://host:port or wss://host", o.proxyURL))
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return nil, cli.Usage(err)
	}
	if o.maxConcurrent < 1 {
		return nil, cli.Usage(fmt.Errorf("invalid --max-concurrent %d: want at least 1", o.maxConcurrent))
	}
	return log, nil
}

// ipRules parses --allow-ip and --deny-ip.
func (o *options) ipRules() (allow, deny []netip.Prefix, err error) {
	if allow, err = parsePrefixes("--allow-ip", o.allowIP); err != nil {
		return nil, nil, cli.Usage(err)
	}
	if deny, err = parsePrefixes("--deny-ip", o.denyIP); err != nil {
		return nil, nil, cli.Usage(err)
	}
	return allow, deny, nil
}

// tlsFor returns the TLS settings for --ca (nil: the system roots).
func tlsFor(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	return loadCA(caFile)
}

// loadKey loads or creates the key at path, or at the default path when
// path is empty, and returns the path used.
func loadKey(path string) (crypto.Signer, string, error) {
	if path == "" {
		var err error
		if path, err = client.DefaultKeyPath(); err != nil {
			return nil, "", err
		}
	}
	key, err := client.LoadOrCreateKey(path)
	return key, path, err
}
