package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// redisNode is one redis-server the registry simulation started, with a
// connection of the harness's own for INFO, FLUSHALL and ROLE.
type redisNode struct {
	addr    string
	replica bool
	proc    *proc
	c       *goredis.Client
}

// redisDeployment is what the simulation measures against: one server, or
// a cluster of masters and replicas.
type redisDeployment struct {
	mode  string // modeSimServer or modeSimCluster
	url   string // for redis.New
	nodes []*redisNode
}

func (d *redisDeployment) masters() []*redisNode  { return d.role(false) }
func (d *redisDeployment) replicas() []*redisNode { return d.role(true) }

func (d *redisDeployment) role(replica bool) []*redisNode {
	var out []*redisNode
	for _, n := range d.nodes {
		if n.replica == replica {
			out = append(out, n)
		}
	}
	return out
}

func (d *redisDeployment) close() {
	for _, n := range d.nodes {
		if n.c != nil {
			n.c.Close()
		}
	}
}

// newNodeClient is a plain go-redis client for one node, used for nothing
// but the harness's own commands.
func newNodeClient(addr string) *goredis.Client {
	return goredis.NewClient(&goredis.Options{
		Addr: addr,
		// One connection: the harness's commands are few and in turn,
		// and every connection costs Redis memory the measurement sees.
		PoolSize:                 1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// startRedisNode starts a redis-server on a free port of 127.0.0.1 that
// keeps nothing on disk, with extra arguments, and waits until it answers
// PING. It retries with other ports when the first ones were taken.
func (h *harness) startRedisNode(ctx context.Context, name, bin string, extra func(port int, dir string) []string) (*redisNode, error) {
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(h.dir, "redis-"+strconv.Itoa(port))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
		if extra != nil {
			args = append(args, extra(port, dir)...)
		}
		p, err := h.procs.start(name, bin, args, nil)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if last = waitFor(ctx, 10*time.Second, name, []*proc{p}, func() bool { return redisPing(addr) }); last == nil {
			return &redisNode{addr: addr, proc: p, c: newNodeClient(addr)}, nil
		}
		p.stop()
		h.procs.forget(p)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("%s: %w", name, last)
}

// startSimServer starts the single redis-server of the simulation: its own,
// not the tunnels', so that nothing else runs commands on it.
func (h *harness) startSimServer(ctx context.Context, bin string) (*redisDeployment, error) {
	n, err := h.startRedisNode(ctx, "redis-server (S9)", bin, nil)
	if err != nil {
		return nil, err
	}
	h.logf("S9: redis-server on %s (pid %d)", n.addr, n.proc.pid)
	return &redisDeployment{mode: modeSimServer, url: "redis://" + n.addr + "/0", nodes: []*redisNode{n}}, nil
}

// clusterNodes and clusterReplicas shape the simulated cluster: three
// masters with one replica each, the smallest cluster Redis accepts with
// replicas.
const (
	clusterNodes    = 6
	clusterReplicas = 1
)

// startSimCluster starts six redis-servers in cluster mode, joins them with
// redis-cli --cluster create into three masters with a replica each, and
// waits until every node sees the cluster whole and every replica is in
// sync. procs stops them at the end of the run like every other child.
func (h *harness) startSimCluster(ctx context.Context, server, cli string) (*redisDeployment, error) {
	start := time.Now()
	d := &redisDeployment{mode: modeSimCluster}
	fail := func(err error) (*redisDeployment, error) {
		for _, n := range d.nodes {
			n.proc.stop()
			h.procs.forget(n.proc)
		}
		d.close()
		return nil, err
	}
	for i := range clusterNodes {
		n, err := h.startRedisNode(ctx, fmt.Sprintf("redis cluster node %d (S9)", i+1), server, func(port int, dir string) []string {
			// The cluster bus port is chosen free rather than left at
			// port+10000, which nobody checked.
			busPort, err := freePort()
			if err != nil {
				busPort = port + 10000
			}
			return []string{"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(busPort),
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--cluster-node-timeout", "5000",
				// A replica's first synchronisation starts at once rather
				// than after the default 5 s wait for other replicas.
				"--repl-diskless-sync-delay", "0"}
		})
		if err != nil {
			return fail(err)
		}
		d.nodes = append(d.nodes, n)
	}
	args := []string{"--cluster", "create"}
	addrs := make([]string, len(d.nodes))
	for i, n := range d.nodes {
		addrs[i] = n.addr
	}
	args = append(args, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(clusterReplicas), "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("redis-cli --cluster create: %v\n%s", err, indent(string(out), 2048)))
	}
	var why string
	err := waitFor(cctx, 30*time.Second, "the Redis Cluster to form", nil, func() bool {
		why = d.formed(cctx)
		return why == ""
	})
	if err != nil {
		return fail(fmt.Errorf("%w: %s", err, why))
	}
	d.url = "redis+cluster://" + strings.Join(addrs, ",") + "/"
	h.logf("S9: Redis Cluster of %d masters and %d replicas formed in %v", len(d.masters()), len(d.replicas()), time.Since(start).Round(time.Millisecond))
	return d, nil
}

// formed returns "" once every node reports the cluster ok with all its
// nodes and slots, and every replica's link to its master is up; else what
// is still missing. It also records each node's role.
func (d *redisDeployment) formed(ctx context.Context) string {
	for _, n := range d.nodes {
		ci, err := n.c.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Sprintf("%s: CLUSTER INFO: %v", n.addr, err)
		}
		f := parseInfo(ci)
		if f["cluster_state"] != "ok" || f["cluster_slots_ok"] != "16384" || f["cluster_known_nodes"] != strconv.Itoa(len(d.nodes)) {
			return fmt.Sprintf("%s: cluster_state %s, %s slots ok, %s nodes known", n.addr, f["cluster_state"], f["cluster_slots_ok"], f["cluster_known_nodes"])
		}
		ri, err := n.c.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Sprintf("%s: INFO replication: %v", n.addr, err)
		}
		r := parseInfo(ri)
		n.replica = r["role"] == "slave"
		if n.replica && r["master_link_status"] != "up" {
			return fmt.Sprintf("%s: replica link %s", n.addr, r["master_link_status"])
		}
	}
	if m := len(d.masters()); m != clusterNodes/(1+clusterReplicas) {
		return fmt.Sprintf("%d masters", m)
	}
	return ""
}

// parseInfo reads the field:value lines of an INFO (or CLUSTER INFO) reply;
// section headers and blank lines are skipped.
func parseInfo(s string) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// nodeStats is what one INFO memory, cpu, clients and replication says of
// a node.
type nodeStats struct {
	usedMemory    int64   // used_memory
	replBuffers   int64   // mem_total_replication_buffers: the backlog, fills up to its size
	cpu           float64 // used_cpu_sys + used_cpu_user, seconds
	clients       int64   // connected_clients
	netIn, netOut int64   // total_net_input_bytes, total_net_output_bytes: clients' traffic
	replOut       int64   // total_net_repl_output_bytes: to the replicas
	replOffset    int64   // master_repl_offset (a replica's: what it has applied)
	replicaOffset []int64 // on a master: each replica's acknowledged offset
	// calls and usec are INFO commandstats: each command's calls and the
	// time spent inside it, by name.
	calls, usec map[string]int64
}

// dataMemory is what Redis holds but the replication buffer, which fills
// up to its fixed size (repl-backlog-size, 1 MiB) with the write traffic,
// whatever the count of keys.
func (s nodeStats) dataMemory() int64 { return s.usedMemory - s.replBuffers }

func parseStats(info string) (nodeStats, error) {
	f := parseInfo(info)
	var s nodeStats
	var errs []error
	num := func(k string) int64 {
		v, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("INFO %s: %q", k, f[k]))
		}
		return v
	}
	flt := func(k string) float64 {
		v, err := strconv.ParseFloat(f[k], 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("INFO %s: %q", k, f[k]))
		}
		return v
	}
	s.usedMemory = num("used_memory")
	s.replBuffers = num("mem_total_replication_buffers")
	s.cpu = flt("used_cpu_sys") + flt("used_cpu_user")
	s.clients = num("connected_clients")
	s.netIn, s.netOut = num("total_net_input_bytes"), num("total_net_output_bytes")
	s.replOut = num("total_net_repl_output_bytes")
	s.replOffset = num("master_repl_offset")
	// slave0:ip=127.0.0.1,port=1234,state=online,offset=5678,lag=0
	for i := 0; ; i++ {
		v, ok := f["slave"+strconv.Itoa(i)]
		if !ok {
			break
		}
		var off int64 = -1
		for kv := range strings.SplitSeq(v, ",") {
			if o, ok := strings.CutPrefix(kv, "offset="); ok {
				off, _ = strconv.ParseInt(o, 10, 64)
			}
		}
		s.replicaOffset = append(s.replicaOffset, off)
	}
	s.calls, s.usec = map[string]int64{}, map[string]int64{}
	// cmdstat_get:calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0
	for k, v := range f {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		for kv := range strings.SplitSeq(v, ",") {
			key, val, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseInt(val, 10, 64)
			switch {
			case key != "calls" && key != "usec":
			case err != nil:
				errs = append(errs, fmt.Errorf("INFO %s: %q", k, v))
			case key == "calls":
				s.calls[name] = n
			default:
				s.usec[name] = n
			}
		}
	}
	return s, errors.Join(errs...)
}

func (n *redisNode) stats(ctx context.Context) (nodeStats, error) {
	info, err := n.c.Info(ctx, "memory", "cpu", "clients", "replication", "stats", "commandstats").Result()
	if err != nil {
		return nodeStats{}, fmt.Errorf("%s: INFO: %w", n.addr, err)
	}
	s, err := parseStats(info)
	if err != nil {
		return s, fmt.Errorf("%s: %w", n.addr, err)
	}
	return s, nil
}

// snapshot is every node's stats at one moment.
type snapshot map[*redisNode]nodeStats

func (d *redisDeployment) snapshot(ctx context.Context) (snapshot, error) {
	s := snapshot{}
	for _, n := range d.nodes {
		st, err := n.stats(ctx)
		if err != nil {
			return nil, err
		}
		s[n] = st
	}
	return s, nil
}

// delta sums, over the nodes of one role, what f says changed from a to b.
func delta[T int64 | float64](a, b snapshot, nodes []*redisNode, f func(nodeStats) T) T {
	var sum T
	for _, n := range nodes {
		sum += f(b[n]) - f(a[n])
	}
	return sum
}

// synced waits until every replica has applied all its master sent, so a
// snapshot counts the replicas' copies and CPU in full.
func (d *redisDeployment) synced(ctx context.Context) error {
	if len(d.replicas()) == 0 {
		return nil
	}
	var why string
	err := waitFor(ctx, 10*time.Second, "the replicas to catch up", nil, func() bool {
		why = ""
		for _, m := range d.masters() {
			st, err := m.stats(ctx)
			if err != nil {
				why = err.Error()
				return false
			}
			if len(st.replicaOffset) == 0 {
				why = m.addr + " lists no replica"
				return false
			}
			for _, off := range st.replicaOffset {
				if off != st.replOffset {
					why = fmt.Sprintf("%s at offset %d, a replica at %d", m.addr, st.replOffset, off)
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w: %s", err, why)
	}
	return nil
}

// flush empties every master (replicas follow) and waits for the replicas.
func (d *redisDeployment) flush(ctx context.Context) error {
	for _, n := range d.masters() {
		if err := n.c.FlushAll(ctx).Err(); err != nil {
			return fmt.Errorf("%s: FLUSHALL: %w", n.addr, err)
		}
	}
	return d.synced(ctx)
}

// memoryUsage is MEMORY USAGE of key on the master that holds it.
func (d *redisDeployment) memoryUsage(ctx context.Context, key string) (int64, error) {
	for _, n := range d.masters() {
		v, err := n.c.MemoryUsage(ctx, key, 0).Result()
		switch {
		case err == nil:
			return v, nil
		case errors.Is(err, goredis.Nil):
			continue // not here
		case strings.HasPrefix(err.Error(), "MOVED"):
			continue // a cluster node that does not own the key's slot
		default:
			return 0, fmt.Errorf("%s: MEMORY USAGE %s: %w", n.addr, key, err)
		}
	}
	return 0, fmt.Errorf("MEMORY USAGE %s: no master holds it", key)
}

// harnessCommands are the commands the harness itself sends to the nodes;
// the per-operation breakdown leaves them out.
var harnessCommands = map[string]bool{"info": true, "memory|usage": true, "flushall": true, "cluster|info": true}

// commandsPerOp says which commands Redis ran per operation between a and
// b on nodes, as "evalsha 1.00, get 1.00": commands a script runs count
// too. Commands run less than once per 100 operations are left out.
func commandsPerOp(a, b snapshot, nodes []*redisNode, ops int64) string {
	if ops <= 0 {
		return "no operation"
	}
	calls := map[string]int64{}
	for _, n := range nodes {
		for name, c := range b[n].calls {
			if !harnessCommands[name] {
				calls[name] += c - a[n].calls[name]
			}
		}
	}
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(calls)) {
		if r := float64(calls[name]) / float64(ops); r >= 0.01 {
			parts = append(parts, fmt.Sprintf("%s %.2f", name, r))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// usecPerOp is the time Redis spent inside the named commands (INFO
// commandstats usec: without reading, parsing and answering) per
// operation, in µs. Only top-level commands should be named: a script's
// own calls are counted inside its time and again under their names.
func usecPerOp(a, b snapshot, nodes []*redisNode, ops int64, names ...string) float64 {
	if ops <= 0 {
		return math.NaN()
	}
	var sum int64
	for _, n := range nodes {
		for _, name := range names {
			sum += b[n].usec[name] - a[n].usec[name]
		}
	}
	return float64(sum) / float64(ops)
}
