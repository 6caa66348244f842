package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Modes: how a figure was measured.
const (
	modeDirect = "direct"
	modeMemory = "memory"
	// modeMemoryOff is the memory-bus tunnel's proxy with a second client
	// that runs with --inspect off: the capture cost's baseline, measured
	// in S1 (c=64) and S2 (GET) only.
	modeMemoryOff = "memory-off"
	// modeRedis is a tunnel on the Redis bus reached through the proxy
	// instance that holds its client; modeRedisOther the same tunnel
	// reached through a second instance on the same Redis.
	modeRedis      = "redis"
	modeRedisOther = "redis-other"
	modeFrp        = "frp"
)

var modeLabel = map[string]string{
	modeDirect:     "direct",
	modeMemory:     "tunnel, memory bus",
	modeMemoryOff:  "tunnel, memory bus, --inspect off",
	modeRedis:      "tunnel, Redis bus, holding instance",
	modeRedisOther: "tunnel, Redis bus, other instance",
	modeFrp:        "frp, HTTP vhost",
}

// isKeyhole reports whether mode is a keyhole tunnel as users run it (the
// --inspect off baseline is not).
func isKeyhole(mode string) bool {
	return mode == modeMemory || mode == modeRedis || mode == modeRedisOther
}

// sparseModes are measured in a few figures only; every other figure has
// no value for them.
var sparseModes = map[string]bool{modeMemoryOff: true}

// holderOnly are the scenarios that measure the instance holding the
// clients only: S4's figures are the holding proxy's own.
var holderOnly = map[string]bool{"S4": true}

var scenarioTitle = map[string]string{
	"S1":  "S1: small GET (1 KiB)",
	"S2":  "S2: large bodies (400 KiB) at concurrency 16",
	"S3":  "S3: WebSocket echo (1 KiB messages, 64 streams)",
	"S4":  "S4: idle clients on one proxy",
	"S5":  "S5: load spread over many clients, concurrency 64",
	"S6":  "S6: Server-Sent Events, latency of each event",
	"S7":  "S7: one large download and one large upload",
	"S8":  "S8: a fast download beside a stalled reader",
	"S9":  "S9: the registry of a large fleet, simulated",
	"S10": "S10: soak across instances",
}

// report collects every figure of a run and renders it as Markdown.
type report struct {
	o     options
	facts [][2]string
	modes []string // the modes that ran, in column order
	// simModes are the deployments S9 measured (modeSimServer,
	// modeSimCluster), apart from the tunnel modes.
	simModes []string
	figs     []*figure
	notes    []string
	targets  []targetRow
	pids     []int // every process the run started
	// failures are checked failures: the run exits non-zero after its
	// report when there is any.
	failures []string
	soak     *soakResult // S10, nil when it did not run
	// routes are the cross-instance routing checks, one line each.
	routes []string
}

// figure is one measured quantity, per mode and round.
type figure struct {
	scenario string
	name     string
	unit     string
	vals     map[string][]float64 // mode → one value per round; NaN: not measured
	// vsDirect adds the tunnel/direct ratio, computed round by round.
	vsDirect bool
	// ref, when set, adds the ratio to ref's value in the same mode and
	// round instead.
	ref      *figure
	refLabel string
	// vsFrp adds the keyhole/frp ratio, round by round, when frp ran.
	vsFrp bool
	// checked figures must be measured and positive in every mode that
	// ran (the test's sanity check); others may be negative or absent.
	checked bool
	// row and count place an S9 figure in its table: count 0 is a figure
	// per simulated instance.
	row   string
	count int
}

func newReport(o options) *report { return &report{o: o} }

func (r *report) fact(k, v string) { r.facts = append(r.facts, [2]string{k, v}) }

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// fail records a checked failure: a note that says so, and a non-zero exit
// once the report is out.
func (r *report) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.failures = append(r.failures, msg)
	r.notes = append(r.notes, "**Failed:** "+msg)
}

// modeRatios is the round-by-round ratio of f's value in mode num to its
// value in mode den, in the rounds where both were measured.
func (f *figure) modeRatios(num, den string) []float64 {
	var out []float64
	for i, v := range f.vals[num] {
		base := f.get(den, i)
		if !math.IsNaN(v) && !math.IsNaN(base) && base != 0 {
			out = append(out, v/base)
		}
	}
	return out
}

// fig returns the figure scenario/name, creating it on first use; figures
// are rendered in creation order.
func (r *report) fig(scenario, name, unit string) *figure {
	for _, f := range r.figs {
		if f.scenario == scenario && f.name == name {
			return f
		}
	}
	f := &figure{scenario: scenario, name: name, unit: unit, vals: map[string][]float64{}, checked: true}
	r.figs = append(r.figs, f)
	return f
}

func (r *report) set(f *figure, mode string, round int, v float64) {
	vs := f.vals[mode]
	for len(vs) < r.o.rounds {
		vs = append(vs, math.NaN())
	}
	vs[round] = v
	f.vals[mode] = vs
}

// get returns a figure's value, or NaN.
func (f *figure) get(mode string, round int) float64 {
	vs := f.vals[mode]
	if round >= len(vs) {
		return math.NaN()
	}
	return vs[round]
}

// ratios is the round-by-round ratio of a tunnel mode to its reference.
func (f *figure) ratios(mode string) []float64 {
	var out []float64
	for i, v := range f.vals[mode] {
		var base float64
		switch {
		case f.ref != nil:
			base = f.ref.get(mode, i)
		case f.vsDirect && mode != modeDirect:
			base = f.get(modeDirect, i)
		default:
			return nil
		}
		if !math.IsNaN(v) && !math.IsNaN(base) && base != 0 {
			out = append(out, v/base)
		}
	}
	return out
}

// frpRatios is the round-by-round ratio of a keyhole mode to frp.
func (f *figure) frpRatios(mode string) []float64 {
	if !f.vsFrp || !isKeyhole(mode) {
		return nil
	}
	var out []float64
	for i, v := range f.vals[mode] {
		base := f.get(modeFrp, i)
		if !math.IsNaN(v) && !math.IsNaN(base) && base != 0 {
			out = append(out, v/base)
		}
	}
	return out
}

// ratioCell renders the median and range of rs, or "" for none.
func ratioCell(rs []float64) string {
	if len(rs) == 0 {
		return ""
	}
	s := summarize(rs)
	return fmt.Sprintf("%s (%s–%s)", ratio(s.med), ratio(s.min), ratio(s.max))
}

// summary is the median, min and max of the measured values.
type summary struct {
	med, min, max float64
	n             int
}

func summarize(vs []float64) summary {
	var ok []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			ok = append(ok, v)
		}
	}
	if len(ok) == 0 {
		return summary{math.NaN(), math.NaN(), math.NaN(), 0}
	}
	slices.Sort(ok)
	med := ok[len(ok)/2]
	if len(ok)%2 == 0 {
		med = (ok[len(ok)/2-1] + ok[len(ok)/2]) / 2
	}
	return summary{med, ok[0], ok[len(ok)-1], len(ok)}
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "–"
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		// Three significant digits: 0.146 must not round up to a
		// target of 0.15.
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString("# keyhole benchmark\n\n")
	for _, kv := range r.facts {
		fmt.Fprintf(&b, "- **%s:** %s\n", kv[0], kv[1])
	}
	for _, sc := range allScenarios {
		if sc == "S10" {
			if r.soak != nil {
				fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", scenarioTitle[sc], r.how(sc))
				r.soak.markdown(&b)
			}
			continue
		}
		var figs []*figure
		for _, f := range r.figs {
			if f.scenario == sc {
				figs = append(figs, f)
			}
		}
		if len(figs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n", scenarioTitle[sc])
		if how := r.how(sc); how != "" {
			fmt.Fprintf(&b, "%s\n\n", how)
		}
		if sc == "S9" {
			r.simMarkdown(&b)
			continue
		}
		withFrp := slices.Contains(r.modes, modeFrp)
		if withFrp {
			b.WriteString("| figure | mode | median | min | max | ratio: median (min–max) | keyhole / frp: median (min–max) |\n")
			b.WriteString("|---|---|--:|--:|--:|--:|--:|\n")
		} else {
			b.WriteString("| figure | mode | median | min | max | ratio: median (min–max) |\n")
			b.WriteString("|---|---|--:|--:|--:|--:|\n")
		}
		var legends []string
		for _, f := range figs {
			for _, m := range r.modes {
				vs, ok := f.vals[m]
				if !ok {
					continue
				}
				s := summarize(vs)
				name := f.name
				if f.unit != "" {
					name += " (" + f.unit + ")"
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |", name, modeLabel[m], num(s.med), num(s.min), num(s.max), ratioCell(f.ratios(m)))
				if withFrp {
					fmt.Fprintf(&b, " %s |", ratioCell(f.frpRatios(m)))
				}
				b.WriteString("\n")
			}
			var legend string
			switch {
			case f.ref != nil:
				legend = fmt.Sprintf("ratio of %s = the value / %s, same mode, same round", f.name, f.refLabel)
			case f.vsDirect:
				legend = "ratio = tunnel (or frp) / direct, round by round"
			}
			if legend != "" && !slices.Contains(legends, legend) {
				legends = append(legends, legend)
			}
			if legend := "keyhole / frp = the keyhole tunnel's value / frp's, same round"; withFrp && f.vsFrp && !slices.Contains(legends, legend) {
				legends = append(legends, legend)
			}
		}
		if len(legends) > 0 {
			fmt.Fprintf(&b, "\n%s.\n", strings.Join(legends, "; "))
		}
	}
	r.crossMarkdown(&b)
	if len(r.targets) > 0 {
		b.WriteString("\n## Targets\n\n")
		fmt.Fprintf(&b, "Every ratio is computed round by round within this run, then its median is taken. "+
			"From: %s = the first performance pass; %s = protocol v2, where every body is a stream; "+
			"%s = scale-out across instances; %s = the inspector.\n\n", issue4, issueV2, issue10, issue12)
		b.WriteString("| from | scenario | target | keyhole bus | measured (median) | met |\n|---|---|---|---|--:|---|\n")
		for _, t := range r.targets {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", t.from, t.scenario, t.target, t.mode, t.measured, t.met)
		}
	}
	if len(r.notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(strings.TrimSpace(n), "\n", "\n  "))
		}
	}
	return b.String()
}

// how says how a scenario was measured, with this run's settings.
func (r *report) how(sc string) string {
	o := r.o
	d := o.duration.String()
	switch sc {
	case "S1":
		return fmt.Sprintf("GET /small (1 KiB body) for %s at 1 connection (latency) and at 64 (throughput). "+
			"Added p50 = tunnel p50 − direct p50 of the same round. "+
			"CPU rows: user+system CPU time of each process during the load (/proc/PID/stat, 10 ms ticks) per request answered; for frp, proxy = frps and client = frpc; "+
			"through the other instance, proxy = both instances together. "+
			"At c=64, \"--inspect off\" is a second client on the memory-bus tunnel's proxy with its inspector off, measured right after the capturing one: the capture cost.%s", d, otherText)
	case "S2":
		return fmt.Sprintf("GET /large (400 KiB response) and POST /upload (400 KiB request body) for %s on 16 connections. "+
			"MB/s = payload bytes per second / 10^6. The GET is measured with --inspect off too, as in S1.%s", d, otherText)
	case "S3":
		return fmt.Sprintf("64 WebSocket connections for %s (Go generator, coder/websocket); each sends a 1 KiB binary message and waits for its echo before sending the next. "+
			"Round trip = send to echo received.%s", d, otherText)
	case "S4":
		helpers := s4Helpers(o.s4Clients)
		idleText := ""
		if o.s4Idle > 0 {
			idleText = fmt.Sprintf("Then the clients stay idle for %v: idle CPU = the proxy's CPU time (/proc, 10 ms ticks) and, on the Redis bus, Redis's (INFO used_cpu_sys + used_cpu_user) over that window, per client and second. ", o.s4Idle)
		}
		sample := fmt.Sprintf("a random sample of %d", o.s4Sample)
		if o.s4Sample == 0 || o.s4Sample >= o.s4Clients {
			sample = "every one"
		}
		return fmt.Sprintf("The instance that holds the clients only: S4 has no \"other instance\" rows. A fresh proxy per bus; %d clients (the client library in-process, each with its own in-memory Ed25519 key) in %d helper process(es), at most %d registrations in flight per helper. "+
			"Registrations/s = clients / (first helper started → last registration seen). "+
			"Proxy RSS (/proc VmRSS) before the first client and right after the last registration; per client = (after − before) / clients. "+
			"Goroutines per client: go_goroutines on the proxy's --admin /metrics, before and after (once it reads the same twice 100 ms apart), the difference / clients. "+
			"%s"+
			"Then GET /small through %s of the hostnames must answer 200 with the right body, and one ordinary client process is started to read its RSS once registered. "+
			"Idle link: a fresh proxy with --ping %v and one ordinary client connected through a relay that parses the websocket frames each way; from %v after the registration, for %v, "+
			"it counts the frames and their bytes (websocket header, the client's mask key and payload; TCP/IP headers are not seen), each of which should be a keyhole Ping. "+
			"Pings per ping interval = frames / (window / interval); bytes/s at --ping 10s = the same frames per interval, both ways, over 10 s.",
			o.s4Clients, helpers, helperParallel, idleText, sample, idleLinkPing, 2*idleLinkPing, idleLinkWindow(o.quick))
	case "S5":
		return fmt.Sprintf("%d clients in one helper process on the long-lived proxy, each capturing into an inspector store of the command's default size; GET /small for %s at concurrency 64, cycling through their hostnames "+
			"(on the Redis bus, the same clients are then loaded through the other instance). "+
			"The client CPU row is the whole helper process.", o.s5Clients, d)
	case "S6":
		return fmt.Sprintf("GET /sse: the origin writes %d Server-Sent Events, %v apart, each carrying time.Now().UnixNano() taken just before it is written and flushed; "+
			"the harness reads the stream and takes (time read − time written) per event, wall clock on both sides of one machine. "+
			"Added p50 = tunnel (or frp) p50 − direct p50 of the same round; the target is ≤ 1 ms.%s", o.s6Events, o.s6Interval, otherText)
	case "S7":
		return fmt.Sprintf("One GET /bulk of %v and one POST /bulk of %v per target and round, each after a 1 MiB check on the same connection; "+
			"the origin writes the body from one 64 KiB buffer and the harness uploads from one, and each side checks every byte. "+
			"Each round starts a fresh proxy per bus with --max-body 0 and a fresh client (and a fresh frps and frpc), and on the Redis bus a fresh other instance with --max-body 0 too; "+
			"through the other instance, the proxy RSS rows are both instances' together. "+
			"MB/s = payload bytes / 10^6 per second. RSS: /proc VmRSS of the proxy and the client (frps and frpc for frp) just before the transfer, "+
			"and the peak of samples every 20 ms during it. CPU rows: user+system CPU time (10 ms ticks) per MB moved.", o.bulkSize, o.bulkSize)
	case "S8":
		return fmt.Sprintf("Through the same tunnel as S7 (and the same frp pair): a GET /bulk of %v alone, then one beside a stalled reader: "+
			"a GET /bulk of 1 TiB on its own connection through the same tunnel, read for 256 KiB and then not at all, started once the origin's count of the bytes it wrote "+
			"held still for 200 ms (the whole path is full). Bytes in flight = what the origin wrote for the stalled stream − what the harness read, "+
			"when the fast download starts. After the fast download, the stalled stream must deliver another 1 MiB, then it is closed. "+
			"The ratio of \"beside a stalled reader\" is to \"alone\", same mode, same round: about 1 when a stalled stream stalls only itself.%s", o.bulkSize, otherText)
	case "S10":
		var mix []string
		for _, k := range soakKinds(o.quick) {
			mix = append(mix, fmt.Sprintf("%d × %s", k.workers, k.name))
		}
		return fmt.Sprintf("Once per run, after the rounds: a fresh holding proxy with one client and a fresh other instance, both with --max-body 0 and --admin, on the tunnels' redis-server. "+
			"For %v, closed-loop workers, each on its own keep-alive connection, send through the other instance: %s. "+
			"Every GET is GET /rand with a seed of its own and every POST an echo of a body made from one, so every answer is a body no other request gets; "+
			"each is checked byte for byte against the expected stream (ChaCha8 of the seed) and its length: a wrong, short or misrouted body is a failure, as is any status but 200 or a transport error. "+
			"Each request waits at most %v (the multi-MB ones %v); requests in flight at the end are waited for. "+
			"Redis: CLIENT LIST before, every %v during and after (the subscriber connections must all stay, with the same ids; omem is their output buffer), INFO stats before and after, and redis-server's log. "+
			"The proxies' /metrics show that the holder answered no public request and has its client all along. "+
			"Any failure fails the run (non-zero exit).",
			o.s10Duration, strings.Join(mix, ", "), requestTimeout, bulkTimeout(soakKinds(o.quick)[3].size), soakSampleEvery)
	case "S9":
		return fmt.Sprintf("No websocket: %d simulated proxy instances, each a bus/redis Bus (redis.New) as a proxy holds one, subscribed to its own topic and heartbeating; "+
			"the registry grows through %s entries (52-character labels, holders shaped as the proxy's, each entry claimed and refreshed by its own instance's bus). "+
			"At each count: the new entries are claimed (Claim: SET PX GET) %d at a time; every entry is refreshed once (Refresh: the GET+PEXPIRE script by EVALSHA), %d at a time: "+
			"one ping interval's refresh load, run as fast as it goes; then %d lookups (Lookup: GET) of random names, one at a time, no cache. "+
			"Every answer is checked. Redis CPU = INFO used_cpu_sys + used_cpu_user over the phase per 1,000 operations, in ms (the same number as µs per operation), "+
			"summed over the masters unless the row says replicas; \"inside the script\" is INFO commandstats' usec of EVALSHA, the rest is reading, parsing, answering and the event loop. "+
			"Memory per entry = INFO used_memory − mem_total_replication_buffers (the backlog fills to a fixed 1 MiB per node whatever the count), "+
			"taken with every simulated instance's connection closed (client buffers come and go with the traffic), after the claims, "+
			"less the same before the first claim, divided by the count; replicas are waited for until they acknowledged everything. "+
			"Entries one Redis core refreshes every 10 s = 10 s / the CPU per refresh (10 s is the default ping interval, each entry's refresh interval). "+
			"Per instance: used_memory and connected_clients with the instances' buses open (after a warm-up of %d refreshes) less with them closed; "+
			"the channel is measured on one more bus subscribing %d topics (in a cluster each topic has a connection of its own, to its shard); "+
			"the instance set is MEMORY USAGE of keyhole:instances / instances. "+
			"Redis shares the machine's 2 cores with the load, so rates and latencies are this machine's; the CPU time per operation is Redis's own.",
			o.s9Instances, (*countList)(&o.s9Counts).String(), o.s9Concurrency, o.s9Concurrency, o.s9Lookups, 16*o.s9Concurrency, simChannels)
	}
	return ""
}

// otherText says what the "other instance" rows are.
const otherText = " On the Redis bus, \"holding instance\" is the proxy the client is connected to and \"other instance\" a second proxy on the same Redis that reaches it through the bus."

// Where the targets come from.
const (
	issue4  = "issue 4"
	issueV2 = "v2 streams"
	issue10 = "issue 10"
	issue12 = "issue 12"
)

// crossCheck is a target on the ratio of one figure in two modes, computed
// round by round: across buses, across instances, capture on and off.
type crossCheck struct {
	from, sc, fig string
	num, den      string // modes
	target        string
	min           float64 // met at a median ratio ≥ min
}

// crossChecks are the ratios issue 10 (point 4) and issue 12 (point 1)
// ask for.
func (r *report) crossChecks() []crossCheck {
	bulk := "100 MB download"
	if r.o.bulkSize != 100*1000*1000 {
		bulk += fmt.Sprintf(" (this run: %v)", r.o.bulkSize)
	}
	return []crossCheck{
		{issue10, "S1", "c=64 throughput", modeRedis, modeMemory, "c=64 req/s on the Redis bus ≥ 70% of the memory bus's, through the holding instance", 0.70},
		{issue10, "S1", "c=64 throughput", modeRedisOther, modeMemory, "c=64 req/s on the Redis bus ≥ 70% of the memory bus's, through the other instance", 0.70},
		{issue10, "S2", "GET 400 KiB", modeRedisOther, modeRedis, "400 KiB download through the other instance ≥ 50% of through the holding one", 0.50},
		{issue10, "S7", "download", modeRedisOther, modeRedis, bulk + " through the other instance ≥ 50% of through the holding one", 0.50},
		{issue12, "S1", "c=64 throughput", modeMemory, modeMemoryOff, "c=64 req/s with the inspector capturing ≥ 90% of --inspect off, same proxy", 0.90},
		{issue12, "S2", "GET 400 KiB", modeMemory, modeMemoryOff, "400 KiB download with the inspector capturing ≥ 90% of --inspect off, same proxy", 0.90},
	}
}

// crossMarkdown renders the cross-mode ratios, each round's and their
// median, and the routing checks behind the other instance's figures.
func (r *report) crossMarkdown(b *strings.Builder) {
	type row struct {
		c  crossCheck
		rs []float64
	}
	var rows []row
	for _, c := range r.crossChecks() {
		f := r.find(c.sc, c.fig)
		if f == nil || len(f.vals[c.num]) == 0 || len(f.vals[c.den]) == 0 {
			continue
		}
		rows = append(rows, row{c, f.modeRatios(c.num, c.den)})
	}
	slices.SortStableFunc(rows, func(a, b row) int { return scenarioOrder(a.c.sc) - scenarioOrder(b.c.sc) })
	if len(rows) == 0 && len(r.routes) == 0 {
		return
	}
	b.WriteString("\n## Across buses, instances and capture\n\n")
	b.WriteString("Ratios of one figure between two modes, computed round by round (the value in the first mode / the value in the second, same round). " +
		"\"Other instance\" is a second proxy on the same Redis that holds no client; \"--inspect off\" a second client on the memory-bus tunnel's proxy whose inspector is off.\n\n")
	if len(rows) > 0 {
		b.WriteString("| scenario | figure | ratio | median | min | max | each round |\n|---|---|---|--:|--:|--:|---|\n")
		for _, rw := range rows {
			s := summarize(rw.rs)
			each := make([]string, len(rw.rs))
			for i, v := range rw.rs {
				each[i] = ratio(v)
			}
			fmt.Fprintf(b, "| %s | %s | %s ÷ %s | %s | %s | %s | %s |\n", rw.c.sc, rw.c.fig, modeLabel[rw.c.num], modeLabel[rw.c.den],
				ratio(s.med), ratio(s.min), ratio(s.max), strings.Join(each, ", "))
		}
	}
	if len(r.routes) > 0 {
		b.WriteString("\nWhere the other instance's loads went (the proxies' --admin /metrics, read before and after each load through the other instance):\n\n")
		for _, l := range r.routes {
			fmt.Fprintf(b, "- %s\n", l)
		}
	}
}

// find returns the figure sc/name, or nil.
func (r *report) find(sc, name string) *figure {
	for _, f := range r.figs {
		if f.scenario == sc && f.name == name {
			return f
		}
	}
	return nil
}

// targetRow is one line of the targets table.
type targetRow struct {
	from, scenario, target, mode, measured, met string
}

// How a target's figure is compared.
const (
	byValue = iota // the figure itself
	byRatio        // its ratio to direct (or to its ref figure)
	byFrp          // its keyhole/frp ratio
)

// evaluateTargets compares the medians with the issues' targets. It
// asserts nothing; the table is for the reader.
func (r *report) evaluateTargets() {
	find := r.find
	verdict := func(v float64, ok bool) string {
		switch {
		case math.IsNaN(v):
			return "not measured"
		case ok:
			return "yes"
		default:
			return "**no**"
		}
	}
	type check struct {
		from, sc, target, fig string
		by                    int
		unit                  string
		pass                  func(float64) bool
	}
	bulk := "100 MB download ≥ 40% of direct MB/s"
	if r.o.bulkSize != 100*1000*1000 {
		bulk += fmt.Sprintf(" (this run: %v)", r.o.bulkSize)
	}
	checks := []check{
		{issue4, "S1", "c=64 req/s ≥ 15% of direct", "c=64 throughput", byRatio, "", func(v float64) bool { return v >= 0.15 }},
		{issue4, "S1", "c=64 p99 ≤ 3× direct", "c=64 p99", byRatio, "", func(v float64) bool { return v <= 3 }},
		{issue4, "S1", "c=1 p99 ≤ 3× direct", "c=1 p99", byRatio, "", func(v float64) bool { return v <= 3 }},
		{issue4, "S1", "c=1 added p50 ≤ 150 µs", "c=1 added p50", byValue, " µs", func(v float64) bool { return v <= 150 }},
		{issueV2, "S1", "c=64 req/s ≥ 2.5× frp's", "c=64 throughput", byFrp, "", func(v float64) bool { return v >= 2.5 }},
		{issue4, "S2", "GET ≥ 20% of direct MB/s", "GET 400 KiB", byRatio, "", func(v float64) bool { return v >= 0.20 }},
		{issue4, "S2", "POST ≥ 20% of direct MB/s", "POST 400 KiB", byRatio, "", func(v float64) bool { return v >= 0.20 }},
		{issueV2, "S2", "GET 400 KiB at c=16 ≥ 30% of direct MB/s", "GET 400 KiB", byRatio, "", func(v float64) bool { return v >= 0.30 }},
		{issueV2, "S2", "GET 400 KiB at c=16 ≥ 1.5× frp's MB/s", "GET 400 KiB", byFrp, "", func(v float64) bool { return v >= 1.5 }},
		{issue4, "S4", "≤ 32 KiB proxy RSS per idle client", "proxy RSS per client", byValue, " KiB", func(v float64) bool { return v <= 32 }},
		{issueV2, "S4", "≤ 46 KiB proxy RSS per idle client (no worse than before v2)", "proxy RSS per client", byValue, " KiB", func(v float64) bool { return v <= 46 }},
		{issue4, "S4", "≥ 500 registrations/s", "registrations", byValue, "/s", func(v float64) bool { return v >= 500 }},
		{issue4, "S5", "≥ 90% of S1's tunnel req/s", "throughput", byRatio, "", func(v float64) bool { return v >= 0.90 }},
		{issueV2, "S6", "added event latency p50 ≤ 1 ms", "added p50", byValue, " µs", func(v float64) bool { return v <= 1000 }},
		{issueV2, "S7", bulk, "download", byRatio, "", func(v float64) bool { return v >= 0.40 }},
		// The brief asks for about 1; 0.9 allows the noise of one
		// download on a shared machine.
		{issueV2, "S8", "fast download beside a stalled reader ≈ 1× alone (met at ≥ 0.9)", "beside a stalled reader", byRatio, "", func(v float64) bool { return v >= 0.9 }},
	}
	withFrp := slices.Contains(r.modes, modeFrp)
	for _, c := range checks {
		f := find(c.sc, c.fig)
		if f == nil {
			continue
		}
		for _, m := range r.modes {
			if !isKeyhole(m) || (holderOnly[c.sc] && m == modeRedisOther) {
				continue
			}
			if c.by == byFrp && !withFrp {
				r.targets = append(r.targets, targetRow{c.from, c.sc, c.target, modeLabel[m], "–", "not measured (no --frp)"})
				continue
			}
			var s summary
			switch c.by {
			case byRatio:
				s = summarize(f.ratios(m))
			case byFrp:
				s = summarize(f.frpRatios(m))
			default:
				s = summarize(f.vals[m])
			}
			measured := num(s.med) + c.unit
			if c.by != byValue {
				measured = ratio(s.med) + "×"
			}
			r.targets = append(r.targets, targetRow{c.from, c.sc, c.target, modeLabel[m], measured, verdict(s.med, !math.IsNaN(s.med) && c.pass(s.med))})
		}
	}
	// "10,000 clients on one proxy, all reachable" needs a 10,000 run.
	if reg, reach := find("S4", "clients registered"), find("S4", "sample reachable"); reg != nil && reach != nil {
		for _, m := range r.modes {
			if !isKeyhole(m) || m == modeRedisOther {
				continue
			}
			n, ok := summarize(reg.vals[m]), summarize(reach.vals[m])
			met := verdict(n.min, n.min >= 10000 && ok.min == 100)
			if !math.IsNaN(n.min) && r.o.s4Clients < 10000 {
				met = fmt.Sprintf("not tried (--s4-clients %d)", r.o.s4Clients)
			}
			r.targets = append(r.targets, targetRow{issue4, "S4", "10,000 clients on one proxy, all reachable", modeLabel[m],
				fmt.Sprintf("%s registered, %s%% of the checked hostnames answered", num(n.min), num(ok.min)), met})
		}
	}
	for _, c := range r.crossChecks() {
		f := find(c.sc, c.fig)
		if f == nil || !slices.Contains(r.modes, c.num) || !slices.Contains(r.modes, c.den) {
			continue
		}
		s := summarize(f.modeRatios(c.num, c.den))
		r.targets = append(r.targets, targetRow{c.from, c.sc, c.target, modeLabel[c.num] + " ÷ " + modeLabel[c.den],
			ratio(s.med) + "×", verdict(s.med, !math.IsNaN(s.med) && s.med >= c.min)})
	}
	if sk := r.soak; sk != nil {
		r.targets = append(r.targets, targetRow{issue10, "S10",
			"soak through the other instance: every response byte-exact, no subscriber disconnected for its output buffer",
			modeLabel[modeRedisOther], sk.summary(), verdict(0, sk.ok())})
	}
	slices.SortStableFunc(r.targets, func(a, b targetRow) int { return scenarioOrder(a.scenario) - scenarioOrder(b.scenario) })
}

// scenarioOrder is a scenario's place in allScenarios: S10 after S9.
func scenarioOrder(sc string) int { return slices.Index(allScenarios, sc) }
