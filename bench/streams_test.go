package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPattern proves that bulk bodies, built piece by piece from one fixed
// buffer, are the same pattern as the origin's other bodies, whatever the
// sizes of the reads, and that the checker finds a wrong byte.
func TestPattern(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, buf int
	}{
		{"empty", 0, 10},
		{"one byte reads", 100, 1},
		{"odd reads", 200_003, 997},
		{"reads larger than the buffer", 3*bulkChunk + 5, 2*bulkChunk + 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := pattern(c.size)
			var got bytes.Buffer
			r := &patternReader{n: int64(c.size)}
			buf := make([]byte, c.buf)
			for {
				n, err := r.Read(buf)
				got.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("read %d bytes, not the %d-byte pattern", got.Len(), len(want))
			}
			w := &patternWriter{}
			if _, err := io.CopyBuffer(w, bytes.NewReader(want), make([]byte, c.buf)); err != nil || w.off != int64(c.size) {
				t.Fatalf("checker: %d bytes, %v; want %d, no error", w.off, err, c.size)
			}
			if c.size == 0 {
				return
			}
			bad := bytes.Clone(want)
			at := len(bad) * 2 / 3
			bad[at]++
			w = &patternWriter{}
			_, err := io.CopyBuffer(w, bytes.NewReader(bad), make([]byte, c.buf))
			if err == nil || !strings.Contains(err.Error(), "at byte "+strconv.Itoa(at)) {
				t.Fatalf("checker on a body wrong at byte %d: %v", at, err)
			}
		})
	}
}

// TestQuantile checks the nearest-rank quantile S6 reports.
func TestQuantile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}} {
		if got := quantile(ds, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
}

// TestFrpConfigs has frp itself check the configurations the harness
// writes, in its strict mode, which rejects unknown keys. It needs frp's
// binaries: KEYHOLE_BENCH_FRP names their directory.
func TestFrpConfigs(t *testing.T) {
	dir := os.Getenv(frpEnv)
	if dir == "" {
		t.Skipf("%s is not set: no frp binaries to check the configurations with", frpEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := findFrp(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for _, c := range []struct {
		name, bin, conf string
	}{
		{"frps", b.frps, frpsConfig(7000, 7080, "secret")},
		{"frpc", b.frpc, frpcConfig(7000, 8080, "secret")},
		// The check must be able to fail: a key frp does not know.
		{"frps rejects an unknown key", b.frps, frpsConfig(7000, 7080, "secret") + "noSuchKey = 1\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(tmp, strings.ReplaceAll(c.name, " ", "-")+".toml")
			if err := os.WriteFile(path, []byte(c.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(ctx, c.bin, "verify", "-c", path).CombinedOutput()
			wantOK := !strings.Contains(c.name, "rejects")
			if (err == nil) != wantOK {
				t.Errorf("%s verify: %v, want success %v\n%s\n%s", filepath.Base(c.bin), err, wantOK, out, c.conf)
			}
		})
	}
}

// TestParseOptions covers the flags S6-S8 and frp added.
func TestParseOptions(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		env     string
		wantErr bool
		check   func(options) bool
	}{
		{name: "defaults", check: func(o options) bool {
			return o.bulkSize == 100e6 && o.s6Events == 50 && o.s6Interval == 20*time.Millisecond && o.frpDir == "" && len(o.scenarios) == len(allScenarios)
		}},
		{name: "quick makes bodies small", args: []string{"--quick"}, check: func(o options) bool { return o.bulkSize == 16e6 && o.s6Events == 20 }},
		{name: "explicit size wins over quick", args: []string{"--quick", "--bulk-size", "2MiB"}, check: func(o options) bool { return o.bulkSize == 2<<20 }},
		{name: "frp from the environment", env: "/opt/frp", check: func(o options) bool { return o.frpDir == "/opt/frp" }},
		{name: "flag wins over the environment", args: []string{"--frp", "/x"}, env: "/opt/frp", check: func(o options) bool { return o.frpDir == "/x" }},
		{name: "new scenarios by name", args: []string{"--scenarios", "s6,S8"}, check: func(o options) bool { return o.scenarios["S6"] && o.scenarios["S8"] && len(o.scenarios) == 2 }},
		{name: "size too small", args: []string{"--bulk-size", "1000"}, wantErr: true},
		{name: "size not a size", args: []string{"--bulk-size", "big"}, wantErr: true},
		{name: "no events", args: []string{"--s6-events", "0"}, wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(frpEnv, c.env)
			o, err := parseOptions(c.args, io.Discard)
			if (err != nil) != c.wantErr {
				t.Fatalf("parseOptions(%q): %v, want error %v", c.args, err, c.wantErr)
			}
			if err == nil && !c.check(o) {
				t.Errorf("parseOptions(%q) = %+v", c.args, o)
			}
		})
	}
}

// TestHelpNamesFrpAsSeparate checks that --help says frp is built apart
// from keyhole.
func TestHelpNamesFrpAsSeparate(t *testing.T) {
	var b strings.Builder
	if _, err := parseOptions([]string{"--help"}, &b); err == nil {
		t.Fatal("--help: no flag.ErrHelp")
	}
	help := strings.Join(strings.Fields(b.String()), " ")
	for _, s := range []string{"--frp directory", "built separately from frp's public source", frpEnv, "--bulk-size size"} {
		if !strings.Contains(help, s) {
			t.Errorf("--help lacks %q:\n%s", s, b.String())
		}
	}
}

// TestTargets feeds the targets table made-up figures and checks each
// verdict against the threshold, with frp and without.
func TestTargets(t *testing.T) {
	type val struct{ direct, memory, frp float64 }
	figs := []struct {
		sc, name string
		vsDirect bool
		v        val
	}{
		// 40% of direct and 2× frp: both S2 targets met.
		{"S2", "GET 400 KiB", true, val{100, 40, 20}},
		// 2× frp: the 2.5× target missed.
		{"S1", "c=64 throughput", true, val{1000, 200, 100}},
		{"S6", "added p50", false, val{math.NaN(), 1200, 300}},
		{"S7", "download", true, val{1000, 400, 500}},
		{"S4", "proxy RSS per client", false, val{math.NaN(), 40, math.NaN()}},
	}
	want := map[string]string{
		"GET 400 KiB at c=16 ≥ 30% of direct MB/s":                     "yes",
		"GET 400 KiB at c=16 ≥ 1.5× frp's MB/s":                        "yes",
		"GET ≥ 20% of direct MB/s":                                     "yes",
		"c=64 req/s ≥ 2.5× frp's":                                      "**no**",
		"c=64 req/s ≥ 15% of direct":                                   "yes",
		"added event latency p50 ≤ 1 ms":                               "**no**",
		"100 MB download ≥ 40% of direct MB/s":                         "yes",
		"≤ 46 KiB proxy RSS per idle client (no worse than before v2)": "yes",
		"≤ 32 KiB proxy RSS per idle client":                           "**no**",
	}
	for _, withFrp := range []bool{true, false} {
		t.Run(map[bool]string{true: "with frp", false: "without frp"}[withFrp], func(t *testing.T) {
			r := newReport(options{rounds: 1, bulkSize: 100e6})
			r.modes = []string{modeDirect, modeMemory}
			if withFrp {
				r.modes = append(r.modes, modeFrp)
			}
			for _, f := range figs {
				fig := r.fig(f.sc, f.name, "")
				fig.vsDirect, fig.vsFrp = f.vsDirect, true
				for m, v := range map[string]float64{modeDirect: f.v.direct, modeMemory: f.v.memory, modeFrp: f.v.frp} {
					if !math.IsNaN(v) && (m != modeFrp || withFrp) {
						r.set(fig, m, 0, v)
					}
				}
			}
			r.evaluateTargets()
			seen := map[string]bool{}
			for _, row := range r.targets {
				w, ok := want[row.target]
				if !ok {
					continue
				}
				seen[row.target] = true
				if strings.Contains(row.target, "frp") && !withFrp {
					w = "not measured (no --frp)"
				}
				if row.met != w {
					t.Errorf("%s %q: met %q (measured %s), want %q", row.scenario, row.target, row.met, row.measured, w)
				}
			}
			for target := range want {
				if !seen[target] {
					t.Errorf("no row for %q", target)
				}
			}
		})
	}
}
