package main

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the bench binary: the harness
// runs its own executable with "origin" or "clients" to start helpers.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "origin" || os.Args[1] == "clients") {
		ctx, stop := signalContext()
		err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if err != nil {
			os.Stderr.WriteString("bench: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// frpScenarios are the scenarios that measure frp when it is given.
var frpScenarios = map[string]bool{"S1": true, "S2": true, "S3": true, "S6": true, "S7": true, "S8": true}

// TestQuickRun runs the whole harness once in --quick mode. It proves the
// harness works: every scenario produced a table and every figure is a
// sane number. It asserts no speed. frp is measured too when
// KEYHOLE_BENCH_FRP names a directory with frps and frpc.
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o, err := parseOptions([]string{"--quick"}, &testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, err := runHarness(ctx, o, &testWriter{t})
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Logf("quick run took %v", time.Since(start).Round(time.Millisecond))
	md := rep.markdown()
	for _, sc := range allScenarios {
		_, section, ok := strings.Cut(md, "\n## "+scenarioTitle[sc]+"\n")
		section, _, _ = strings.Cut(section, "\n## ")
		want := "\n| figure | mode | median | min | max |"
		if sc == "S10" {
			want = "\n| requests | count | exact |"
		}
		if sc == "S9" {
			// One table per deployment, a column per count.
			want = "\n| figure |"
			for _, c := range o.s9Counts {
				want += " " + thousands(c) + " entries |"
			}
		}
		if !ok || !strings.Contains(section, want) {
			t.Errorf("no table for %s", sc)
		}
	}
	for _, s := range []string{"**command:** `go run ./bench --quick`", "**machine:**", "**load generator:**", "## Targets"} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q", s)
		}
	}
	withFrp := os.Getenv(frpEnv) != ""
	if got := slices.Contains(rep.modes, modeFrp); got != withFrp {
		t.Errorf("frp measured: %v, want %v (%s=%q)", got, withFrp, frpEnv, os.Getenv(frpEnv))
	}
	// S9 runs on one redis-server, and on a Redis Cluster when redis-cli
	// is installed too.
	wantSim := []string{}
	if _, err := exec.LookPath("redis-server"); err == nil {
		wantSim = append(wantSim, modeSimServer)
		if _, err := exec.LookPath("redis-cli"); err == nil {
			wantSim = append(wantSim, modeSimCluster)
		}
	}
	if !slices.Equal(rep.simModes, wantSim) {
		t.Errorf("S9 measured %v, want %v", rep.simModes, wantSim)
	}
	for _, f := range rep.figs {
		if f.scenario == "S9" {
			// Every S9 figure has a value for each deployment; the
			// instances' figures are exact.
			for _, m := range rep.simModes {
				if m == modeSimServer && slices.Contains(replicaRows, f.row) {
					continue // one server has no replica
				}
				if len(f.vals[m]) != o.rounds {
					t.Errorf("S9 %q: %d values for %s, want %d", f.name, len(f.vals[m]), m, o.rounds)
				}
				for round, v := range f.vals[m] {
					if math.IsNaN(v) || math.IsInf(v, 0) || (f.checked && v <= 0) {
						t.Errorf("S9 %q, %s, round %d: %v", f.name, m, round+1, v)
					}
				}
				if f.row == rowInstListedOK && f.get(m, 0) != float64(o.s9Instances) {
					t.Errorf("S9, %s: Instances listed %v of the %d instances", m, f.get(m, 0), o.s9Instances)
				}
			}
			continue
		}
		// Every figure has a value for each keyhole tunnel; figures
		// compared with direct have a direct value too, and the
		// scenarios frp runs in have an frp value.
		var modes []string
		for _, m := range rep.modes {
			if (m == modeDirect && !f.vsDirect) || (m == modeFrp && !frpScenarios[f.scenario]) ||
				(sparseModes[m] && len(f.vals[m]) == 0) || (m == modeRedisOther && holderOnly[f.scenario]) {
				continue
			}
			modes = append(modes, m)
		}
		for _, m := range modes {
			if len(f.vals[m]) != o.rounds {
				t.Errorf("%s %q: %d values for %s, want %d", f.scenario, f.name, len(f.vals[m]), m, o.rounds)
			}
			for round, v := range f.vals[m] {
				if math.IsNaN(v) || math.IsInf(v, 0) || (f.checked && v <= 0) {
					t.Errorf("%s %q, %s, round %d: %v", f.scenario, f.name, m, round+1, v)
				}
			}
		}
	}
	for _, m := range slices.DeleteFunc(slices.Clone(rep.modes), func(m string) bool { return !isKeyhole(m) || m == modeRedisOther }) {
		for _, f := range rep.figs {
			if f.scenario == "S4" && f.name == "sample reachable" && f.get(m, 0) != 100 {
				t.Errorf("S4, %s: %v%% of the sampled hostnames answered", m, f.get(m, 0))
			}
		}
	}
	// With frp, the figures frp is measured in are compared with it.
	for _, f := range rep.figs {
		if withFrp && frpScenarios[f.scenario] && f.checked && !f.vsFrp {
			t.Errorf("%s %q: not compared with frp", f.scenario, f.name)
		}
		if withFrp && f.vsFrp && f.checked && len(f.frpRatios(modeMemory)) != o.rounds {
			t.Errorf("%s %q: %d keyhole/frp ratios, want %d", f.scenario, f.name, len(f.frpRatios(modeMemory)), o.rounds)
		}
	}
	for _, sc := range []string{"S6", "S7", "S8", "S9"} {
		if !slices.ContainsFunc(rep.figs, func(f *figure) bool { return f.scenario == sc }) {
			t.Errorf("no figures for %s", sc)
		}
	}
	// No checked failure: no wrong answer in S10, no subscriber lost, the
	// other instance's loads through it, every inspector capturing.
	for _, f := range rep.failures {
		t.Errorf("checked failure: %s", f)
	}
	// The capture cost's baseline is measured where it is compared.
	if !slices.Contains(rep.modes, modeMemoryOff) {
		t.Errorf("modes %v lack %s", rep.modes, modeMemoryOff)
	}
	_, redisErr := exec.LookPath("redis-server")
	if withRedis := redisErr == nil; withRedis != slices.Contains(rep.modes, modeRedisOther) || withRedis != slices.Contains(rep.modes, modeRedis) {
		t.Errorf("modes %v, with redis-server on PATH: %v", rep.modes, withRedis)
	}
	// Every ratio across modes that both modes ran in has a value per
	// round.
	for _, c := range rep.crossChecks() {
		if !slices.Contains(rep.modes, c.num) || !slices.Contains(rep.modes, c.den) {
			continue
		}
		f := rep.find(c.sc, c.fig)
		if f == nil {
			t.Errorf("no figure %s %q for %q", c.sc, c.fig, c.target)
			continue
		}
		rs := f.modeRatios(c.num, c.den)
		if len(rs) != o.rounds {
			t.Errorf("%q: %d ratios, want %d", c.target, len(rs), o.rounds)
		}
		for _, v := range rs {
			if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
				t.Errorf("%q: ratio %v", c.target, v)
			}
		}
	}
	if slices.Contains(rep.modes, modeRedisOther) {
		// The loads of S1 and S2 through the other instance were each
		// checked on the proxies' counters.
		if len(rep.routes) != 2*o.rounds {
			t.Errorf("%d routing checks, want %d: %q", len(rep.routes), 2*o.rounds, rep.routes)
		}
		sk := rep.soak
		switch {
		case sk == nil:
			t.Error("S10 did not run")
		case !sk.ok():
			t.Errorf("S10: %q", sk.problems)
		default:
			for i, k := range sk.kinds {
				if sk.counts[i].requests == 0 || sk.counts[i].ok != sk.counts[i].requests {
					t.Errorf("S10 %s: %d requests, %d exact", k.name, sk.counts[i].requests, sk.counts[i].ok)
				}
			}
			if sk.redis.samples == 0 || len(sk.redis.ours) < 2 || len(sk.redis.before) < 2 {
				t.Errorf("S10 watched Redis %d times, subscribers %v (ours %v)", sk.redis.samples, sk.redis.before, sk.redis.ours)
			}
		}
	}
	// A stalled stream must stall only itself and move again once read.
	for _, n := range rep.notes {
		if strings.Contains(n, "did not resume") || strings.Contains(n, "still writing the stalled stream") ||
			(strings.HasPrefix(n, "S9") && (strings.Contains(n, "failed (of") || strings.Contains(n, "stopped:") || strings.Contains(n, "not measured"))) {
			t.Errorf("note: %s", n)
		}
	}
	// Every child was stopped.
	for _, pid := range rep.pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after the run (kill 0: %v)", pid, err)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", md)
	}
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestParseWrk(t *testing.T) {
	out := `Running 2s test @ http://127.0.0.1:8080/small
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   80.00%
    Req/Sec    25.00k     1.00k   27.00k    70.00%
  Latency Distribution
     50%  412.00us
     75%    1.40ms
     90%    1.80ms
     99%    3.00ms
  100000 requests in 2.00s, 110.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  50000.00
Transfer/sec:     55.00MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := loadResult{ops: 100000 - 8, errors: 8, elapsed: 2 * time.Second, p50: 412 * time.Microsecond, p99: 3 * time.Millisecond}
	if r.ops != want.ops || r.errors != want.errors || r.elapsed != want.elapsed || r.p50 != want.p50 || r.p99 != want.p99 {
		t.Errorf("got %+v, want %+v", *r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("parsed an error message")
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if math.Abs(float64(got-c.want))/float64(c.want) > 0.01 {
			t.Errorf("quantile(%v) = %v, want %v within 1%%", c.q, got, c.want)
		}
	}
	for _, v := range []uint64{0, 1, 255, 256, 257, 1 << 20, 1<<40 - 1} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d, out of range", v, i)
		}
		if got := histValue(i); float64(got) < float64(v)*0.99 || float64(got) > float64(v)*1.01+1 {
			t.Errorf("histValue(histIndex(%d)) = %d", v, got)
		}
	}
}
