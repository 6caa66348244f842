package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/limiter"
)

// options is the parsed command line.
type options struct {
	rounds    int
	duration  time.Duration // of each measured load
	warmup    time.Duration // of the Go warm-up before each measured load
	quick     bool
	redis     redisMode
	loadgen   string // "auto", "wrk" or "go"
	scenarios map[string]bool
	s4Clients int
	s4Sample  int
	s5Clients int
	// s4Idle, when positive, is how long S4 leaves its clients idle to
	// measure the CPU time an idle tunnel costs the proxy and Redis.
	s4Idle time.Duration
	// S9, the registry simulation: the entry counts it grows through,
	// the operations in flight at once, the simulated proxy instances,
	// the lookups timed at each count, and whether to measure a Redis
	// Cluster too.
	s9Counts      []int
	s9Concurrency int
	s9Instances   int
	s9Lookups     int
	s9Cluster     redisMode
	// s10Duration is how long S10's soak runs.
	s10Duration time.Duration
	logLevel    string // of the client processes
	out         string

	// s6Events SSE events, s6Interval apart, per S6 measurement.
	s6Events   int
	s6Interval time.Duration
	// bulkSize is the body of S7's download and upload and of S8's fast
	// download.
	bulkSize limiter.Size
	// frpDir holds frps and frpc, built separately from frp's public
	// source; "" leaves frp out.
	frpDir string

	// cpuprofile, a hidden debug flag, is a directory for the proxies' CPU
	// profiles when cmd/proxy has a --cpuprofile flag.
	cpuprofile string
	// proxyBin and clientBin, hidden debug flags, replace the freshly
	// built commands: for comparing builds of two commits.
	proxyBin, clientBin string

	args []string // as given, for the report
}

// allScenarios in report order.
var allScenarios = []string{"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10"}

// tunnelScenarios need the proxy and client commands, the origin and the
// long-lived tunnels; S9 needs none of them.
var tunnelScenarios = []string{"S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S10"}

// hiddenFlags are left out of --help.
var hiddenFlags = map[string]bool{"cpuprofile": true, "proxy-bin": true, "client-bin": true}

// frpEnv names frp's directory when --frp is not given.
const frpEnv = "KEYHOLE_BENCH_FRP"

func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := options{args: args, redis: redisAuto, s9Cluster: redisAuto, bulkSize: 100 * 1000 * 1000}
	counts := countList{1000, 10000, 50000, 100000}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved `rounds` of every scenario")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "length of each measured load")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "Go warm-up load before each measured load (0 = none)")
	fs.BoolVar(&o.quick, "quick", false, "every scenario for about a second, 1 round, S4 with 50 clients,\nS5 with 10, S6 with 20 events, S7 and S8 with 16MB, S9 with 500\nand 2000 entries, S10 for 3s (flags given explicitly still win)")
	fs.Var(&o.redis, "redis", "tunnel on the Redis bus too, through the instance holding the client\nand through a second instance on the same Redis: auto (when\nredis-server is on PATH), true (fail without it) or false")
	fs.StringVar(&o.loadgen, "loadgen", "auto", "HTTP load generator: auto (wrk when installed), wrk or go")
	only := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated `list` of scenarios to run")
	fs.IntVar(&o.s4Clients, "s4-clients", 1000, "idle clients registered on one proxy in S4")
	fs.IntVar(&o.s4Sample, "s4-sample", 50, "S4 hostnames checked with a request after registering (0 = all)")
	fs.DurationVar(&o.s4Idle, "s4-idle", 0, "leave S4's clients idle this long, once registered, to measure the CPU time\nan idle tunnel costs the proxy and Redis (0 = not measured; take at\nleast 30s: two ping intervals and more)")
	fs.IntVar(&o.s5Clients, "s5-clients", 100, "clients the S5 load is spread over")
	fs.Var(&counts, "s9-counts", "registry entries S9 grows through, in increasing `counts` (1000 or 1k);\n500,2000 with --quick")
	fs.IntVar(&o.s9Concurrency, "s9-concurrency", 64, "S9's registry operations in flight at once")
	fs.IntVar(&o.s9Instances, "s9-instances", 8, "simulated proxy instances in S9, each with its own bus")
	fs.IntVar(&o.s9Lookups, "s9-lookups", 5000, "lookups timed at each S9 count; 300 with --quick")
	fs.Var(&o.s9Cluster, "s9-cluster", "S9 against a Redis Cluster too: auto (when redis-cli is on PATH and\nbus/redis connects to it), true (fail without it) or false")
	fs.DurationVar(&o.s10Duration, "s10-duration", time.Minute, "length of S10, the soak of mixed small and large requests through the\nproxy instance that does not hold the tunnel (Redis bus), run once after\nthe rounds; 3s with --quick")
	fs.IntVar(&o.s6Events, "s6-events", 50, "Server-Sent Events per S6 measurement")
	fs.DurationVar(&o.s6Interval, "s6-interval", 20*time.Millisecond, "time between two S6 events")
	fs.Var(&o.bulkSize, "bulk-size", "`size` of S7's download and upload and of S8's fast download, like\n100MB or 1GiB; 16MB with --quick")
	fs.StringVar(&o.frpDir, "frp", "", "`directory` holding frp's frps and frpc, to measure frp's HTTP mode\nbeside keyhole (S1, S2, S3, S6, S7, S8). frp is not part of keyhole:\nits binaries are built separately from frp's public source. Default:\nthe environment variable "+frpEnv+"; neither: no frp")
	fs.StringVar(&o.logLevel, "client-log-level", "info", "--log-level of the client processes (info logs one line per request,\nas users run it)")
	fs.StringVar(&o.out, "out", "", "also write the report to `file`")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "directory for the proxies' CPU profiles, if cmd/proxy supports --cpuprofile")
	fs.StringVar(&o.proxyBin, "proxy-bin", "", "use this proxy binary instead of building cmd/proxy")
	fs.StringVar(&o.clientBin, "client-bin", "", "use this client binary instead of building cmd/client")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench [flags]\n\nBenchmarks keyhole: origin, proxy and client as separate processes on\n127.0.0.1, the tunnel against the origin hit directly. The report (Markdown)\ngoes to stdout, progress to stderr.\n\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			if hiddenFlags[f.Name] {
				return
			}
			name, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			fmt.Fprintf(stderr, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
				fmt.Fprintf(stderr, " (default %s)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"rounds":       func() { o.rounds = 1 },
			"duration":     func() { o.duration = time.Second },
			"warmup":       func() { o.warmup = 200 * time.Millisecond },
			"s4-clients":   func() { o.s4Clients = 50 },
			"s4-sample":    func() { o.s4Sample = 20 },
			"s5-clients":   func() { o.s5Clients = 10 },
			"s6-events":    func() { o.s6Events = 20 },
			"bulk-size":    func() { o.bulkSize = 16 * 1000 * 1000 },
			"s9-counts":    func() { counts = countList{500, 2000} },
			"s9-lookups":   func() { o.s9Lookups = 300 },
			"s10-duration": func() { o.s10Duration = 3 * time.Second },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	o.s9Counts = counts
	if o.frpDir == "" {
		o.frpDir = os.Getenv(frpEnv)
	}
	o.scenarios = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		s = strings.ToUpper(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return o, fmt.Errorf("unknown scenario %q: want some of %s", s, strings.Join(allScenarios, ","))
		}
		o.scenarios[s] = true
	}
	switch {
	case o.rounds < 1 || o.rounds > 100:
		return o, errors.New("--rounds must be between 1 and 100")
	case o.duration < 100*time.Millisecond || o.duration > 10*time.Minute:
		return o, errors.New("--duration must be between 100ms and 10m")
	case o.warmup < 0 || o.warmup > time.Minute:
		return o, errors.New("--warmup must be between 0 and 1m")
	case o.loadgen != "auto" && o.loadgen != "wrk" && o.loadgen != "go":
		return o, fmt.Errorf("--loadgen %q: want auto, wrk or go", o.loadgen)
	case o.s4Clients < 1 || o.s4Clients > 50000:
		return o, errors.New("--s4-clients must be between 1 and 50000")
	case o.s4Idle < 0 || o.s4Idle > 10*time.Minute:
		return o, errors.New("--s4-idle must be between 0 and 10m")
	case o.s4Sample < 0:
		return o, errors.New("--s4-sample must not be negative")
	case o.s5Clients < 1 || o.s5Clients > 10000:
		return o, errors.New("--s5-clients must be between 1 and 10000")
	case o.s6Events < 1 || o.s6Events > 100000:
		return o, errors.New("--s6-events must be between 1 and 100000")
	case o.s6Interval < time.Millisecond || o.s6Interval > 10*time.Second:
		return o, errors.New("--s6-interval must be between 1ms and 10s")
	case o.bulkSize < 1<<20 || o.bulkSize > 100<<30:
		return o, errors.New("--bulk-size must be between 1MiB and 100GiB")
	case len(o.s9Counts) == 0:
		return o, errors.New("--s9-counts names no count")
	case o.s9Concurrency < 1 || o.s9Concurrency > 1024:
		return o, errors.New("--s9-concurrency must be between 1 and 1024")
	case o.s9Instances < 1 || o.s9Instances > 256:
		return o, errors.New("--s9-instances must be between 1 and 256")
	case o.s9Lookups < 1 || o.s9Lookups > 1000000:
		return o, errors.New("--s9-lookups must be between 1 and 1000000")
	case o.s10Duration < time.Second || o.s10Duration > time.Hour:
		return o, errors.New("--s10-duration must be between 1s and 1h")
	case len(o.scenarios) == 0:
		return o, errors.New("--scenarios names no scenario")
	}
	return o, nil
}

// redisMode is --redis: a boolean flag with a third, default state.
type redisMode int

const (
	redisAuto redisMode = iota
	redisOn
	redisOff
)

func (m *redisMode) String() string {
	switch *m {
	case redisOn:
		return "true"
	case redisOff:
		return "false"
	}
	return "auto"
}

func (m *redisMode) Set(s string) error {
	switch strings.ToLower(s) {
	case "auto":
		*m = redisAuto
	case "true", "on", "1", "yes":
		*m = redisOn
	case "false", "off", "0", "no":
		*m = redisOff
	default:
		return fmt.Errorf("want auto, true or false")
	}
	return nil
}

func (m *redisMode) IsBoolFlag() bool { return true }

// maxSimCount bounds --s9-counts: a million entries take Redis about
// 150 MB and the run several minutes.
const maxSimCount = 1000000

// countList is --s9-counts: increasing positive counts, "1000" or "1k".
type countList []int

func (c *countList) String() string {
	parts := make([]string, len(*c))
	for i, n := range *c {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (c *countList) Set(s string) error {
	var out countList
	for _, part := range strings.Split(s, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		mult := 1
		if p, ok := strings.CutSuffix(part, "k"); ok {
			part, mult = p, 1000
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 || n > maxSimCount/mult {
			return fmt.Errorf("%q: want counts from 1 to %d, like 1000 or 10k", strings.TrimSpace(s), maxSimCount)
		}
		n *= mult
		if len(out) > 0 && n <= out[len(out)-1] {
			return fmt.Errorf("%q: the counts must increase", s)
		}
		out = append(out, n)
	}
	*c = out
	return nil
}
