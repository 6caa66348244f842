package main

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/client/inspect"
	"github.com/keyhole-tunnel/keyhole/messages"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

func TestPromSum(t *testing.T) {
	text := `# HELP keyhole_requests_total Public requests.
# TYPE keyhole_requests_total counter
keyhole_requests_total{code="200"} 1234
keyhole_requests_total{code="404"} 5
keyhole_requests_total{code="502",x="a\"b"} 1
keyhole_requests_total_extra 99
keyhole_connected_clients 1
keyhole_dropped_messages_total{reason="outbox_full"} 2
keyhole_dropped_messages_total{reason="client_queue_full"} 3
`
	for _, c := range []struct {
		name   string
		metric string
		match  map[string]string
		want   float64
		found  bool
	}{
		{"one labelled sample", "keyhole_requests_total", map[string]string{"code": "200"}, 1234, true},
		{"every sample of a name, not of a longer name", "keyhole_requests_total", nil, 1240, true},
		{"an escaped quote in another label", "keyhole_requests_total", map[string]string{"x": `a"b`}, 1, true},
		{"unlabelled", "keyhole_connected_clients", nil, 1, true},
		{"summed over reasons", "keyhole_dropped_messages_total", nil, 5, true},
		{"no such label value", "keyhole_requests_total", map[string]string{"code": "503"}, 0, false},
		{"no such metric", "keyhole_bus_unrouted_messages_total", nil, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, ok, err := promSum(text, c.metric, c.match)
			if err != nil || v != c.want || ok != c.found {
				t.Errorf("promSum(%s, %v) = %v, %v, %v; want %v, %v", c.metric, c.match, v, ok, err, c.want, c.found)
			}
		})
	}
	for _, bad := range []string{`m{code="200" 1`, `m{code=200} 1`, `m{code="200"}`, `m x`} {
		if _, _, err := promSum(bad, "m", nil); err == nil {
			t.Errorf("promSum(%q) accepted a malformed line", bad)
		}
	}
}

// clientListReply is CLIENT LIST as Redis 7.0 answers it: the harness's
// own connection, two proxies' pub/sub connections, and a pool
// connection.
const clientListReply = "id=3 addr=127.0.0.1:40000 laddr=127.0.0.1:6379 fd=8 name= age=10 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=26 qbuf-free=20448 argv-mem=10 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=client|list user=default redir=-1 resp=2\n" +
	"id=5 addr=127.0.0.1:40002 laddr=127.0.0.1:6379 fd=9 name= age=10 idle=1 flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=2 omem=180224 tot-mem=200000 events=rw cmd=subscribe user=default redir=-1 resp=2\n" +
	"id=7 addr=127.0.0.1:40004 laddr=127.0.0.1:6379 fd=10 name= age=10 idle=1 flags=P db=0 sub=0 psub=0 ssub=1 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=20000 events=r cmd=ping user=default redir=-1 resp=2\n" +
	"id=9 addr=127.0.0.1:40006 laddr=127.0.0.1:6379 fd=11 name= age=1 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=20000 events=r cmd=publish user=default redir=-1 resp=2\n"

func TestParseClientList(t *testing.T) {
	l, err := parseClientList(clientListReply)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 4 {
		t.Fatalf("%d entries, want 4", len(l))
	}
	if e := l[1]; e.id != 5 || e.addr != "127.0.0.1:40002" || e.sub != 1 || e.oll != 2 || e.omem != 180224 || e.cmd != "subscribe" {
		t.Errorf("entry 2 = %+v", e)
	}
	subs := subscribers(l)
	if len(subs) != 2 || subs[5].id != 5 || subs[7].ssub != 1 {
		t.Errorf("subscribers = %+v, want ids 5 and 7", subs)
	}
	for _, bad := range []string{"addr=127.0.0.1:1 sub=0", "id=x sub=0", "id=1 omem=lots"} {
		if _, err := parseClientList(bad); err == nil {
			t.Errorf("parseClientList(%q) accepted", bad)
		}
	}
}

// TestClientListFromRedis parses a real redis-server's CLIENT LIST with
// one subscriber on it, so that the parser follows what Redis writes.
func TestClientListFromRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := &harness{log: io.Discard, procs: &procSet{}, dir: t.TempDir()}
	defer h.procs.stopAll()
	n, err := h.startRedisNode(ctx, "redis-server (test)", bin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.c.Close()
	sub := goredis.NewClient(&goredis.Options{Addr: n.addr, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer sub.Close()
	ps := sub.Subscribe(ctx, "bench-test")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	s, err := n.c.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseClientList(s)
	if err != nil {
		t.Fatal(err)
	}
	subs := subscribers(l)
	if len(subs) != 1 || len(l) != 2 {
		t.Fatalf("%d connections, %d subscribers, want 2 and 1:\n%s", len(l), len(subs), s)
	}
	for _, e := range subs {
		if e.sub != 1 || e.id <= 0 || e.addr == "" {
			t.Errorf("subscriber %+v, want sub=1 with an id and an address", e)
		}
	}
	info, err := n.c.Info(ctx, "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parseInfo(info)["total_connections_received"]; !ok {
		t.Errorf("INFO stats has no total_connections_received:\n%s", info)
	}
	v, err := n.c.ConfigGet(ctx, "client-output-buffer-limit").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := pubsubLimit(v["client-output-buffer-limit"]); !strings.HasPrefix(got, "pubsub class: hard limit ") {
		t.Errorf("pubsubLimit(%q) = %q", v["client-output-buffer-limit"], got)
	}
}

func TestPubsubLimit(t *testing.T) {
	got := pubsubLimit("normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60")
	if want := "pubsub class: hard limit 33554432 B, soft 8388608 B for 60 s"; got != want {
		t.Errorf("pubsubLimit = %q, want %q", got, want)
	}
	if got := pubsubLimit("normal 0 0 0"); got != "normal 0 0 0" {
		t.Errorf("pubsubLimit without a pubsub class = %q, want it unchanged", got)
	}
}

// TestRandChecker checks that the soak's checker accepts randBody(seed)
// however it is cut, and names the first byte of anything else.
func TestRandChecker(t *testing.T) {
	const size = 200_000
	body := make([]byte, size)
	randBody(42).Read(body)
	other := make([]byte, size)
	randBody(43).Read(other)
	flipped := append([]byte(nil), body...)
	flipped[123_456] ^= 1
	for _, c := range []struct {
		name    string
		data    []byte
		chunk   int
		wrongAt int64 // -1: accepted
	}{
		{"whole", body, size, -1},
		{"odd pieces", body, 777, -1},
		{"one byte flipped", flipped, 4096, 123_456},
		{"another seed's body", other, 65536, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := newRandChecker(42)
			var err error
			for off := 0; off < len(c.data) && err == nil; off += c.chunk {
				_, err = rc.Write(c.data[off:min(off+c.chunk, len(c.data))])
			}
			switch {
			case c.wrongAt < 0 && (err != nil || rc.off != size):
				t.Errorf("checked %d bytes: %v; want all %d accepted", rc.off, err, size)
			case c.wrongAt >= 0 && (err == nil || !strings.Contains(err.Error(), "at byte "+itoa(c.wrongAt))):
				t.Errorf("error %v, want a wrong body at byte %d", err, c.wrongAt)
			}
		})
	}
	// Two streams of one seed are the same bytes: the origin and the
	// checker agree without talking.
	a, b := make([]byte, 1000), make([]byte, 1000)
	randBody(7).Read(a)
	randBody(7).Read(b)
	if string(a) != string(b) {
		t.Error("randBody is not deterministic")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestCrossRatios checks the ratios between modes: round by round, rounds
// missing in either mode left out, and the targets they are held to.
func TestCrossRatios(t *testing.T) {
	nan := math.NaN()
	r := newReport(options{rounds: 3, bulkSize: 100e6})
	r.modes = []string{modeDirect, modeMemory, modeMemoryOff, modeRedis, modeRedisOther}
	set := func(sc, name string, vals map[string][3]float64) {
		f := r.fig(sc, name, "")
		f.vsDirect = true
		for m, vs := range vals {
			for round, v := range vs {
				r.set(f, m, round, v)
			}
		}
	}
	set("S1", "c=64 throughput", map[string][3]float64{
		modeDirect:     {10000, 10000, 10000},
		modeMemory:     {1000, 1200, 1100},
		modeMemoryOff:  {1100, 1250, nan},
		modeRedis:      {800, 900, 600},
		modeRedisOther: {600, 700, 800},
	})
	set("S2", "GET 400 KiB", map[string][3]float64{
		modeDirect:     {1000, 1000, 1000},
		modeMemory:     {400, 400, 400},
		modeMemoryOff:  {500, 500, 500},
		modeRedis:      {400, 400, 400},
		modeRedisOther: {100, 300, 200},
	})
	f := r.find("S1", "c=64 throughput")
	if got := f.modeRatios(modeRedisOther, modeMemory); len(got) != 3 || got[0] != 0.6 || math.Abs(got[2]-800.0/1100) > 1e-12 {
		t.Errorf("other ÷ memory = %v, want 0.6, 0.583, 0.727", got)
	}
	if got := f.modeRatios(modeMemory, modeMemoryOff); len(got) != 2 {
		t.Errorf("capture on ÷ off = %v, want two rounds (the third has no off value)", got)
	}
	r.evaluateTargets()
	want := map[string]string{
		// 0.8, 0.75, 0.545: median 0.75.
		"c=64 req/s on the Redis bus ≥ 70% of the memory bus's, through the holding instance": "yes|0.75×",
		// 0.6, 0.583, 0.727: median 0.6.
		"c=64 req/s on the Redis bus ≥ 70% of the memory bus's, through the other instance": "**no**|0.6×",
		// 0.25, 0.75, 0.5: median 0.5, met at ≥ 0.5.
		"400 KiB download through the other instance ≥ 50% of through the holding one": "yes|0.5×",
		// 1000/1100, 1200/1250: median of two = 0.935.
		"c=64 req/s with the inspector capturing ≥ 90% of --inspect off, same proxy":       "yes|0.935×",
		"400 KiB download with the inspector capturing ≥ 90% of --inspect off, same proxy": "**no**|0.8×",
	}
	seen := map[string]bool{}
	for _, row := range r.targets {
		w, ok := want[row.target]
		if !ok {
			continue
		}
		seen[row.target] = true
		if got := row.met + "|" + row.measured; got != w {
			t.Errorf("%q: %q, want %q", row.target, got, w)
		}
	}
	for target := range want {
		if !seen[target] {
			t.Errorf("no row for %q", target)
		}
	}
	for _, row := range r.targets {
		if strings.Contains(row.target, "100 MB download through the other instance") {
			t.Errorf("a row for S7, which has no figure: %+v", row)
		}
		if row.mode == modeLabel[modeMemoryOff] {
			t.Errorf("a target row for the --inspect off baseline: %+v", row)
		}
	}
	md := r.markdown()
	for _, s := range []string{
		"## Across buses, instances and capture",
		"| S1 | c=64 throughput | tunnel, Redis bus, other instance ÷ tunnel, memory bus | 0.6 | 0.583 | 0.727 | 0.6, 0.583, 0.727 |",
		"| S2 | GET 400 KiB | tunnel, memory bus ÷ tunnel, memory bus, --inspect off | 0.8 | 0.8 | 0.8 | 0.8, 0.8, 0.8 |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q:\n%s", s, md)
		}
	}
}

// TestSoakVerdict renders S10's outcome: exact and kept, and each way it
// can fail.
func TestSoakVerdict(t *testing.T) {
	sub := clientEntry{id: 5, addr: "127.0.0.1:40002", sub: 1}
	counts := func(failed bool) []*soakCounts {
		c := &soakCounts{requests: 10, ok: 10, down: 10240, status: map[int]int64{}}
		if failed {
			c.requests, c.status[502] = 12, 1
			c.wrong = 1
			c.examples = []string{"GET 1 KiB seed 9: wrong body"}
		}
		return []*soakCounts{c}
	}
	for _, c := range []struct {
		name    string
		failed  bool
		redis   soakRedis
		wantMD  []string
		wantBad []string
	}{
		{name: "exact and kept", redis: soakRedis{before: map[int64]clientEntry{5: sub}, after: map[int64]clientEntry{5: sub}, samples: 30},
			wantMD: []string{"| GET 1 KiB (8 workers) | 10 | 10 | 0 | 0 | 0 |", "no subscriber was disconnected", "| subscriber connections", "none disconnected"}},
		{name: "wrong answers", failed: true, redis: soakRedis{before: map[int64]clientEntry{5: sub}, after: map[int64]clientEntry{5: sub}, samples: 30},
			wantMD: []string{"| GET 1 KiB (8 workers) | 12 | 10 | 1× 502 | 1 | 0 |", "**S10 failed:**"}, wantBad: []string{"2 of 12 responses were not exact"}},
		{name: "subscriber gone", redis: soakRedis{before: map[int64]clientEntry{5: sub}, after: map[int64]clientEntry{}, gone: map[int64]string{5: "2.5 s into the soak"}, samples: 30},
			wantMD: []string{"**id 5 gone 2.5 s into the soak**", "**S10 failed:**"}, wantBad: []string{"subscriber connection id 5 (127.0.0.1:40002) gone 2.5 s into the soak"}},
		{name: "output buffer disconnections counted", redis: soakRedis{before: map[int64]clientEntry{5: sub}, after: map[int64]clientEntry{5: sub}, haveOBL: true, obl0: 1, obl1: 2, samples: 30},
			wantMD: []string{"| INFO stats client_output_buffer_limit_disconnections | 1 | 2 | +1 |"}, wantBad: []string{"client_output_buffer_limit_disconnections rose from 1 to 2"}},
		{name: "Redis logged a closed client", redis: soakRedis{before: map[int64]clientEntry{5: sub}, after: map[int64]clientEntry{5: sub}, logLines: 1, lastLog: "Client id=5 scheduled to be closed ASAP for overcoming of output buffer limits.", samples: 30},
			wantBad: []string{"redis-server logged 1 client(s) closed for their output buffer"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &soakResult{kinds: soakKinds(false)[:1], counts: counts(c.failed), redis: c.redis, duration: time.Second}
			// What s10 does with the outcome.
			if tot := s.total(); tot.failed() > 0 {
				s.problems = append(s.problems, itoa(tot.failed())+" of "+itoa(tot.requests)+" responses were not exact")
			}
			s.problems = append(s.problems, s.redis.disconnected()...)
			var b strings.Builder
			s.markdown(&b)
			md := b.String()
			for _, w := range c.wantMD {
				if !strings.Contains(md, w) {
					t.Errorf("markdown lacks %q:\n%s", w, md)
				}
			}
			if s.ok() != (len(c.wantBad) == 0) {
				t.Errorf("ok() = %v with problems %q", s.ok(), s.problems)
			}
			for _, w := range c.wantBad {
				if !strings.Contains(strings.Join(s.problems, "; "), w) {
					t.Errorf("problems %q lack %q", s.problems, w)
				}
			}
			if sum := s.summary(); (len(c.redis.disconnected()) == 0) != strings.Contains(sum, "no subscriber disconnected") {
				t.Errorf("summary %q", sum)
			}
		})
	}
}

func TestRedisLogWatch(t *testing.T) {
	var w redisLogWatch
	for _, l := range []string{
		"1:M 01 Dec 2025 10:00:00.000 * Ready to accept connections tcp",
		"1:M 01 Dec 2025 10:00:01.000 # Client id=12 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=9 name= age=3 idle=0 flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=900 omem=34000000 tot-mem=34001000 events=rw cmd=subscribe user=default redir=-1 resp=2 scheduled to be closed ASAP for overcoming of output buffer limits.",
	} {
		w.line(l)
	}
	if n, last := w.seen(); n != 1 || !strings.Contains(last, "id=12") {
		t.Errorf("seen() = %d, %q; want the one closed client", n, last)
	}
	var none *redisLogWatch
	if n, _ := none.seen(); n != 0 {
		t.Errorf("a nil watch saw %d", n)
	}
}

func TestS10Options(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want time.Duration // 0: an error
	}{
		{"default a minute", nil, time.Minute},
		{"quick a few seconds", []string{"--quick"}, 3 * time.Second},
		{"explicit wins over quick", []string{"--quick", "--s10-duration", "10s"}, 10 * time.Second},
		{"too short", []string{"--s10-duration", "100ms"}, 0},
		{"too long", []string{"--s10-duration", "2h"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseOptions(c.args, io.Discard)
			if c.want == 0 {
				if err == nil {
					t.Fatalf("parseOptions(%q) accepted", c.args)
				}
				return
			}
			if err != nil || o.s10Duration != c.want || !o.scenarios["S10"] {
				t.Errorf("parseOptions(%q): %v, s10Duration %v, S10 selected %v; want %v", c.args, err, o.s10Duration, o.scenarios["S10"], c.want)
			}
		})
	}
}

// TestCheckCapture reads a real inspector's /api/status: the harness's
// check must see capture on, the exchanges kept and whose tunnel it is.
func TestCheckCapture(t *testing.T) {
	const host = "abc.localhost:8080"
	ctx := context.Background()
	serve := func(t *testing.T, o inspect.Options) (*inspect.Store, string) {
		store := inspect.New(o)
		store.Registered("http://" + host)
		srv := httptest.NewServer(store.Handler(inspect.HandlerOptions{}))
		t.Cleanup(srv.Close)
		return store, strings.TrimPrefix(srv.URL, "http://")
	}
	t.Run("capturing", func(t *testing.T) {
		store, addr := serve(t, inspect.Options{})
		if _, err := checkCapture(ctx, addr, host); err == nil || !strings.Contains(err.Error(), "0 exchanges") {
			t.Errorf("before any exchange: %v, want an error saying none is kept", err)
		}
		store.BeginHTTP(messages.ID{1}, "GET", "/small", host, nil).End(200, false)
		msg, err := checkCapture(ctx, addr, host)
		if err != nil || !strings.HasPrefix(msg, "1 exchanges kept") {
			t.Errorf("checkCapture = %q, %v; want 1 exchange kept", msg, err)
		}
	})
	t.Run("capture off", func(t *testing.T) {
		store, addr := serve(t, inspect.Options{Budget: -1})
		store.BeginHTTP(messages.ID{1}, "GET", "/small", host, nil).End(200, false)
		if _, err := checkCapture(ctx, addr, host); err == nil || !strings.Contains(err.Error(), "capture on false") {
			t.Errorf("checkCapture = %v, want capture off reported", err)
		}
	})
	t.Run("another tunnel's inspector", func(t *testing.T) {
		store, addr := serve(t, inspect.Options{})
		store.BeginHTTP(messages.ID{1}, "GET", "/small", host, nil).End(200, false)
		if _, err := checkCapture(ctx, addr, "other.localhost:8080"); !errors.Is(err, errNotOurs) {
			t.Errorf("checkCapture = %v, want %v", err, errNotOurs)
		}
	})
}
