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
	modeRedis  = "redis"
)

var modeLabel = map[string]string{
	modeDirect: "direct",
	modeMemory: "tunnel, memory bus",
	modeRedis:  "tunnel, Redis bus",
}

var scenarioTitle = map[string]string{
	"S1": "S1: small GET (1 KiB)",
	"S2": "S2: large bodies (400 KiB) at concurrency 16",
	"S3": "S3: WebSocket echo (1 KiB messages, 64 streams)",
	"S4": "S4: idle clients on one proxy",
	"S5": "S5: load spread over many clients, concurrency 64",
}

// report collects every figure of a run and renders it as Markdown.
type report struct {
	o       options
	facts   [][2]string
	modes   []string // the modes that ran, in column order
	figs    []*figure
	notes   []string
	targets []targetRow
	pids    []int // every process the run started
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
	// checked figures must be measured and positive in every mode that
	// ran (the test's sanity check); others may be negative or absent.
	checked bool
}

func newReport(o options) *report { return &report{o: o} }

func (r *report) fact(k, v string) { r.facts = append(r.facts, [2]string{k, v}) }

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
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
		b.WriteString("| figure | mode | median | min | max | ratio: median (min–max) |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|\n")
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
				rcell := ""
				if rs := f.ratios(m); len(rs) > 0 {
					rsum := summarize(rs)
					rcell = fmt.Sprintf("%s (%s–%s)", ratio(rsum.med), ratio(rsum.min), ratio(rsum.max))
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", name, modeLabel[m], num(s.med), num(s.min), num(s.max), rcell)
			}
			var legend string
			switch {
			case f.ref != nil:
				legend = fmt.Sprintf("ratio of %s = tunnel value / %s, same bus, same round", f.name, f.refLabel)
			case f.vsDirect:
				legend = "ratio = tunnel / direct, round by round"
			}
			if legend != "" && !slices.Contains(legends, legend) {
				legends = append(legends, legend)
			}
		}
		if len(legends) > 0 {
			fmt.Fprintf(&b, "\n%s.\n", strings.Join(legends, "; "))
		}
	}
	if len(r.targets) > 0 {
		b.WriteString("\n## Targets (issue 4)\n\n")
		b.WriteString("| scenario | target | bus | measured (median) | met |\n|---|---|---|--:|---|\n")
		for _, t := range r.targets {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.scenario, t.target, t.mode, t.measured, t.met)
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
			"CPU rows: user+system CPU time of each process during the load (/proc/PID/stat, 10 ms ticks) per request answered.", d)
	case "S2":
		return fmt.Sprintf("GET /large (400 KiB response) and POST /upload (400 KiB request body) for %s on 16 connections. "+
			"MB/s = payload bytes per second / 10^6.", d)
	case "S3":
		return fmt.Sprintf("64 WebSocket connections for %s (Go generator, coder/websocket); each sends a 1 KiB binary message and waits for its echo before sending the next. "+
			"Round trip = send to echo received.", d)
	case "S4":
		helpers := s4Helpers(o.s4Clients)
		sample := fmt.Sprintf("a random sample of %d", o.s4Sample)
		if o.s4Sample == 0 || o.s4Sample >= o.s4Clients {
			sample = "every one"
		}
		return fmt.Sprintf("A fresh proxy per bus; %d clients (the client library in-process, each with its own in-memory Ed25519 key) in %d helper process(es), at most %d registrations in flight per helper. "+
			"Registrations/s = clients / (first helper started → last registration seen). "+
			"Proxy RSS (/proc VmRSS) before the first client and right after the last registration; per client = (after − before) / clients. "+
			"Then GET /small through %s of the hostnames must answer 200 with the right body, and one ordinary client process is started to read its RSS once registered.",
			o.s4Clients, helpers, helperParallel, sample)
	case "S5":
		return fmt.Sprintf("%d clients in one helper process on the long-lived proxy; GET /small for %s at concurrency 64, cycling through their hostnames. "+
			"The client CPU row is the whole helper process.", o.s5Clients, d)
	}
	return ""
}

// targetRow is one line of the targets table.
type targetRow struct {
	scenario, target, mode, measured, met string
}

// evaluateTargets compares the medians with issue 4's targets. It asserts
// nothing; the table is for the reader.
func (r *report) evaluateTargets() {
	find := func(sc, name string) *figure {
		for _, f := range r.figs {
			if f.scenario == sc && f.name == name {
				return f
			}
		}
		return nil
	}
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
		sc, target, fig string
		useRatio        bool
		unit            string
		pass            func(float64) bool
	}
	checks := []check{
		{"S1", "c=64 req/s ≥ 15% of direct", "c=64 throughput", true, "", func(v float64) bool { return v >= 0.15 }},
		{"S1", "c=64 p99 ≤ 3× direct", "c=64 p99", true, "", func(v float64) bool { return v <= 3 }},
		{"S1", "c=1 p99 ≤ 3× direct", "c=1 p99", true, "", func(v float64) bool { return v <= 3 }},
		{"S1", "c=1 added p50 ≤ 150 µs", "c=1 added p50", false, " µs", func(v float64) bool { return v <= 150 }},
		{"S2", "GET ≥ 20% of direct MB/s", "GET 400 KiB", true, "", func(v float64) bool { return v >= 0.20 }},
		{"S2", "POST ≥ 20% of direct MB/s", "POST 400 KiB", true, "", func(v float64) bool { return v >= 0.20 }},
		{"S4", "≤ 32 KiB proxy RSS per idle client", "proxy RSS per client", false, " KiB", func(v float64) bool { return v <= 32 }},
		{"S4", "≥ 500 registrations/s", "registrations", false, "/s", func(v float64) bool { return v >= 500 }},
		{"S5", "≥ 90% of S1's tunnel req/s", "throughput", true, "", func(v float64) bool { return v >= 0.90 }},
	}
	for _, c := range checks {
		f := find(c.sc, c.fig)
		if f == nil {
			continue
		}
		for _, m := range r.modes {
			if m == modeDirect {
				continue
			}
			var s summary
			if c.useRatio {
				s = summarize(f.ratios(m))
			} else {
				s = summarize(f.vals[m])
			}
			measured := num(s.med) + c.unit
			if c.useRatio {
				measured = ratio(s.med) + "×"
			}
			r.targets = append(r.targets, targetRow{c.sc, c.target, modeLabel[m], measured, verdict(s.med, !math.IsNaN(s.med) && c.pass(s.med))})
		}
	}
	// "10,000 clients on one proxy, all reachable" needs a 10,000 run.
	if reg, reach := find("S4", "clients registered"), find("S4", "sample reachable"); reg != nil && reach != nil {
		for _, m := range r.modes {
			if m == modeDirect {
				continue
			}
			n, ok := summarize(reg.vals[m]), summarize(reach.vals[m])
			met := verdict(n.min, n.min >= 10000 && ok.min == 100)
			if !math.IsNaN(n.min) && r.o.s4Clients < 10000 {
				met = fmt.Sprintf("not tried (--s4-clients %d)", r.o.s4Clients)
			}
			r.targets = append(r.targets, targetRow{"S4", "10,000 clients on one proxy, all reachable", modeLabel[m],
				fmt.Sprintf("%s registered, %s%% of the checked hostnames answered", num(n.min), num(ok.min)), met})
		}
	}
	slices.SortStableFunc(r.targets, func(a, b targetRow) int { return strings.Compare(a.scenario, b.scenario) })
}
