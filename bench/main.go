// Command bench is keyhole's benchmark harness. It measures the tunnel the
// way a user feels it, and reports every figure next to the same origin hit
// directly in the same run, because single figures on a small shared
// machine are noise.
//
//	go run ./bench              # 3 rounds of every scenario, a few minutes
//	go run ./bench --quick      # every scenario for about a second
//	go run ./bench --help       # the flags
//
// The harness builds cmd/proxy and cmd/client into a temporary directory,
// then starts an origin server, a proxy and a client as separate processes
// on 127.0.0.1 (the origin and the many-client helpers are hidden
// subcommands of this same binary: "origin" and "clients"). Load comes from
// wrk when it is installed, else from the harness's own closed-loop Go load
// generator; WebSocket load always comes from the Go generator.
//
// Scenarios, for --rounds rounds. S1 to S8 each run direct, through a
// tunnel on the in-memory bus, through a tunnel on the Redis bus (when
// redis-server is installed and the proxy has a --bus flag) and, with
// --frp, through frp's HTTP mode, interleaved. On the Redis bus every
// figure is measured twice: through the "holding instance", the proxy the
// client is connected to, and through the "other instance", a second
// proxy on the same redis-server that holds no client and reaches it
// through the bus (S4 measures the holding proxy only). S9 needs no
// tunnel, and "--scenarios S9" builds and starts nothing but Redis:
//
//	S1  small GET (1 KiB): latency at concurrency 1, req/s at 64
//	S2  400 KiB GET and POST at concurrency 16: MB/s
//	S3  WebSocket echo, 1 KiB messages on 64 streams: messages/s, round trip
//	S4  many idle clients on one proxy: RSS per client, registrations/s
//	S5  load spread over many clients at concurrency 64, against S1
//	S6  Server-Sent Events: latency from the origin's write to the read
//	S7  one 100 MB download and upload: MB/s, peak RSS of proxy and client
//	S8  a fast download beside a stalled reader on the same tunnel
//	S9  the registry of a large fleet, simulated against a real Redis
//	    (one server, and a Redis Cluster when redis-cli is installed)
//	    through bus/redis, without websockets: claims, refreshes,
//	    lookups and Redis's CPU and memory per entry at growing counts
//	S10 a soak across instances, once after the rounds (--s10-duration,
//	    a minute): small GETs, 400 KiB GETs and POSTs and multi-MB
//	    downloads at once through the other instance, every answer
//	    checked byte for byte, Redis watched for a subscriber it
//	    disconnects (CLIENT LIST, INFO stats, its log)
//
// Every client process runs as users run it, with its inspector on and
// capturing (--inspect on a free port each); S1 (c=64) and S2 (GET) also
// measure a second client on the memory-bus proxy with --inspect off, for
// the capture cost. The report's "Across buses, instances and capture"
// section has the ratios between modes that issues 10 and 12 set targets
// for (Redis ÷ memory, other instance ÷ holding instance, capture on ÷
// off), computed round by round.
//
// frp is not part of keyhole: --frp names a directory holding frps and
// frpc built separately from frp's public source, and the harness only
// runs them.
//
// The report is Markdown on stdout (and in --out): median, min and max of
// each figure over the rounds, and the tunnel/direct (and keyhole/frp)
// ratios computed round by round. Progress goes to stderr. Every child
// process is stopped by PID when the run ends or is interrupted. A checked
// failure (a wrong answer in S10, a subscriber Redis disconnected, a load
// meant for the other instance that did not go through it, a client whose
// inspector did not capture) is in the report's notes and makes the
// command exit non-zero once the report is out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run runs a hidden helper subcommand, or the benchmark.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "origin":
			return originMain(ctx, args[1:], stdout, stderr)
		case "clients":
			return clientsMain(ctx, args[1:], stdout, stderr)
		}
	}
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	rep, err := runHarness(ctx, o, stderr)
	if rep == nil {
		return err
	}
	// A run cut short still prints what it measured, marked as such.
	if err != nil {
		rep.note("The run stopped early: %v", err)
	}
	md := rep.markdown()
	if _, werr := io.WriteString(stdout, md); werr != nil && err == nil {
		err = werr
	}
	if o.out != "" {
		if werr := os.WriteFile(o.out, []byte(md), 0o644); werr != nil && err == nil {
			err = fmt.Errorf("write report: %w", werr)
		}
	}
	if err == nil && len(rep.failures) > 0 {
		err = fmt.Errorf("%d checked failure(s), see the report's notes; first: %s", len(rep.failures), rep.failures[0])
	}
	return err
}

// signalContext ends on Ctrl-C or SIGTERM; the harness then stops its
// children before exiting.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
