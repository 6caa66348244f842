package main

import (
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
)

func TestCountList(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"1000", []int{1000}},
		{"1k,10k, 50K ,100000", []int{1000, 10000, 50000, 100000}},
		{"1,2,3", []int{1, 2, 3}},
		{"1000k", []int{1000000}},
		{"", nil},
		{"0", nil},
		{"-5", nil},
		{"10,5", nil},
		{"10,10", nil},
		{"1001k", nil},
		{"1000001", nil},
		{"ten", nil},
		{"1k,", nil},
	} {
		t.Run(c.in, func(t *testing.T) {
			var l countList
			err := l.Set(c.in)
			if c.want == nil {
				if err == nil {
					t.Fatalf("Set(%q) = %v, want an error", c.in, l)
				}
				return
			}
			if err != nil || !slices.Equal(l, c.want) {
				t.Fatalf("Set(%q) = %v, %v; want %v", c.in, l, err, c.want)
			}
			// String gives back what Set takes.
			var again countList
			if err := again.Set(l.String()); err != nil || !slices.Equal(again, l) {
				t.Errorf("Set(String()) = %v, %v; want %v", again, err, l)
			}
		})
	}
}

func TestS9Options(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		counts []int
		ok     bool
	}{
		{"defaults", nil, []int{1000, 10000, 50000, 100000}, true},
		{"quick", []string{"--quick"}, []int{500, 2000}, true},
		{"quick with counts", []string{"--quick", "--s9-counts", "3k"}, []int{3000}, true},
		{"decreasing", []string{"--s9-counts", "10k,1k"}, nil, false},
		{"no concurrency", []string{"--s9-concurrency", "0"}, nil, false},
		{"no instance", []string{"--s9-instances", "0"}, nil, false},
		{"no lookup", []string{"--s9-lookups", "0"}, nil, false},
		{"cluster off", []string{"--s9-cluster=false"}, []int{1000, 10000, 50000, 100000}, true},
		{"unknown scenario", []string{"--scenarios", "S11"}, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseOptions(c.args, io.Discard)
			if !c.ok {
				if err == nil {
					t.Fatalf("parseOptions(%q) accepted", c.args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(o.s9Counts, c.counts) {
				t.Errorf("counts %v, want %v", o.s9Counts, c.counts)
			}
			if !o.scenarios["S9"] {
				t.Error("S9 not selected by default")
			}
		})
	}
}

// infoReply is an INFO answer in Redis 7's shape, trimmed.
const infoReply = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmem_total_replication_buffers:4096\r\n" +
	"mem_clients_normal:2000\r\n\r\n# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\n\r\n" +
	"# Clients\r\nconnected_clients:7\r\n\r\n# Stats\r\ntotal_net_input_bytes:500\r\ntotal_net_output_bytes:300\r\ntotal_net_repl_output_bytes:200\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:2\r\n" +
	"slave0:ip=127.0.0.1,port=7001,state=online,offset=900,lag=0\r\nslave1:ip=127.0.0.1,port=7002,state=online,offset=1000,lag=1\r\n" +
	"master_repl_offset:1000\r\n\r\n# Commandstats\r\ncmdstat_get:calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_cluster|info:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n"

func TestParseStats(t *testing.T) {
	s, err := parseStats(infoReply)
	if err != nil {
		t.Fatal(err)
	}
	if s.usedMemory != 1048576 || s.replBuffers != 4096 || s.dataMemory() != 1048576-4096 || s.clients != 7 || s.replOffset != 1000 ||
		s.netIn != 500 || s.netOut != 300 || s.replOut != 200 {
		t.Errorf("parsed %+v", s)
	}
	if math.Abs(s.cpu-1.75) > 1e-9 {
		t.Errorf("cpu %v, want 1.75", s.cpu)
	}
	if !slices.Equal(s.replicaOffset, []int64{900, 1000}) {
		t.Errorf("replica offsets %v", s.replicaOffset)
	}
	if s.calls["get"] != 12 || s.usec["get"] != 34 || s.calls["cluster|info"] != 3 {
		t.Errorf("commandstats %v %v", s.calls, s.usec)
	}
	// A reply without a field the simulation needs is an error, not a 0.
	if _, err := parseStats(strings.Replace(infoReply, "used_memory:", "used_memory_x:", 1)); err == nil {
		t.Error("a reply without used_memory parsed")
	}
	if f := parseInfo("# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n"); f["cluster_state"] != "ok" || f["cluster_slots_ok"] != "16384" || len(f) != 2 {
		t.Errorf("parseInfo(CLUSTER INFO) = %v", f)
	}
}

func TestCommandsPerOp(t *testing.T) {
	m1, m2 := &redisNode{addr: "a"}, &redisNode{addr: "b"}
	nodes := []*redisNode{m1, m2}
	stats := func(calls, usec map[string]int64) nodeStats { return nodeStats{calls: calls, usec: usec} }
	a := snapshot{
		m1: stats(map[string]int64{"evalsha": 10, "get": 10, "info": 5}, map[string]int64{"evalsha": 100}),
		m2: stats(map[string]int64{}, map[string]int64{}),
	}
	b := snapshot{
		// 1,000 refreshes over two masters; the harness's INFO and one
		// stray PING are left out.
		m1: stats(map[string]int64{"evalsha": 610, "get": 610, "pexpire": 600, "info": 9, "ping": 1}, map[string]int64{"evalsha": 2500}),
		m2: stats(map[string]int64{"evalsha": 400, "get": 400, "pexpire": 400}, map[string]int64{"evalsha": 1600}),
	}
	if got, want := commandsPerOp(a, b, nodes, 1000), "evalsha 1.00, get 1.00, pexpire 1.00"; got != want {
		t.Errorf("commandsPerOp = %q, want %q", got, want)
	}
	if got := usecPerOp(a, b, nodes, 1000, "evalsha", "eval"); got != 4 {
		t.Errorf("usecPerOp = %v, want 4", got)
	}
	if got := commandsPerOp(a, a, nodes, 1000); got != "none" {
		t.Errorf("no change: %q", got)
	}
	if !math.IsNaN(usecPerOp(a, b, nodes, 0, "evalsha")) {
		t.Error("usecPerOp of no operation is a number")
	}
}

func TestSimNames(t *testing.T) {
	n := &simNames{seed: [16]byte{1}, instances: []string{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"}}
	seen := map[string]bool{}
	for i := range 3000 {
		l := n.label(i)
		if !messages.IsHostnameLabel(l) {
			t.Fatalf("label(%d) = %q: not a hostname label", i, l)
		}
		if seen[l] {
			t.Fatalf("label(%d) = %q twice", i, l)
		}
		seen[l] = true
		h := n.holder(i)
		inst, token, ok := strings.Cut(h, "/")
		if !ok || inst != n.instances[i%3] || len(token) != 24 || n.owner(i) != i%3 {
			t.Fatalf("holder(%d) = %q, owner %d", i, h, n.owner(i))
		}
		if n.label(i) != l || n.holder(i) != h {
			t.Fatalf("names of %d change", i)
		}
	}
	other := &simNames{seed: [16]byte{2}, instances: n.instances}
	if other.label(0) == n.label(0) {
		t.Error("another seed gives the same names")
	}
}

func TestRunOps(t *testing.T) {
	for _, c := range []struct {
		name             string
		from, to, conc   int
		failEvery        int
		wantOps, wantErr int64
	}{
		{"all succeed", 10, 1010, 16, 0, 1000, 0},
		{"one worker", 0, 100, 1, 0, 100, 0},
		{"more workers than ops", 0, 3, 64, 0, 3, 0},
		{"some fail", 0, 1000, 8, 10, 900, 100},
		{"nothing to do", 5, 5, 8, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var mu sync.Mutex
			done := map[int]int{}
			res := runOps(context.Background(), c.from, c.to, c.conc, func(ctx context.Context, i int) error {
				mu.Lock()
				done[i]++
				mu.Unlock()
				if c.failEvery > 0 && i%c.failEvery == 0 {
					return errors.New("failed")
				}
				return nil
			})
			if res.ops != c.wantOps || res.errors != c.wantErr || res.hist.n != uint64(c.wantOps) {
				t.Errorf("ops %d, errors %d, recorded %d; want %d, %d", res.ops, res.errors, res.hist.n, c.wantOps, c.wantErr)
			}
			if (c.wantErr > 0) != (res.firstErr != nil) {
				t.Errorf("first error %v", res.firstErr)
			}
			// Every i once, none outside the range.
			if len(done) != c.to-c.from {
				t.Errorf("%d distinct operations, want %d", len(done), c.to-c.from)
			}
			for i, n := range done {
				if i < c.from || i >= c.to || n != 1 {
					t.Errorf("operation %d ran %d times", i, n)
				}
			}
		})
	}
}

func TestRunOpsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	res := runOps(ctx, 0, 1000000, 4, func(ctx context.Context, i int) error {
		once.Do(cancel)
		return nil
	})
	if res.ops+res.errors != 1000000 || res.errors == 0 || res.firstErr == nil {
		t.Errorf("a canceled phase: %d ops, %d errors (%v); want the rest counted as failed", res.ops, res.errors, res.firstErr)
	}
}

func TestCapacity(t *testing.T) {
	for _, c := range []struct {
		cpu  float64
		want float64
	}{{10, 1e6}, {20, 5e5}, {0.5, 2e7}} {
		if got := capacity(c.cpu, 10*time.Second); math.Abs(got-c.want) > 1e-6*c.want {
			t.Errorf("capacity(%v µs) = %v, want %v", c.cpu, got, c.want)
		}
	}
	for _, cpu := range []float64{0, -1, math.NaN()} {
		if got := capacity(cpu, 10*time.Second); !math.IsNaN(got) {
			t.Errorf("capacity(%v) = %v, want NaN", cpu, got)
		}
	}
}

func TestGrowth(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name        string
		vals        []float64
		first, last int
		ratio       float64
		ok          bool
	}{
		{"flat", []float64{10, 11, 10}, 0, 2, 1, true},
		{"doubles", []float64{10, 15, 20}, 0, 2, 2, true},
		{"skips gaps", []float64{nan, 4, nan, 2, nan}, 1, 3, 0.5, true},
		{"skips non-positive", []float64{0, 5, -1, 10}, 1, 3, 2, true},
		{"one value", []float64{nan, 3}, 0, 0, nan, false},
		{"none", nil, 0, 0, nan, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			first, last, ratio, ok := growth(c.vals)
			if ok != c.ok || (ok && (first != c.first || last != c.last || math.Abs(ratio-c.ratio) > 1e-9)) {
				t.Errorf("growth(%v) = %d, %d, %v, %v; want %d, %d, %v, %v", c.vals, first, last, ratio, ok, c.first, c.last, c.ratio, c.ok)
			}
		})
	}
	for _, c := range []struct {
		row   string
		ratio float64
		want  bool
	}{
		{rowRefreshCPU, 1.2, true},
		{rowRefreshCPU, 0.5, true},
		{rowRefreshCPU, 2, false},
		{rowMemory, 1.6, false},
		{rowCapacity, 0.8, true},
		{rowCapacity, 0.5, false},
		{rowCapacity, 3, true},
	} {
		if got := sublinear(c.row, c.ratio, 1.5); got != c.want {
			t.Errorf("sublinear(%q, %v) = %v, want %v", c.row, c.ratio, got, c.want)
		}
	}
}

// TestSimReport renders S9's figures: a column per count, the growth
// from the smallest to the largest, a note for a cost that grows.
func TestSimReport(t *testing.T) {
	o := options{rounds: 2, s9Counts: []int{1000, 10000}}
	r := newReport(o)
	r.simModes = []string{modeSimServer}
	for round, vals := range [][2]float64{{10, 30}, {12, 26}} { // CPU per refresh, µs
		for i, c := range o.s9Counts {
			r.set(r.simFig(rowRefreshCPU, "ms", c), modeSimServer, round, vals[i])
			r.set(r.simFig(rowMemory, "B", c), modeSimServer, round, 250)
		}
		r.set(r.simFig(rowInstConns, "", 0), modeSimServer, round, 11)
	}
	r.simGrowthNotes()
	md := r.markdown()
	for _, want := range []string{
		"| figure | 1,000 entries | 10,000 entries | largest / smallest |",
		"| Redis CPU per 1,000 refreshes (ms) | 11 (10–12) | 28 (26–30) | 2.55× |",
		"| Redis memory per entry (B) | 250 (250–250) | 250 (250–250) | 1× |",
		"| Redis connections per instance | 11 (11–11) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	var notes []string
	for _, n := range r.notes {
		if strings.Contains(n, "not linear") {
			notes = append(notes, n)
		}
	}
	if len(notes) != 1 || !strings.Contains(notes[0], rowRefreshCPU) {
		t.Errorf("growth notes %q, want one on %s", notes, rowRefreshCPU)
	}
}

func TestPromValue(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 2017\ngo_goroutines_x 5\n"
	if v, err := promValue(text, "go_goroutines"); err != nil || v != 2017 {
		t.Errorf("promValue = %v, %v; want 2017", v, err)
	}
	if _, err := promValue(text, "go_threads"); err == nil {
		t.Error("found a metric that is not there")
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{1: "1", 999: "999", 1000: "1,000", 50000: "50,000", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// wsFrame encodes one websocket frame, masked when key is given.
func wsFrame(opcode byte, payload []byte, key []byte) []byte {
	b := []byte{0x80 | opcode}
	mask := byte(0)
	if key != nil {
		mask = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mask|byte(n))
	case n < 1<<16:
		b = append(b, mask|126, byte(n>>8), byte(n))
	default:
		b = append(b, mask|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	if key == nil {
		return append(b, payload...)
	}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func TestWSTap(t *testing.T) {
	ping := messages.Encode(&messages.Ping{})
	key := []byte{0x12, 0x34, 0x56, 0x78}
	head := []byte("GET /_keyhole/v2/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
	before := wsFrame(2, make([]byte, 300), key) // the registration, before counting starts
	counted := [][]byte{
		wsFrame(2, ping, key),                           // 8 bytes on the wire
		wsFrame(2, ping, nil),                           // 4
		wsFrame(1, ping, nil),                           // a text frame is no Ping: 4
		wsFrame(2, []byte{messages.Version, 0x31}, key), // another type: 8
		wsFrame(2, make([]byte, 200), key),              // 2+2+4+200 = 208, payload passed over
		wsFrame(2, make([]byte, 70000), nil),            // 2+8+70000
		wsFrame(2, ping, key),                           // 8
	}
	const wantFrames, wantWire, wantPings = 7, 8 + 4 + 4 + 8 + 208 + 70010 + 8, 3
	for _, chunk := range []int{1, 3, 7, 64, 1 << 20} {
		t.Run(strconv.Itoa(chunk), func(t *testing.T) {
			tap := newWSTap()
			feed := func(b []byte) {
				for len(b) > 0 {
					n := min(chunk, len(b))
					tap.feed(b[:n])
					b = b[n:]
				}
			}
			feed(append(append([]byte(nil), head...), before...))
			tap.set(true)
			var all []byte
			for _, f := range counted {
				all = append(all, f...)
			}
			feed(all)
			frames, wire, pings := tap.counts()
			if frames != wantFrames || wire != wantWire || pings != wantPings {
				t.Errorf("%d frames, %d bytes, %d pings; want %d, %d, %d", frames, wire, pings, wantFrames, wantWire, wantPings)
			}
			tap.set(false)
			feed(wsFrame(2, ping, key))
			if f, _, _ := tap.counts(); f != wantFrames {
				t.Errorf("counted %d frames after stopping, want %d", f, wantFrames)
			}
		})
	}
}
