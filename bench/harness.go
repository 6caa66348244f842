package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// harness is one benchmark run: the processes it started and what it
// measured.
type harness struct {
	o     options
	log   io.Writer
	procs *procSet
	rep   *report
	dir   string // temporary: binaries, keys, wrk scripts

	proxyBin, clientBin, selfBin string
	proxyHelp                    string // proxy --help, to see which flags it has
	clientHelpOnce               sync.Once
	clientHasInspect             bool // client --help lists --inspect

	http    httpLoader
	origin  string // 127.0.0.1:PORT
	originP *proc
	redis   string // redis://127.0.0.1:PORT/0, or ""
	// redisLog watches the tunnels' redis-server's log for clients it
	// closed for their output buffer.
	redisLog *redisLogWatch
	tunnels  []*tunnel
	// captureOff is a second client on the memory-bus tunnel's proxy,
	// started with --inspect off, for the inspector's capture cost (S1
	// and S2); nil when neither runs.
	captureOff *tunnel
	keys       int // key files made so far

	frp        *frpBins // nil: frp is not measured
	frpPeer    *frpPeer // the long-lived frps and frpc
	frpConfigs int      // frp config directories made so far

	sim simState // S9
}

// tunnel is a long-lived proxy with one ordinary client process.
type tunnel struct {
	mode   string
	busURL string // "" for the in-memory bus
	proxy  *proc
	addr   string // the proxy's 127.0.0.1:PORT
	admin  string // the proxy's --admin address, or ""
	client *proc
	host   string // Host header that reaches the client
	// inspect is the client's inspector address (127.0.0.1:PORT), or ""
	// when it runs with --inspect off.
	inspect string
	// other, on the Redis bus, is a second proxy instance on the same
	// Redis that holds no client: a request sent to it reaches the client
	// through the bus and the proxy above, the holder.
	other *instance
}

// instance is a proxy process that holds no client of its own.
type instance struct {
	proxy *proc
	addr  string // 127.0.0.1:PORT
	admin string // --admin address, or ""
}

// target is where one measurement sends its load.
type target struct {
	mode string
	addr string
	host string // Host header; "" for addr
	// cpu are the processes whose CPU time per operation is reported,
	// by role: "proxy", "client" and "origin".
	cpu map[string][]*proc
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "bench: "+format+"\n", args...)
}

// runHarness runs the whole benchmark. The report it returns is complete
// when the error is nil, and holds what was measured so far otherwise.
func runHarness(ctx context.Context, o options, log io.Writer) (rep *report, err error) {
	h := &harness{o: o, log: log, procs: &procSet{}, rep: newReport(o)}
	h.dir, err = os.MkdirTemp("", "keyhole-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(h.dir)
	// Children first: they may still be using the directory.
	defer func() {
		h.sim.close()
		h.procs.stopAll()
		h.rep.pids = h.procs.pids
	}()
	start := time.Now()
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	for round := range o.rounds {
		for _, sc := range []struct {
			ids []string
			run func(context.Context, int) error
		}{{[]string{"S1"}, h.s1}, {[]string{"S2"}, h.s2}, {[]string{"S3"}, h.s3}, {[]string{"S6"}, h.s6},
			{[]string{"S7", "S8"}, h.s7s8}, {[]string{"S5"}, h.s5}, {[]string{"S4"}, h.s4}, {[]string{"S9"}, h.s9}} {
			if !slices.ContainsFunc(sc.ids, func(id string) bool { return o.scenarios[id] }) {
				continue
			}
			if err := sc.run(ctx, round); err != nil {
				return h.rep, err
			}
		}
	}
	// The soak runs once, after the rounds: it is a check more than a
	// figure, and a minute long.
	if o.scenarios["S10"] {
		if err := h.s10(ctx); err != nil {
			return h.rep, err
		}
	}
	h.rep.fact("load average at end", loadavg())
	h.rep.fact("wall time", time.Since(start).Round(time.Second).String())
	h.rep.evaluateTargets()
	h.rep.simGrowthNotes()
	return h.rep, nil
}

// setup builds the commands and starts the origin, Redis and the
// long-lived tunnels.
func (h *harness) setup(ctx context.Context) error {
	r := h.rep
	r.fact("command", "`go run ./bench"+quoteArgs(h.o.args)+"`")
	r.fact("machine", fmt.Sprintf("%d cores (runtime.NumCPU), %s, %s/%s, %s", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, memTotal()))
	if rev := gitRevision(ctx); rev != "" {
		r.fact("source", rev)
	}
	r.fact("load average at start", loadavg())
	if !slices.ContainsFunc(tunnelScenarios, func(s string) bool { return h.o.scenarios[s] }) {
		// S9 alone: no command to build, no origin, no tunnel.
		return nil
	}

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	h.selfBin = self
	if h.o.proxyBin == "" || h.o.clientBin == "" {
		h.logf("building cmd/proxy and cmd/client")
		if h.proxyBin, h.clientBin, err = buildCommands(ctx, h.dir); err != nil {
			return err
		}
	}
	for _, b := range []struct {
		flag, path string
		bin        *string
	}{{"--proxy-bin", h.o.proxyBin, &h.proxyBin}, {"--client-bin", h.o.clientBin, &h.clientBin}} {
		if b.path != "" {
			if *b.bin, err = filepath.Abs(b.path); err != nil {
				return err
			}
			r.fact(b.flag, "`"+*b.bin+"` instead of the freshly built command")
		}
	}
	help, _ := exec.CommandContext(ctx, h.proxyBin, "--help").CombinedOutput()
	h.proxyHelp = string(help)

	switch h.o.loadgen {
	case "go":
		h.http = goLoader{}
	default:
		w, err := newWrkLoader(h.dir)
		switch {
		case err == nil:
			h.http = w
		case h.o.loadgen == "wrk":
			return fmt.Errorf("--loadgen wrk: %w", err)
		default:
			h.http = goLoader{}
		}
	}
	r.fact("load generator", fmt.Sprintf("%s for HTTP; the Go generator for WebSockets and checks", h.http.name()))
	r.fact("settings", fmt.Sprintf("%d round(s), %v per measured load after a %v Go warm-up; client processes at --log-level %s with their inspector on and capturing, as users run them (see inspector); proxy at its defaults (500KB max body, info logs) but in S7, S8 and S10 (fresh proxies with --max-body 0) and, on the Redis bus, --drain 0 (stopped between loads, at once); S6 %d events %v apart; S7 and S8 bodies of %v; S10 for %v",
		h.o.rounds, h.o.duration, h.o.warmup, h.o.logLevel, h.o.s6Events, h.o.s6Interval, h.o.bulkSize, h.o.s10Duration))

	if h.clientInspects() {
		r.fact("inspector", "every client process runs as users run it, with the inspector on and capturing (--inspect 127.0.0.1:PORT, a free port each so that no two fight over 4040, "+
			"--inspect-buffer at its default of 50MB); S5's clients (the client library in a helper process) capture into a store of the same default size each; "+
			"S4's idle clients in the helpers have no inspector. Only the capture-cost client of S1 and S2 (\"tunnel, memory bus, --inspect off\") runs with --inspect off")
	} else {
		r.fact("inspector", "the client command has no --inspect flag: no capture, and its cost is not measured")
	}

	if err := h.startOrigin(ctx); err != nil {
		return err
	}
	h.rep.modes = []string{modeDirect, modeMemory}
	if err := h.addTunnel(ctx, modeMemory, ""); err != nil {
		return err
	}
	if (h.o.scenarios["S1"] || h.o.scenarios["S2"]) && h.clientInspects() {
		if err := h.addCaptureOff(ctx); err != nil {
			return err
		}
	}
	if err := h.setupRedis(ctx); err != nil {
		return err
	}
	return h.setupFrp(ctx)
}

// addCaptureOff starts the second client on the memory-bus tunnel's proxy,
// with --inspect off: S1 and S2 measure it right after the capturing one,
// on the same proxy, for the inspector's capture cost.
func (h *harness) addCaptureOff(ctx context.Context) error {
	mem := h.tunnels[0]
	c, host, _, err := h.startClientWith(ctx, "client (memory, --inspect off)", mem.addr, false)
	if err != nil {
		return err
	}
	h.captureOff = &tunnel{mode: modeMemoryOff, proxy: mem.proxy, addr: mem.addr, client: c, host: host}
	h.rep.modes = append(h.rep.modes, modeMemoryOff)
	h.logf("capture-cost client (--inspect off) on the memory-bus proxy: pid %d, Host %s", c.pid, host)
	return nil
}

// setupFrp starts the long-lived frps and frpc when --frp (or its
// environment variable) names their directory.
func (h *harness) setupFrp(ctx context.Context) error {
	if h.o.frpDir == "" {
		h.rep.note("frp not measured: no --frp directory (nor %s).", frpEnv)
		return nil
	}
	b, err := findFrp(ctx, h.o.frpDir)
	if err != nil {
		return err
	}
	h.frp = b
	h.rep.fact("frp", fmt.Sprintf("frps and frpc %s from `%s` (built separately from frp's public source), HTTP vhost mode, "+
		"plain TCP between frpc and frps (transport.tls.enable = false, as keyhole's client speaks ws:// here), token auth, log level warn, other settings at frp's defaults; "+
		"requests carry Host: %s", b.version, filepath.Dir(b.frps), frpHost))
	peer, err := h.startFrp(ctx, "frp")
	if err != nil {
		return err
	}
	h.frpPeer = peer
	h.rep.modes = append(h.rep.modes, modeFrp)
	h.logf("frp: frps (pid %d) vhost on %s, frpc pid %d", peer.frps.pid, peer.vhost, peer.frpc.pid)
	return nil
}

// setupRedis starts redis-server and a tunnel on it, when asked for and
// possible; otherwise it notes why not.
func (h *harness) setupRedis(ctx context.Context) error {
	if h.o.redis == redisOff {
		h.rep.note("Redis bus not measured: --redis=false.")
		return nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if h.o.redis == redisOn {
			return errors.New("--redis: redis-server is not on PATH")
		}
		h.rep.note("Redis bus not measured: redis-server is not on PATH.")
		return nil
	}
	if !hasFlag(h.proxyHelp, "bus") {
		if h.o.redis == redisOn {
			return errors.New("--redis: cmd/proxy has no --bus flag yet")
		}
		h.rep.note("Redis bus not measured: cmd/proxy has no --bus flag yet (the harness passes --bus redis://127.0.0.1:PORT/0 once it does).")
		return nil
	}
	if err := h.startRedis(ctx, bin); err != nil {
		return err
	}
	h.rep.modes = append(h.rep.modes, modeRedis, modeRedisOther)
	if err := h.addTunnel(ctx, modeRedis, h.redis); err != nil {
		return err
	}
	return h.addOther(ctx, h.tunnels[len(h.tunnels)-1])
}

// addOther starts the second proxy instance on t's Redis, which holds no
// client, and checks on both instances' /metrics that the client is
// connected to t's proxy only and that the other instance reaches it.
func (h *harness) addOther(ctx context.Context, t *tunnel) error {
	in, err := h.startInstance(ctx, "proxy ("+modeRedisOther+")", t.busURL)
	if err != nil {
		return err
	}
	t.other = in
	if err := waitRouted(ctx, in, t.host); err != nil {
		return fmt.Errorf("the other instance: %w", err)
	}
	h.logf("tunnel (redis bus), other instance: proxy on %s (pid %d), no client", in.addr, in.proxy.pid)
	if t.admin == "" || in.admin == "" {
		h.rep.note("Which instance holds the client was not checked: cmd/proxy has no --admin flag.")
		return nil
	}
	held, err := connectedClients(ctx, t.admin)
	if err != nil {
		return err
	}
	elsewhere, err := connectedClients(ctx, in.admin)
	if err != nil {
		return err
	}
	if held != 1 || elsewhere != 0 {
		h.rep.fail("Redis bus: keyhole_connected_clients is %v on the holding instance and %v on the other, want 1 and 0: the other instance's figures would not be across instances", held, elsewhere)
	}
	h.rep.fact("Redis bus, two instances", fmt.Sprintf("one redis-server; the client connects to the holding instance (/metrics: keyhole_connected_clients %v there, %v on the other), "+
		"and loads for \"other instance\" go to the second proxy on the same Redis, which reaches the client through the bus", held, elsewhere))
	return nil
}

// startInstance starts a proxy with an --admin listener on a free port
// (when cmd/proxy has the flag) and waits for that listener too.
func (h *harness) startInstance(ctx context.Context, name, busURL string, extra ...string) (*instance, error) {
	if !hasFlag(h.proxyHelp, "admin") {
		p, addr, err := h.startProxy(ctx, name, busURL, extra...)
		if err != nil {
			return nil, err
		}
		return &instance{proxy: p, addr: addr}, nil
	}
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, addr, err := h.startProxy(ctx, name, busURL, append(slices.Clip(extra), "--admin", admin)...)
		if err != nil {
			last = err
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		if last = waitTCP(ctx, admin, p, 15*time.Second); last == nil {
			return &instance{proxy: p, addr: addr, admin: admin}, nil
		}
		p.stop()
		h.procs.forget(p)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, last
}

// waitRouted waits until a request for host sent to in is answered by the
// origin: the registry entry the holder wrote is visible to in.
func waitRouted(ctx context.Context, in *instance, host string) error {
	hc := newHTTPClient(1)
	defer hc.CloseIdleConnections()
	var last error
	err := waitFor(ctx, 15*time.Second, in.proxy.name+" to reach "+host, []*proc{in.proxy}, func() bool {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		last = doRequest(rctx, hc, "GET", "http://"+in.addr+"/small", host, nil, smallSize, smallBody)
		return last == nil
	})
	if err != nil && last != nil {
		err = fmt.Errorf("%w; last: %v", err, last)
	}
	return err
}

func (h *harness) startOrigin(ctx context.Context) error {
	addr := make(chan string, 1)
	p, err := h.procs.start("origin", h.selfBin, []string{"origin", "--listen", "127.0.0.1:0"}, func(line string) {
		if a, ok := strings.CutPrefix(line, "listening "); ok {
			select {
			case addr <- a:
			default:
			}
		}
	})
	if err != nil {
		return err
	}
	var a string
	err = waitFor(ctx, 10*time.Second, "the origin", []*proc{p}, func() bool {
		select {
		case a = <-addr:
			return true
		default:
			return false
		}
	})
	if err != nil {
		return err
	}
	h.origin, h.originP = a, p
	h.logf("origin on %s (pid %d)", a, p.pid)
	return nil
}

func (h *harness) startRedis(ctx context.Context, bin string) error {
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return err
		}
		dir := filepath.Join(h.dir, "redis-"+strconv.Itoa(port))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		w := &redisLogWatch{}
		p, err := h.procs.start("redis-server", bin, []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir}, w.line)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if last = waitFor(ctx, 10*time.Second, "redis-server", []*proc{p}, func() bool { return redisPing(addr) }); last == nil {
			h.redis = "redis://" + addr + "/0"
			h.redisLog = w
			h.logf("redis-server on %s (pid %d)", addr, p.pid)
			return nil
		}
		p.stop()
		h.procs.forget(p)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("redis-server: %w", last)
}

// redisPing reports whether a Redis server at addr answers PING.
func redisPing(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// startProxy starts a proxy on a free port, retrying with another port if
// the first was taken in the meantime.
func (h *harness) startProxy(ctx context.Context, name, busURL string, extra ...string) (*proc, string, error) {
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args := []string{"--listen", addr, "--domain", "localhost"}
		if busURL != "" {
			args = append(args, "--bus", busURL)
			// A proxy on a shared bus drains for a while on SIGTERM;
			// the harness stops its proxies only between loads, and
			// waiting would add seconds to every stop.
			if hasFlag(h.proxyHelp, "drain") {
				args = append(args, "--drain", "0")
			}
		}
		args = append(args, extra...)
		p, err := h.procs.start(name, h.proxyBin, args, nil)
		if err != nil {
			return nil, "", err
		}
		if last = waitTCP(ctx, addr, p, 15*time.Second); last == nil {
			return p, addr, nil
		}
		p.stop()
		h.procs.forget(p)
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
	}
	return nil, "", last
}

// startClient starts one ordinary client process with a fresh key, its
// inspector on and capturing as users run it, and waits until it has
// registered. It returns the Host header of its tunnel.
func (h *harness) startClient(ctx context.Context, name, proxyAddr string) (*proc, string, error) {
	p, host, _, err := h.startClientWith(ctx, name, proxyAddr, true)
	return p, host, err
}

// startClientWith is startClient with the inspector on a free port of
// 127.0.0.1 (returned) when capture is true, else with --inspect off. A
// client command without --inspect gets neither.
func (h *harness) startClientWith(ctx context.Context, name, proxyAddr string, capture bool) (*proc, string, string, error) {
	h.keys++
	key := filepath.Join(h.dir, fmt.Sprintf("client-%d.jwk", h.keys))
	args := []string{"--proxy", "ws://" + proxyAddr, "--key", key, "--log-level", h.o.logLevel}
	inspectAddr := ""
	switch {
	case !h.clientInspects():
	case capture:
		port, err := freePort()
		if err != nil {
			return nil, "", "", err
		}
		// The client moves to one of the next ports by itself if this
		// one is taken in the meantime.
		inspectAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args = append(args, "--inspect", inspectAddr)
	default:
		args = append(args, "--inspect", "off")
	}
	urls := make(chan string, 1)
	p, err := h.procs.start(name, h.clientBin, append(args, "http://"+h.origin), func(line string) {
		if strings.Contains(line, "://") {
			select {
			case urls <- line:
			default:
			}
		}
	})
	if err != nil {
		return nil, "", "", err
	}
	var host string
	var bad error
	err = waitFor(ctx, 20*time.Second, name+" to register", []*proc{p}, func() bool {
		select {
		case u := <-urls:
			host, bad = hostOf(u)
			return true
		default:
			return false
		}
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		p.stop()
		h.procs.forget(p)
		return nil, "", "", err
	}
	return p, host, inspectAddr, nil
}

// clientInspects reports whether the client command has an inspector.
func (h *harness) clientInspects() bool {
	h.clientHelpOnce.Do(func() {
		out, _ := exec.Command(h.clientBin, "--help").CombinedOutput()
		h.clientHasInspect = hasFlag(string(out), "inspect")
	})
	return h.clientHasInspect
}

// hostOf returns the Host header for a public tunnel URL.
func hostOf(publicURL string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(publicURL))
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("client printed %q, not a URL", publicURL)
	}
	return u.Host, nil
}

// addTunnel starts a long-lived proxy and client for mode.
func (h *harness) addTunnel(ctx context.Context, mode, busURL string) error {
	var extra []string
	if h.o.cpuprofile != "" {
		if hasFlag(h.proxyHelp, "cpuprofile") {
			path, err := filepath.Abs(filepath.Join(h.o.cpuprofile, "proxy-"+mode+".pprof"))
			if err != nil {
				return err
			}
			extra = append(extra, "--cpuprofile", path)
			h.rep.note("CPU profile of the %s proxy: %s", mode, path)
		} else {
			h.rep.note("--cpuprofile ignored: cmd/proxy has no --cpuprofile flag.")
		}
	}
	in, err := h.startInstance(ctx, "proxy ("+mode+")", busURL, extra...)
	if err != nil {
		return err
	}
	c, host, inspect, err := h.startClientWith(ctx, "client ("+mode+")", in.addr, true)
	if err != nil {
		return err
	}
	h.tunnels = append(h.tunnels, &tunnel{mode: mode, busURL: busURL, proxy: in.proxy, addr: in.addr, admin: in.admin, client: c, host: host, inspect: inspect})
	h.logf("tunnel (%s bus): proxy on %s (pid %d), client pid %d, Host %s", mode, in.addr, in.proxy.pid, c.pid, host)
	return nil
}

// targets lists direct first, then every tunnel (on the Redis bus, through
// the holding instance and then through the other), then frp when it is
// measured: the interleaving order.
func (h *harness) targets() []target {
	ts := []target{h.directTarget()}
	for _, t := range h.tunnels {
		ts = append(ts, t.targets(h.originP)...)
	}
	if h.frpPeer != nil {
		ts = append(ts, h.frpPeer.target(h.originP))
	}
	return ts
}

// captureTargets are targets with the --inspect off client right after the
// capturing one on the same memory-bus proxy: the loads whose capture cost
// is measured.
func (h *harness) captureTargets() []target {
	ts := h.targets()
	if h.captureOff == nil {
		return ts
	}
	i := slices.IndexFunc(ts, func(t target) bool { return t.mode == modeMemory })
	return slices.Insert(ts, i+1, h.captureOff.target(h.originP))
}

func (h *harness) directTarget() target {
	return target{mode: modeDirect, addr: h.origin, cpu: map[string][]*proc{"origin": {h.originP}}}
}

// target is where loads through t's own proxy go.
func (t *tunnel) target(origin *proc) target {
	return target{mode: t.mode, addr: t.addr, host: t.host,
		cpu: map[string][]*proc{"proxy": {t.proxy}, "client": {t.client}, "origin": {origin}}}
}

// targets is t's target, then, when t has another instance, the target
// through it: both proxies' CPU time counts as the proxy's.
func (t *tunnel) targets(origin *proc) []target {
	ts := []target{t.target(origin)}
	if t.other != nil {
		ts = append(ts, target{mode: modeRedisOther, addr: t.other.addr, host: t.host,
			cpu: map[string][]*proc{"proxy": {t.other.proxy, t.proxy}, "client": {t.client}, "origin": {origin}}})
	}
	return ts
}

// hasFlag reports whether a command's --help output lists flag name.
func hasFlag(help, name string) bool {
	return regexp.MustCompile(`(?m)^\s*--?` + regexp.QuoteMeta(name) + `\b`).MatchString(help)
}
