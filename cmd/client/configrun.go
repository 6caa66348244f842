package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/limiter"
)

// applyConfig applies the file's global settings to the flags that were
// set neither on the command line nor in the environment: the precedence
// is command line, then environment (cli.Parse), then the file, then the
// flag's default. It returns the flags it set.
func applyConfig(fset *flag.FlagSet, cfg *fileConfig) (fromFile map[string]bool, err error) {
	set := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fromFile = map[string]bool{}
	for name, val := range cfg.globals {
		if set[name] {
			continue
		}
		if err := fset.Set(name, val); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", cfg.path, cfg.line(name), name, err)
		}
		fromFile[name] = true
	}
	return fromFile, nil
}

// tunnelFlagsSet returns the per-tunnel flags set on the command line or
// in the environment: with --config only the file sets those.
func tunnelFlagsSet(fset *flag.FlagSet) []string {
	var out []string
	fset.Visit(func(f *flag.Flag) {
		if !slices.Contains(globalFlags, f.Name) {
			out = append(out, f.Name)
		}
	})
	return out
}

// runConfig is the command with --config: every tunnel of the file runs in
// this process, each as its own client.Client with its own connection
// (docs/DECISIONS.md says why), and each registration prints one line,
// "URL TARGET", on stdout. The first tunnel that fails for good (refused,
// replaced, a key that cannot be read) stops them all, and the error names
// it; Ctrl-C stops them all with exit 0.
func runConfig(ctx context.Context, fset *flag.FlagSet, o *options, getenv func(string) string, stdout, stderr io.Writer) error {
	if fset.NArg() > 0 {
		return cli.Usage(fmt.Errorf("TARGET %q given with --config: list every tunnel in the file", fset.Arg(0)))
	}
	if names := tunnelFlagsSet(fset); len(names) > 0 {
		n := names[0]
		return cli.Usage(fmt.Errorf("--%s (or %s) is a tunnel's setting: with --config, set %s in each [[tunnel]] of the file", n, cli.EnvName(n), strings.ReplaceAll(n, "-", "_")))
	}
	cfg, mistakes, err := loadConfig(o.configFile, getenv)
	if err != nil {
		return err
	}
	if len(mistakes) > 0 {
		return reportMistakes(stderr, cfg.path, mistakes)
	}
	fromFile, err := applyConfig(fset, cfg)
	if err != nil {
		return err
	}
	// The file's values were checked with the file; these checks catch
	// the command line's and the environment's, as without --config.
	if _, err := client.ControlURL(o.proxyURL); err != nil {
		return cli.Usage(fmt.Errorf("invalid --proxy %q: want ws://host:port or wss://host", o.proxyURL))
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return cli.Usage(err)
	}
	if o.inspectAddr != "off" {
		switch err := inspect.CheckAddr(o.inspectAddr, o.inspectToken); {
		case errors.Is(err, inspect.ErrNeedsToken) && fromFile["inspect"]:
			return reportMistakes(stderr, cfg.path, []configError{{line: cfg.line("inspect"),
				msg: fmt.Sprintf("inspect %s is reachable beyond this machine: set inspect_token (or --inspect-token) too, or listen on 127.0.0.1", o.inspectAddr)}})
		case errors.Is(err, inspect.ErrNeedsToken):
			return cli.Usage(fmt.Errorf("--inspect %s is reachable beyond this machine: set --inspect-token too, or listen on 127.0.0.1", o.inspectAddr))
		case err != nil:
			return cli.Usage(fmt.Errorf("invalid --inspect %q: want host:port, like %s, or off", o.inspectAddr, inspect.DefaultAddr))
		}
	}
	if o.check {
		fmt.Fprintf(stdout, "%s: %d %s, no mistakes\n", cfg.path, len(cfg.tunnels), plural(len(cfg.tunnels), "tunnel"))
		return nil
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
		if tlsConfig, err = loadCA(o.caFile); err != nil {
			return err
		}
	}
	keys := make([]crypto.Signer, len(cfg.tunnels))
	for i, t := range cfg.tunnels {
		if keys[i], err = client.LoadOrCreateKey(t.keyPath); err != nil {
			return fmt.Errorf("%s: %w", cfg.label(t), err)
		}
	}

	var mu sync.Mutex // one line at a time on stdout
	clients := make([]*client.Client, len(cfg.tunnels))
	for i, t := range cfg.tunnels {
		tlog := log.With("tunnel", t.n)
		tlog.Info("forwarding", "target", t.target.String(), "proxy", o.proxyURL, "key", t.keyPath)
		for _, r := range t.webhooks {
			tlog.Info("checking webhook signatures", "rule", r) // without the secret: see Rule.LogValue
		}
		if len(t.basicAuth) > 0 || len(t.allowIP) > 0 || len(t.denyIP) > 0 {
			users := make([]string, len(t.basicAuth))
			for i, c := range t.basicAuth {
				users[i] = c.User // never the password
			}
			tlog.Info("visitor protection", "basic_auth_users", users, "allow_ip", t.allowIP, "deny_ip", t.denyIP)
		}
		store, stopInspector := startInspector(ctx, tunnelInspect(o, i, len(cfg.tunnels)), tlog, "tunnel"+strconv.Itoa(t.n))
		defer stopInspector()
		line := " " + t.target.String()
		clients[i] = &client.Client{
			Proxy:      o.proxyURL,
			Key:        keys[i],
			Target:     t.target,
			HostHeader: t.hostHeader,
			Token:      t.tokenOr(o.token),
			Pool:       t.pool,
			Names:      t.names,
			TLSConfig:  tlsConfig,
			Logger:     tlog,
			OnRegister: func(u string) {
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintln(stdout, u+line)
			},
			MaxConcurrent: t.maxConcurrent,
			Inspect:       store,
			Webhooks:      t.webhooks,
			BasicAuth:     t.basicAuth,
			AllowIP:       t.allowIP,
			DenyIP:        t.denyIP,
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(clients))
	for i, c := range clients {
		go func() {
			err := c.Run(ctx)
			if err != nil {
				err = fmt.Errorf("%s: %w", cfg.label(cfg.tunnels[i]), err)
				cancel() // one tunnel failing for good stops them all
			}
			errs <- err
		}()
	}
	var first error
	for range clients {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// tunnelInspect returns the inspector settings of the i-th of n tunnels.
// One inspector Store serves one tunnel (its status, public URL and
// replay target are the tunnel's), so each tunnel gets its own, on the
// port after the previous tunnel's (4040, 4041, ...), and the memory
// budget is shared out so that the process keeps what --inspect-buffer
// says in all.
func tunnelInspect(o *options, i, n int) *options {
	oi := *o
	if o.inspectBuffer > 0 {
		oi.inspectBuffer = max(o.inspectBuffer/limiter.Size(n), 1)
	}
	if host, port, err := net.SplitHostPort(o.inspectAddr); err == nil {
		if p, _ := strconv.Atoi(port); p != 0 {
			oi.inspectAddr = net.JoinHostPort(host, strconv.Itoa(p+i))
		}
	}
	return &oi
}

// reportMistakes prints each mistake on its own line of stderr and returns
// the error that ends the command with exit 1.
func reportMistakes(stderr io.Writer, file string, mistakes []configError) error {
	for _, m := range mistakes {
		fmt.Fprintln(stderr, m.format(file))
	}
	return fmt.Errorf("%s: %d %s", file, len(mistakes), plural(len(mistakes), "mistake"))
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
