package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/bus/redis"
)

// S9 simulates the registry of a large fleet against a real Redis, through
// the project's own bus/redis package and without a websocket: simulated
// proxy instances, each a redis.Bus as a proxy holds one, claim registry
// entries for made-up tunnels, refresh every one of them as the holders do
// once per ping interval (here as fast as the concurrency allows, which
// scales the interval down), and look names up as request-handling
// instances do on a cache miss. It measures, at each entry count, the
// claim and lookup latency, the refresh rate, Redis's CPU time per
// operation and Redis's memory per entry, first on one redis-server and
// then on a Redis Cluster of three masters and three replicas.

// The deployments S9 measures, its modes.
const (
	modeSimServer  = "redis-server"
	modeSimCluster = "redis-cluster"
)

var simModeLabel = map[string]string{
	modeSimServer:  "one redis-server",
	modeSimCluster: "Redis Cluster, 3 masters + 3 replicas",
}

// simTTL is the TTL of the simulated entries and heartbeats: long enough
// that none expires during a run, as none does in a fleet whose holders
// refresh them. The TTL's length costs Redis nothing.
const simTTL = 10 * time.Minute

// simPhaseTimeout bounds each phase of the simulation, whatever the counts.
const simPhaseTimeout = 3 * time.Minute

// simPing is the ping interval the derived capacity figure assumes: the
// proxy's default, and so the refresh interval of each entry.
const simPing = 10 * time.Second

// simState is S9's long-lived part: the deployments, started at its first
// round and stopped with every other child at the end of the run.
type simState struct {
	started bool
	deps    []*redisDeployment
}

// close closes the harness's connections to the deployments; their
// processes stop with every other child.
func (s *simState) close() {
	for _, d := range s.deps {
		d.close()
	}
}

// s9 runs the registry simulation against each deployment.
func (h *harness) s9(ctx context.Context, round int) error {
	if !h.sim.started {
		h.sim.started = true
		if err := h.simSetup(ctx); err != nil {
			return err
		}
	}
	for _, d := range h.sim.deps {
		label := fmt.Sprintf("S9 %s, round %d/%d", simModeLabel[d.mode], round+1, h.o.rounds)
		if err := h.simOnce(ctx, label, d, round); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.rep.note("%s: stopped: %v", label, err)
			h.logf("%s: stopped: %v", label, err)
		}
	}
	return nil
}

// simSetup starts the deployments S9 can measure here, and notes why any
// is left out.
func (h *harness) simSetup(ctx context.Context) error {
	if h.o.redis == redisOff {
		h.rep.note("S9 not measured: --redis=false.")
		return nil
	}
	server, err := exec.LookPath("redis-server")
	if err != nil {
		if h.o.redis == redisOn {
			return errors.New("S9: redis-server is not on PATH")
		}
		h.rep.note("S9 not measured: redis-server is not on PATH.")
		return nil
	}
	if out, err := exec.CommandContext(ctx, server, "--version").Output(); err == nil {
		h.rep.fact("Redis (S9)", strings.TrimSpace(string(out)))
	}
	d, err := h.startSimServer(ctx, server)
	if err != nil {
		return err
	}
	h.sim.deps = append(h.sim.deps, d)
	h.rep.simModes = append(h.rep.simModes, d.mode)

	skip := func(why string) error {
		if h.o.s9Cluster == redisOn {
			return errors.New("S9 --s9-cluster: " + why)
		}
		h.rep.note("S9, Redis Cluster not measured: %s", why)
		return nil
	}
	if h.o.s9Cluster == redisOff {
		return skip("--s9-cluster=false.")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return skip("redis-cli is not on PATH.")
	}
	c, err := h.startSimCluster(ctx, server, cli)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return skip(err.Error())
	}
	// bus/redis may not know the cluster URL form (yet): ask it.
	b, err := redis.New(ctx, c.url, redis.Options{})
	if err != nil {
		c.close()
		for _, n := range c.nodes {
			n.proc.stop()
			h.procs.forget(n.proc)
		}
		return skip(fmt.Sprintf("bus/redis does not connect to %s: %v", c.url, err))
	}
	b.Close()
	h.sim.deps = append(h.sim.deps, c)
	h.rep.simModes = append(h.rep.simModes, c.mode)
	return nil
}

// simInstance is one simulated proxy instance: a bus, as a proxy holds
// one, and its instance name.
type simInstance struct {
	id string
	b  *redis.Bus
}

// simNames makes the hostnames and holders of the simulated tunnels,
// shaped as the proxy's: a 52-character label (the base32 of a SHA-256
// thumbprint), and "<instance>/<24 hex digits>" as holder (the proxy's
// newHolder: 16 of the connection's time, 8 random). Entry i belongs to
// instance i mod len(instances).
type simNames struct {
	seed      [16]byte
	instances []string
}

var simB32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func (s *simNames) sum(i int) [sha256.Size]byte {
	var b [len(s.seed) + 8]byte
	copy(b[:], s.seed[:])
	binary.BigEndian.PutUint64(b[len(s.seed):], uint64(i))
	return sha256.Sum256(b[:])
}

func (s *simNames) label(i int) string {
	sum := s.sum(i)
	return strings.ToLower(simB32.EncodeToString(sum[:]))
}

func (s *simNames) owner(i int) int { return i % len(s.instances) }

func (s *simNames) holder(i int) string {
	sum := s.sum(i)
	return s.instances[s.owner(i)] + "/" + hex.EncodeToString(sum[:12])
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// opsResult is one phase: ops operations, their latencies, the failures.
type opsResult struct {
	ops, errors int64
	firstErr    error
	elapsed     time.Duration
	hist        histogram
}

func (r *opsResult) rate() float64 {
	if r.elapsed <= 0 {
		return math.NaN()
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// runOps calls op for every i in [from, to) on conc workers, as fast as
// they go, within simPhaseTimeout.
func runOps(ctx context.Context, from, to, conc int, op func(ctx context.Context, i int) error) *opsResult {
	ctx, cancel := context.WithTimeout(ctx, simPhaseTimeout)
	defer cancel()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		res      = &opsResult{}
		wg       sync.WaitGroup
		firstErr error
	)
	next.Store(int64(from))
	start := time.Now()
	for range max(1, min(conc, to-from)) {
		wg.Go(func() {
			h := new(histogram)
			var ok, failed int64
			var ferr error
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					break
				}
				t := time.Now()
				err := op(ctx, i)
				if err != nil {
					failed++
					if ferr == nil {
						ferr = err
					}
					continue
				}
				h.record(time.Since(t))
				ok++
			}
			mu.Lock()
			res.hist.merge(h)
			res.ops += ok
			res.errors += failed
			if firstErr == nil {
				firstErr = ferr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.firstErr = firstErr
	if res.firstErr == nil && ctx.Err() != nil && int64(to-from) > res.ops+res.errors {
		res.firstErr = fmt.Errorf("phase cut short after %v: %w", simPhaseTimeout, ctx.Err())
		res.errors += int64(to-from) - res.ops - res.errors
	}
	return res
}

// The rows of S9's table, in order.
const (
	rowClaims        = "claims"
	rowClaimP50      = "claim p50"
	rowClaimP99      = "claim p99"
	rowClaimCPU      = "Redis CPU per 1,000 claims"
	rowMemory        = "Redis memory per entry"
	rowReplicaMemory = "replicas' memory per entry"
	rowRefreshes     = "refreshes"
	rowRefreshP50    = "refresh p50"
	rowRefreshP99    = "refresh p99"
	rowRefreshCPU    = "Redis CPU per 1,000 refreshes"
	rowRefreshCmd    = "of which inside the script"
	rowReplicaCPU    = "replicas' CPU per 1,000 refreshes"
	rowPipelinedCPU  = "what if pipelined: Redis CPU per 1,000 refreshes"
	rowRefreshIn     = "bytes to Redis per refresh"
	rowRefreshOut    = "bytes from Redis per refresh"
	rowRefreshRepl   = "bytes to the replicas per refresh"
	rowCapacity      = "entries one Redis core refreshes every 10 s"
	rowLookupP50     = "lookup p50 (c=1)"
	rowLookupP99     = "lookup p99 (c=1)"
	rowLookupCPU     = "Redis CPU per 1,000 lookups"

	rowInstConns    = "Redis connections per instance"
	rowInstAll      = "Redis memory per instance, connections included"
	rowInstChannel  = "Redis memory per instance channel"
	rowInstSet      = "Redis memory per instance in the instance set"
	rowInstListedOK = "instances listed by Instances"
)

// replicaRows exist only for a deployment with replicas.
var replicaRows = []string{rowReplicaMemory, rowReplicaCPU, rowRefreshRepl}

// costRows are the per-operation costs that should not grow with the
// count of entries, and rateRows the rates that should not fall; growth
// notes are made for these. Latency percentiles and the rates of the
// phases themselves are left out: on a shared 2-core machine they move
// more from one phase to the next than any count could move them.
var (
	costRows = []string{rowClaimCPU, rowMemory, rowReplicaMemory, rowRefreshCPU, rowRefreshCmd, rowReplicaCPU, rowLookupP50, rowLookupCPU}
	rateRows = []string{rowCapacity}
)

// simFig returns S9's figure for row at count entries (0: not per count).
func (r *report) simFig(row, unit string, count int) *figure {
	name := row
	if count > 0 {
		name = fmt.Sprintf("%s at %d entries", row, count)
	}
	f := r.fig("S9", name, unit)
	f.row, f.count = row, count
	return f
}

// simFleet is the simulated instances of one run against d.
type simFleet struct {
	d     *redisDeployment
	insts []*simInstance
	conc  int
}

// open gives every instance a fresh bus, subscribed to its topic, with a
// heartbeat, as a proxy starting up does; ids are kept across reopenings.
func (f *simFleet) open(ctx context.Context) error {
	f.close()
	for i, in := range f.insts {
		b, err := redis.New(ctx, f.d.url, redis.Options{})
		if err != nil {
			return fmt.Errorf("instance %d: %w", i+1, err)
		}
		in.b = b
		if _, err := b.Subscribe(ctx, bus.InstanceTopic(in.id), func([]byte) {}); err != nil {
			return fmt.Errorf("instance %d: %w", i+1, err)
		}
		if err := b.Heartbeat(ctx, in.id, simTTL); err != nil {
			return fmt.Errorf("instance %d: %w", i+1, err)
		}
	}
	return nil
}

// close closes every bus, and with them their connections to Redis.
func (f *simFleet) close() {
	for _, in := range f.insts {
		if in.b != nil {
			in.b.Close()
			in.b = nil
		}
	}
}

// warm runs n refreshes of names that do not exist (each a GET that finds
// nothing) spread over the buses: the refresh script gets loaded on every
// master and each bus opens the connections its share of the workers
// needs, so neither lands in a measured phase.
func (f *simFleet) warm(ctx context.Context, n int) error {
	res := runOps(ctx, 0, n, f.conc, func(ctx context.Context, i int) error {
		_, err := f.insts[i%len(f.insts)].b.Refresh(ctx, "warm-"+strconv.Itoa(i), "none", simTTL)
		return err
	})
	if res.errors > 0 {
		return fmt.Errorf("warm-up: %d failed; first: %v", res.errors, res.firstErr)
	}
	return nil
}

// closedSnapshot closes the fleet's buses, waits until Redis has let go
// of their connections, and takes a snapshot: what Redis holds for the
// data alone. Client buffers grow and shrink with the traffic (and INFO's
// accounting of them lags), so memory is compared only between snapshots
// taken this way.
func (f *simFleet) closedSnapshot(ctx context.Context, idle snapshot) (snapshot, error) {
	f.close()
	var s snapshot
	var why string
	err := waitFor(ctx, 10*time.Second, "Redis to drop the simulated instances' connections", nil, func() bool {
		var err error
		if s, err = f.d.snapshot(ctx); err != nil {
			why = err.Error()
			return false
		}
		for n, st := range s {
			if st.clients > idle[n].clients {
				why = fmt.Sprintf("%s has %d clients, %d when idle", n.addr, st.clients, idle[n].clients)
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, why)
	}
	if err := f.d.synced(ctx); err != nil {
		return nil, err
	}
	return f.d.snapshot(ctx)
}

// simChannels is how many extra topics one bus subscribes to, to measure
// what a channel costs Redis: enough that a client buffer coming or
// going is small beside them.
const simChannels = 64

// simOnce runs the whole simulation once against d: the instances, then
// each count of entries in turn, growing the same set.
func (h *harness) simOnce(ctx context.Context, label string, d *redisDeployment, round int) error {
	r := h.rep
	o := h.o
	set := func(row, unit string, count int, v float64) *figure {
		f := r.simFig(row, unit, count)
		r.set(f, d.mode, round, v)
		return f
	}
	if err := d.flush(ctx); err != nil {
		return err
	}
	// idle: Redis with only the harness's own connections.
	idle, err := d.quiet(ctx)
	if err != nil {
		return err
	}
	masters, replicas := d.masters(), d.replicas()
	clients := func(s nodeStats) int64 { return s.clients }
	used := func(s nodeStats) int64 { return s.usedMemory }
	data := func(s nodeStats) int64 { return s.dataMemory() }
	cpu := func(s nodeStats) float64 { return s.cpu }

	// What a channel costs: one more bus with simChannels topics.
	extra, err := redis.New(ctx, d.url, redis.Options{})
	if err != nil {
		return err
	}
	s1, err := d.quiet(ctx)
	if err == nil {
		for i := 0; i < simChannels && err == nil; i++ {
			_, err = extra.Subscribe(ctx, bus.InstanceTopic(randomHex(8)), func([]byte) {})
		}
	}
	var s2 snapshot
	if err == nil {
		s2, err = d.quiet(ctx)
	}
	extra.Close()
	if err != nil {
		return err
	}
	set(rowInstChannel, "B", 0, float64(delta(s1, s2, d.nodes, used))/simChannels).checked = false

	// The instances.
	names := &simNames{}
	rand.Read(names.seed[:])
	fl := &simFleet{d: d, conc: o.s9Concurrency}
	for range o.s9Instances {
		in := &simInstance{id: randomHex(8)}
		fl.insts = append(fl.insts, in)
		names.instances = append(names.instances, in.id)
	}
	defer fl.close()
	warmOps := 16 * o.s9Concurrency
	reopen := func() error {
		if err := fl.open(ctx); err != nil {
			return err
		}
		return fl.warm(ctx, warmOps)
	}
	if err := reopen(); err != nil {
		return err
	}
	open, err := d.quiet(ctx)
	if err != nil {
		return err
	}
	ids, err := fl.insts[0].b.Instances(ctx)
	if err != nil {
		return err
	}
	listed := 0
	for _, in := range fl.insts {
		if slices.Contains(ids, in.id) {
			listed++
		}
	}
	set(rowInstListedOK, "", 0, float64(listed))
	if listed != len(fl.insts) || len(ids) != len(fl.insts) {
		r.note("%s: Instances listed %d names, %d of the %d instances", label, len(ids), listed, len(fl.insts))
	}
	setBytes, err := d.memoryUsage(ctx, "keyhole:instances")
	if err != nil {
		return err
	}
	base, err := fl.closedSnapshot(ctx, idle)
	if err != nil {
		return err
	}
	n := float64(len(fl.insts))
	set(rowInstConns, "", 0, float64(delta(base, open, d.nodes, clients))/n)
	set(rowInstAll, "KiB", 0, float64(delta(base, open, d.nodes, used))/n/1024)
	set(rowInstSet, "B", 0, float64(setBytes)/n)
	h.logf("%s: %d instances, %.1f connections each", label, len(fl.insts), float64(delta(base, open, d.nodes, clients))/n)

	failed := func(what string, res *opsResult) {
		if res.errors > 0 {
			r.note("%s: %s: %d failed (of %d); first: %v", label, what, res.errors, res.ops+res.errors, res.firstErr)
		}
	}
	perK := func(a, b snapshot, nodes []*redisNode, ops int64) float64 {
		if ops == 0 || len(nodes) == 0 {
			return math.NaN()
		}
		// CPU seconds per 1,000 operations, in ms: µs per operation.
		return delta(a, b, nodes, cpu) * 1e6 / float64(ops)
	}
	if err := reopen(); err != nil {
		return err
	}
	prev := 0
	for _, count := range o.s9Counts {
		// Claims: the new entries, each by its owner's bus.
		before, err := d.snapshot(ctx)
		if err != nil {
			return err
		}
		res := runOps(ctx, prev, count, o.s9Concurrency, func(ctx context.Context, i int) error {
			p, err := fl.insts[names.owner(i)].b.Claim(ctx, names.label(i), names.holder(i), simTTL)
			if err == nil && p != "" {
				err = fmt.Errorf("claim of a new name replaced %q", p)
			}
			return err
		})
		failed(fmt.Sprintf("claims to %d", count), res)
		after, err := d.snapshot(ctx)
		if err != nil {
			return err
		}
		set(rowClaims, "/s", count, res.rate())
		set(rowClaimP50, "µs", count, us(res.hist.quantile(0.5)))
		set(rowClaimP99, "µs", count, us(res.hist.quantile(0.99)))
		set(rowClaimCPU, "ms", count, perK(before, after, masters, res.ops))
		last := count == o.s9Counts[len(o.s9Counts)-1] && round == 0
		var breakdown []string
		if last {
			breakdown = append(breakdown, "per claim: "+commandsPerOp(before, after, masters, res.ops))
		}
		closed, err := fl.closedSnapshot(ctx, idle)
		if err != nil {
			return err
		}
		set(rowMemory, "B", count, float64(delta(base, closed, masters, data))/float64(count))
		if len(replicas) > 0 {
			set(rowReplicaMemory, "B", count, float64(delta(base, closed, replicas, data))/float64(count))
		}
		if err := reopen(); err != nil {
			return err
		}

		// One refresh of every entry by its holder's bus, with a heartbeat
		// from each instance: what a ping interval brings.
		for _, in := range fl.insts {
			if err := in.b.Heartbeat(ctx, in.id, simTTL); err != nil {
				return err
			}
		}
		before, err = d.snapshot(ctx)
		if err != nil {
			return err
		}
		res = runOps(ctx, 0, count, o.s9Concurrency, func(ctx context.Context, i int) error {
			ok, err := fl.insts[names.owner(i)].b.Refresh(ctx, names.label(i), names.holder(i), simTTL)
			if err == nil && !ok {
				err = fmt.Errorf("refresh of %s: not held", names.label(i))
			}
			return err
		})
		failed(fmt.Sprintf("refreshes at %d", count), res)
		if err := d.synced(ctx); err != nil {
			return err
		}
		after, err = d.snapshot(ctx)
		if err != nil {
			return err
		}
		set(rowRefreshes, "/s", count, res.rate())
		set(rowRefreshP50, "µs", count, us(res.hist.quantile(0.5)))
		set(rowRefreshP99, "µs", count, us(res.hist.quantile(0.99)))
		refreshCPU := perK(before, after, masters, res.ops)
		set(rowRefreshCPU, "ms", count, refreshCPU)
		set(rowRefreshCmd, "ms", count, usecPerOp(before, after, masters, res.ops, "evalsha", "eval"))
		if last {
			breakdown = append(breakdown, "per refresh: "+commandsPerOp(before, after, masters, res.ops))
		}
		if len(replicas) > 0 {
			set(rowReplicaCPU, "ms", count, perK(before, after, replicas, res.ops))
		}
		set(rowCapacity, "", count, capacity(refreshCPU, simPing))
		refBefore, refAfter, refOps := before, after, res.ops
		// What if the refreshes went pipelined: the same script and
		// entries, by go-redis directly (bus/redis has no batch refresh),
		// simPipeline to a round trip.
		before, err = d.snapshot(ctx)
		if err != nil {
			return err
		}
		pres := pipelinedRefresh(ctx, d, names, count)
		failed(fmt.Sprintf("pipelined refreshes at %d", count), pres)
		after2, err := d.snapshot(ctx)
		if err != nil {
			return err
		}
		set(rowPipelinedCPU, "ms", count, perK(before, after2, masters, pres.ops))
		netIn := func(s nodeStats) int64 { return s.netIn }
		netOut := func(s nodeStats) int64 { return s.netOut }
		replOut := func(s nodeStats) int64 { return s.replOut }
		perOp := func(v int64) float64 { return float64(v) / float64(max(refOps, 1)) }
		// The harness's own INFO between the two snapshots counts too:
		// a few kB, nothing beside thousands of refreshes.
		set(rowRefreshIn, "B", count, perOp(delta(refBefore, refAfter, masters, netIn)))
		set(rowRefreshOut, "B", count, perOp(delta(refBefore, refAfter, masters, netOut)))
		if len(replicas) > 0 {
			set(rowRefreshRepl, "B", count, perOp(delta(refBefore, refAfter, masters, replOut)))
		}

		// Lookups of random names, one at a time: the latency a request
		// sees when the instance's cache misses.
		before, err = d.snapshot(ctx)
		if err != nil {
			return err
		}
		res = runOps(ctx, 0, o.s9Lookups, 1, func(ctx context.Context, _ int) error {
			i := mrand.IntN(count)
			got, err := fl.insts[mrand.IntN(len(fl.insts))].b.Lookup(ctx, names.label(i))
			if err == nil && got != names.holder(i) {
				err = fmt.Errorf("lookup of %s: %q, want %q", names.label(i), got, names.holder(i))
			}
			return err
		})
		failed(fmt.Sprintf("lookups at %d", count), res)
		after, err = d.snapshot(ctx)
		if err != nil {
			return err
		}
		set(rowLookupP50, "µs", count, us(res.hist.quantile(0.5)))
		set(rowLookupP99, "µs", count, us(res.hist.quantile(0.99)))
		set(rowLookupCPU, "ms", count, perK(before, after, masters, res.ops))
		if last {
			breakdown = append(breakdown, "per lookup: "+commandsPerOp(before, after, masters, res.ops))
			r.note("S9, %s, %d entries: the commands Redis ran (INFO commandstats, a script's own calls included, the harness's left out) %s.",
				simModeLabel[d.mode], count, strings.Join(breakdown, "; "))
		}
		h.logf("%s: %d entries: %.0f claims/s, %.0f refreshes/s at %.1f µs Redis CPU each, %.0f B per entry",
			label, count, r.simFig(rowClaims, "/s", count).get(d.mode, round), r.simFig(rowRefreshes, "/s", count).get(d.mode, round),
			refreshCPU, r.simFig(rowMemory, "B", count).get(d.mode, round))
		prev = count
	}
	return nil
}

// capacity is how many entries one Redis core can refresh once per
// interval, when each refresh costs cpuMicros of its CPU time.
func capacity(cpuMicros float64, interval time.Duration) float64 {
	if !(cpuMicros > 0) {
		return math.NaN()
	}
	return float64(interval/time.Microsecond) / cpuMicros
}

// quiet takes a snapshot once the number of connections has held still
// for a moment: a bus dials some of its connections in the background.
func (d *redisDeployment) quiet(ctx context.Context) (snapshot, error) {
	const still = 200 * time.Millisecond
	var (
		last     snapshot
		lastN    int64 = -1
		since    time.Time
		snapErr  error
		deadline = time.Now().Add(5 * time.Second)
	)
	for {
		s, err := d.snapshot(ctx)
		if err != nil {
			snapErr = err
			break
		}
		var n int64
		for _, st := range s {
			n += st.clients
		}
		now := time.Now()
		if n != lastN {
			lastN, since = n, now
		}
		last = s
		if now.Sub(since) >= still || now.After(deadline) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, snapErr
}

// growth is the ratio of the last measured value of a row to its first,
// over increasing counts: how a cost changed from the smallest count to
// the largest. ok is false with fewer than two values.
func growth(vals []float64) (first, last int, ratio float64, ok bool) {
	first, last = -1, -1
	for i, v := range vals {
		if math.IsNaN(v) || v <= 0 {
			continue
		}
		if first < 0 {
			first = i
		}
		last = i
	}
	if first < 0 || first == last {
		return 0, 0, math.NaN(), false
	}
	return first, last, vals[last] / vals[first], true
}

// sublinear reports whether a row that grew by ratio from the smallest to
// the largest count still scales linearly or better: a per-operation cost
// must not rise (within the machine's noise, tolerance), a rate must not
// fall.
func sublinear(row string, ratio, tolerance float64) bool {
	if slices.Contains(rateRows, row) {
		return ratio >= 1/tolerance
	}
	return ratio <= tolerance
}

// growthTolerance is how much a per-operation cost may change from the
// smallest count to the largest and still count as flat: latencies and
// CPU time on a shared 2-core machine move by that much between runs.
const growthTolerance = 1.5

// simGrowthNotes notes every row that does not scale linearly (median over
// the rounds at each count).
func (r *report) simGrowthNotes() {
	for _, m := range r.simModes {
		for _, row := range append(slices.Clone(costRows), rateRows...) {
			vals := make([]float64, len(r.o.s9Counts))
			for i, c := range r.o.s9Counts {
				vals[i] = math.NaN()
				if f := r.findSim(row, c); f != nil {
					vals[i] = summarize(f.vals[m]).med
				}
			}
			first, last, ratio, ok := growth(vals)
			if ok && !sublinear(row, ratio, growthTolerance) {
				r.note("S9, %s: %s goes from %s at %d entries to %s at %d (×%s): not linear in the count.",
					simModeLabel[m], row, num(vals[first]), r.o.s9Counts[first], num(vals[last]), r.o.s9Counts[last], ratio2(ratio))
			}
		}
	}
}

func ratio2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// findSim returns S9's figure for row at count, or nil.
func (r *report) findSim(row string, count int) *figure {
	for _, f := range r.figs {
		if f.scenario == "S9" && f.row == row && f.count == count {
			return f
		}
	}
	return nil
}

// simMarkdown renders S9: per deployment, one row per figure and one
// column per count, then the per-instance figures.
func (r *report) simMarkdown(b *strings.Builder) {
	var rows, instRows []string
	units := map[string]string{}
	for _, f := range r.figs {
		if f.scenario != "S9" {
			continue
		}
		units[f.row] = f.unit
		switch {
		case f.count == 0 && !slices.Contains(instRows, f.row):
			instRows = append(instRows, f.row)
		case f.count > 0 && !slices.Contains(rows, f.row):
			rows = append(rows, f.row)
		}
	}
	name := func(row string) string {
		if u := units[row]; u != "" {
			return row + " (" + u + ")"
		}
		return row
	}
	cell := func(f *figure, m string) string {
		if f == nil {
			return "–"
		}
		s := summarize(f.vals[m])
		if s.n > 1 {
			return fmt.Sprintf("%s (%s–%s)", num(s.med), num(s.min), num(s.max))
		}
		return num(s.med)
	}
	sep := ""
	for _, m := range r.simModes {
		fmt.Fprintf(b, "%s### %s\n\n| figure |", sep, simModeLabel[m])
		sep = "\n"
		for _, c := range r.o.s9Counts {
			fmt.Fprintf(b, " %s entries |", thousands(c))
		}
		b.WriteString(" largest / smallest |\n|---|")
		for range r.o.s9Counts {
			b.WriteString("--:|")
		}
		b.WriteString("--:|\n")
		for _, row := range rows {
			vals := make([]float64, len(r.o.s9Counts))
			line := "| " + name(row) + " |"
			seen := false
			for i, c := range r.o.s9Counts {
				f := r.findSim(row, c)
				vals[i] = math.NaN()
				if f != nil {
					if _, ok := f.vals[m]; ok {
						seen = true
						vals[i] = summarize(f.vals[m]).med
					}
				}
				line += " " + cell(f, m) + " |"
			}
			if !seen {
				continue
			}
			_, _, g, _ := growth(vals)
			b.WriteString(line + " " + ratio(g) + "× |\n")
		}
	}
	if len(instRows) > 0 {
		b.WriteString(sep + "### Per simulated proxy instance\n\n| figure |")
		for _, m := range r.simModes {
			fmt.Fprintf(b, " %s |", simModeLabel[m])
		}
		b.WriteString("\n|---|")
		for range r.simModes {
			b.WriteString("--:|")
		}
		b.WriteString("\n")
		for _, row := range instRows {
			fmt.Fprintf(b, "| %s |", name(row))
			for _, m := range r.simModes {
				fmt.Fprintf(b, " %s |", cell(r.findSim(row, 0), m))
			}
			b.WriteString("\n")
		}
	}
}

// thousands renders n with commas: 100,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// simPipeline is the depth of the what-if pipelined refreshes, and
// simPipelines how many pipelines are in flight at once.
const (
	simPipeline  = 64
	simPipelines = 4
)

// refreshLua is bus/redis's refresh script, copied for the what-if: the
// registry's own Refresh sends one EVALSHA per round trip.
const refreshLua = `
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`

// pipelinedRefresh refreshes entries [0, count) as bus/redis's Refresh
// does, but simPipeline to a round trip: what an instance that refreshed
// the entries due in one scheduler tick together would cost Redis.
func pipelinedRefresh(ctx context.Context, d *redisDeployment, names *simNames, count int) *opsResult {
	var c goredis.UniversalClient
	if d.mode == modeSimCluster {
		addrs := make([]string, len(d.nodes))
		for i, n := range d.nodes {
			addrs[i] = n.addr
		}
		c = goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, PoolSize: simPipelines,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	} else {
		c = goredis.NewClient(&goredis.Options{Addr: d.nodes[0].addr, PoolSize: simPipelines,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	}
	defer c.Close()
	script := goredis.NewScript(refreshLua)
	ms := strconv.FormatInt(simTTL.Milliseconds(), 10)
	// The script is loaded on every master already; EVALSHA is what the
	// bus sends too.
	batches := (count + simPipeline - 1) / simPipeline
	var done, failed atomic.Int64
	res := runOps(ctx, 0, batches, simPipelines, func(ctx context.Context, b int) (err error) {
		from, to := b*simPipeline, min((b+1)*simPipeline, count)
		defer func() {
			if err != nil {
				failed.Add(int64(to - from))
			} else {
				done.Add(int64(to - from))
			}
		}()
		cmds := make([]*goredis.Cmd, 0, to-from)
		_, err = c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := from; i < to; i++ {
				cmds = append(cmds, script.EvalSha(ctx, p, []string{"keyhole:reg:" + names.label(i)}, names.holder(i), ms))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, cmd := range cmds {
			if n, err := cmd.Int(); err != nil || n != 1 {
				return fmt.Errorf("pipelined refresh of %s: %v, %v", names.label(from+i), n, err)
			}
		}
		return nil
	})
	// Count refreshes, not pipelines.
	res.ops, res.errors = done.Load(), failed.Load()
	return res
}
