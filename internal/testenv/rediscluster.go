package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClusterNodeTimeout is the cluster-node-timeout the nodes of a [Cluster]
// run with: a master that has not answered for this long is failed over.
// The default of 15 s would make every failover test slow.
const ClusterNodeTimeout = time.Second

// clusterTimeout bounds the waits for the cluster to form and to fail over.
const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of three masters with one replica each, started
// by [RedisCluster]. Every node is a redis-server on 127.0.0.1 that keeps
// nothing on disk.
type Cluster struct {
	t     testing.TB
	nodes []*ClusterNode

	mu     sync.Mutex
	killed map[*ClusterNode][]slotRange // the slots each killed master owned
}

// ClusterNode is one redis-server of a [Cluster].
type ClusterNode struct {
	// Addr is "127.0.0.1:PORT".
	Addr string
	// ID is the node's cluster ID (CLUSTER MYID).
	ID string

	proc *Process
}

// PID returns the node's process ID.
func (n *ClusterNode) PID() int { return n.proc.PID() }

// Alive reports whether the node's process is running.
func (n *ClusterNode) Alive() bool { return !n.proc.exited() }

// String returns the address, for test messages.
func (n *ClusterNode) String() string { return n.Addr }

// RedisCluster starts six redis-servers in cluster mode on free ports of
// 127.0.0.1, joins them with redis-cli --cluster create into three masters
// with one replica each, and waits until every node reports cluster_state:ok
// and every replica has synchronised with its master. Cleanup stops them.
func RedisCluster(t testing.TB) *Cluster {
	t.Helper()
	return RedisClusterWithArgs(t)
}

// RedisClusterWithArgs is [RedisCluster] with extra redis-server arguments
// appended for every node.
func RedisClusterWithArgs(t testing.TB, extra ...string) *Cluster {
	t.Helper()
	server := lookBinary(t, "redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server")
	cli := lookBinary(t, "redis-cli", "/usr/bin/redis-cli", "/usr/local/bin/redis-cli")
	c := &Cluster{t: t, killed: make(map[*ClusterNode][]slotRange)}
	for range 6 {
		n, err := startClusterNode(t, server, extra)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		c.nodes = append(c.nodes, n)
	}

	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	create := StartProcess(t, cli, args, nil)
	code, err := create.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("testenv: redis-cli --cluster create: exit %d, %v\n%s\n%s", code, err, tail(create.Stdout(), logTail), tail(create.Stderr(), logTail))
	}
	for _, n := range c.nodes {
		if n.ID, err = redisString(ctx, n.Addr, "CLUSTER", "MYID"); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if err := c.poll(ctx, c.formed); err != nil {
		t.Fatalf("testenv: redis cluster did not form: %v", err)
	}
	return c
}

func startClusterNode(t testing.TB, bin string, extra []string) (*ClusterNode, error) {
	dir := t.TempDir()
	var lastErr error
	for range 3 {
		// The cluster bus port is given explicitly rather than left at
		// port+10000, which nobody checked was free.
		port, busPort := FreePort(t), FreePort(t)
		n := &ClusterNode{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		args := append([]string{
			"--port", strconv.Itoa(port),
			"--cluster-port", strconv.Itoa(busPort),
			"--bind", "127.0.0.1",
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(port)+".conf"),
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout.Milliseconds())),
			// A replica may always take over, however long it has been
			// disconnected: the tests kill masters on purpose.
			"--cluster-replica-validity-factor", "0",
			// A replica's first synchronisation starts at once instead of
			// after the default 5 s wait for other replicas.
			"--repl-diskless-sync-delay", "0",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
		}, extra...)
		p, err := startProcess(t, bin, args, nil)
		if err != nil {
			return nil, fmt.Errorf("redis cluster node: %w", err)
		}
		ready := func(ctx context.Context) bool { return redisAnswers(ctx, n.Addr) }
		if err := waitReady(p, ready); err != nil {
			p.stop(stopGrace)
			lastErr = fmt.Errorf("redis cluster node on %s: %w\n%s", n.Addr, err, tail(p.Stdout()+"\n"+p.Stderr(), 4096))
			if errors.Is(err, errExitedEarly) {
				continue
			}
			return nil, lastErr
		}
		n.proc = p
		return n, nil
	}
	return nil, lastErr
}

// Nodes returns the six nodes in the order they were started (the first
// three started as masters, but failovers change roles: see [Cluster.Role]).
func (c *Cluster) Nodes() []*ClusterNode { return slices.Clone(c.nodes) }

// URL returns the bus URL of the cluster:
// "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,.../", listing every node.
func (c *Cluster) URL() string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr
	}
	return "redis+cluster://" + strings.Join(addrs, ",") + "/"
}

// Do runs one command on node n (see [RedisCommand]).
func (c *Cluster) Do(ctx context.Context, n *ClusterNode, args ...string) (any, error) {
	return RedisCommand(ctx, n.Addr, args...)
}

// Role returns "master" or "replica" as node n sees itself now, or "" when it
// is not running or does not answer.
func (c *Cluster) Role(n *ClusterNode) string {
	if !n.Alive() {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := RedisCommand(ctx, n.Addr, "ROLE")
	if err != nil {
		return ""
	}
	a, ok := r.([]any)
	if !ok || len(a) == 0 {
		return ""
	}
	switch a[0] {
	case "master":
		return "master"
	case "slave":
		return "replica"
	}
	return ""
}

// Slot returns the hash slot of key, as CLUSTER KEYSLOT computes it: CRC16
// of the key (or of its hash tag, the part between the first "{" and the
// next "}" when that is not empty) modulo 16384.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

// crc16 is CRC-16/XMODEM, the checksum Redis Cluster uses for slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// MasterFor returns the master that serves key's slot (a channel's slot, for
// sharded pub/sub), as CLUSTER KEYSLOT and CLUSTER NODES on a live node
// report it.
func (c *Cluster) MasterFor(t testing.TB, key string) *ClusterNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n *ClusterNode
	err := c.poll(ctx, func(ctx context.Context) error {
		live := c.live()
		if len(live) == 0 {
			return errors.New("no node is running")
		}
		slot, err := RedisCommand(ctx, live[0].Addr, "CLUSTER", "KEYSLOT", key)
		if err != nil {
			return err
		}
		s, ok := slot.(int64)
		if !ok {
			return fmt.Errorf("CLUSTER KEYSLOT replied %v", slot)
		}
		view, err := c.view(ctx, live[0])
		if err != nil {
			return err
		}
		for _, e := range view {
			if e.master && !e.failed && e.owns(int(s)) {
				if n = c.byID(e.id); n != nil {
					return nil
				}
			}
		}
		return fmt.Errorf("no live master owns slot %d", s)
	})
	if err != nil {
		t.Fatalf("testenv: master for %q: %v", key, err)
	}
	return n
}

// ReplicaOf returns a replica of master, as CLUSTER NODES on master reports
// it, or nil when it has none.
func (c *Cluster) ReplicaOf(t testing.TB, master *ClusterNode) *ClusterNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	view, err := c.view(ctx, master)
	if err != nil {
		t.Fatalf("testenv: replica of %s: %v", master, err)
	}
	for _, e := range view {
		if e.masterID == master.ID && !e.failed {
			return c.byID(e.id)
		}
	}
	return nil
}

// MoveSlot moves a slot that holds no keys to the master to, as a
// resharding does (SETSLOT IMPORTING and MIGRATING, then NODE on both
// sides), and waits until every live node sees to as its owner. The node
// that gave the slot up drops its sharded subscriptions to the slot's
// channels (Redis sends them an SUNSUBSCRIBE).
func (c *Cluster) MoveSlot(t testing.TB, slot int, to *ClusterNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	from := c.slotOwner(t, ctx, slot)
	if from == to {
		return
	}
	s := strconv.Itoa(slot)
	n, err := RedisCommand(ctx, from.Addr, "CLUSTER", "COUNTKEYSINSLOT", s)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if n != int64(0) {
		t.Fatalf("testenv: MoveSlot(%d): the slot holds %v keys, which would need MIGRATE", slot, n)
	}
	steps := []struct {
		node *ClusterNode
		args []string
	}{
		{to, []string{"CLUSTER", "SETSLOT", s, "IMPORTING", from.ID}},
		{from, []string{"CLUSTER", "SETSLOT", s, "MIGRATING", to.ID}},
		{to, []string{"CLUSTER", "SETSLOT", s, "NODE", to.ID}},
		{from, []string{"CLUSTER", "SETSLOT", s, "NODE", to.ID}},
	}
	for _, st := range steps {
		if _, err := RedisCommand(ctx, st.node.Addr, st.args...); err != nil {
			t.Fatalf("testenv: %s on %s: %v", strings.Join(st.args, " "), st.node, err)
		}
	}
	err = c.poll(ctx, func(ctx context.Context) error {
		for _, live := range c.live() {
			view, err := c.view(ctx, live)
			if err != nil {
				return err
			}
			owner := ""
			for _, e := range view {
				if e.master && e.owns(slot) {
					owner = e.id
				}
			}
			if owner != to.ID {
				return fmt.Errorf("%s does not see %s as the owner of slot %d yet", live, to, slot)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: MoveSlot(%d): %v", slot, err)
	}
}

func (c *Cluster) slotOwner(t testing.TB, ctx context.Context, slot int) *ClusterNode {
	t.Helper()
	live := c.live()
	if len(live) == 0 {
		t.Fatal("testenv: no node is running")
	}
	view, err := c.view(ctx, live[0])
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for _, e := range view {
		if e.master && !e.failed && e.owns(slot) {
			if n := c.byID(e.id); n != nil {
				return n
			}
		}
	}
	t.Fatalf("testenv: no live master owns slot %d", slot)
	return nil
}

// WaitReplicated waits until every live replica of master has received
// everything master had written when WaitReplicated was called (its
// replication offset has caught up), so that killing master then loses
// nothing. Redis replicates asynchronously; WAIT would only cover the
// writes of its own connection.
func (c *Cluster) WaitReplicated(t testing.TB, master *ClusterNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	info, err := redisString(ctx, master.Addr, "INFO", "replication")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	want, err := infoInt(info, "master_repl_offset")
	if err != nil {
		t.Fatalf("testenv: %s: %v", master, err)
	}
	view, err := c.view(ctx, master)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var replicas []*ClusterNode
	for _, e := range view {
		if n := c.byID(e.id); n != nil && e.masterID == master.ID && n.Alive() {
			replicas = append(replicas, n)
		}
	}
	if len(replicas) == 0 {
		t.Fatalf("testenv: %s has no live replica", master)
	}
	err = c.poll(ctx, func(ctx context.Context) error {
		for _, r := range replicas {
			info, err := redisString(ctx, r.Addr, "INFO", "replication")
			if err != nil {
				return err
			}
			got, err := infoInt(info, "slave_repl_offset")
			if err != nil {
				return fmt.Errorf("%s: %w", r, err)
			}
			if got < want {
				return fmt.Errorf("replica %s is at offset %d, master %s was at %d", r, got, master, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// infoInt returns the integer field name of an INFO reply.
func infoInt(info, name string) (int64, error) {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO has no %s", name)
}

// Kill sends SIGKILL to node n, as a crash would, and waits until it has
// exited. It remembers which slots n served, for [Cluster.WaitFailover].
func (c *Cluster) Kill(t testing.TB, n *ClusterNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var owned []slotRange
	if view, err := c.view(ctx, n); err == nil {
		for _, e := range view {
			if e.id == n.ID {
				owned = e.slots
			}
		}
	}
	c.mu.Lock()
	c.killed[n] = owned
	c.mu.Unlock()
	if err := n.proc.Kill(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	select {
	case <-n.proc.Done():
	case <-ctx.Done():
		t.Fatalf("testenv: %s (pid %d) did not exit after SIGKILL", n, n.PID())
	}
}

// WaitFailover waits until the slots that the killed master n served are
// served by another live master (its replica, promoted) and every live node
// reports cluster_state:ok again, and returns the new master. With
// ClusterNodeTimeout of 1 s this takes two to three seconds.
func (c *Cluster) WaitFailover(t testing.TB, n *ClusterNode) *ClusterNode {
	t.Helper()
	c.mu.Lock()
	owned, ok := c.killed[n]
	c.mu.Unlock()
	if !ok {
		t.Fatalf("testenv: WaitFailover(%s): the node was not killed with Kill", n)
	}
	if len(owned) == 0 {
		t.Fatalf("testenv: WaitFailover(%s): the node served no slots", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	var promoted *ClusterNode
	err := c.poll(ctx, func(ctx context.Context) error {
		for _, live := range c.live() {
			if err := clusterStateOK(ctx, live); err != nil {
				return err
			}
			view, err := c.view(ctx, live)
			if err != nil {
				return err
			}
			var owner *ClusterNode
			for _, e := range view {
				if e.master && !e.failed && e.owns(owned[0].from) {
					owner = c.byID(e.id)
				}
			}
			if owner == nil || owner == n || !owner.Alive() {
				return fmt.Errorf("%s does not see a live master for slot %d yet", live, owned[0].from)
			}
			if promoted != nil && promoted != owner {
				return fmt.Errorf("nodes disagree on the new master of slot %d", owned[0].from)
			}
			promoted = owner
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testenv: failover of %s: %v", n, err)
	}
	return promoted
}

func (c *Cluster) live() []*ClusterNode {
	var out []*ClusterNode
	for _, n := range c.nodes {
		if n.Alive() {
			out = append(out, n)
		}
	}
	return out
}

func (c *Cluster) byID(id string) *ClusterNode {
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// formed reports nil once every node reports cluster_state:ok and knows all
// six nodes, and every replica has completed its first synchronisation, so
// that a failover test finds a replica that has the data.
func (c *Cluster) formed(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := clusterStateOK(ctx, n); err != nil {
			return err
		}
		info, err := redisString(ctx, n.Addr, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_known_nodes:6\r\n") {
			return fmt.Errorf("%s does not know all six nodes yet", n)
		}
		repl, err := redisString(ctx, n.Addr, "INFO", "replication")
		if err != nil {
			return err
		}
		if strings.Contains(repl, "role:slave\r\n") && !strings.Contains(repl, "master_link_status:up\r\n") {
			return fmt.Errorf("replica %s has not synchronised yet", n)
		}
	}
	return nil
}

func clusterStateOK(ctx context.Context, n *ClusterNode) error {
	info, err := redisString(ctx, n.Addr, "CLUSTER", "INFO")
	if err != nil {
		return err
	}
	if !strings.Contains(info, "cluster_state:ok\r\n") {
		return fmt.Errorf("%s: cluster_state is not ok", n)
	}
	return nil
}

// poll calls check every 50 ms until it returns nil or ctx ends, and then
// returns check's last error.
func (c *Cluster) poll(ctx context.Context, check func(ctx context.Context) error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}

func redisString(ctx context.Context, addr string, args ...string) (string, error) {
	r, err := RedisCommand(ctx, addr, args...)
	if err != nil {
		return "", err
	}
	s, ok := r.(string)
	if !ok {
		return "", fmt.Errorf("redis %s %s: reply %v is not a string", addr, args[0], r)
	}
	return s, nil
}

type slotRange struct{ from, to int }

// nodeEntry is one line of CLUSTER NODES.
type nodeEntry struct {
	id       string
	master   bool
	failed   bool // flags fail or fail? (suspected by this node)
	masterID string
	slots    []slotRange
}

func (e nodeEntry) owns(slot int) bool {
	for _, r := range e.slots {
		if slot >= r.from && slot <= r.to {
			return true
		}
	}
	return false
}

// view returns the cluster as node n sees it (CLUSTER NODES).
func (c *Cluster) view(ctx context.Context, n *ClusterNode) ([]nodeEntry, error) {
	text, err := redisString(ctx, n.Addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var out []nodeEntry
	for line := range strings.Lines(text) {
		// <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv>
		// <config-epoch> <link-state> <slot> <slot> ...
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := strings.Split(f[2], ",")
		e := nodeEntry{
			id:       f[0],
			master:   slices.Contains(flags, "master"),
			failed:   slices.Contains(flags, "fail") || slices.Contains(flags, "fail?"),
			masterID: f[3],
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") { // a slot being imported or migrated
				continue
			}
			from, to, isRange := strings.Cut(s, "-")
			a, err := strconv.Atoi(from)
			if err != nil {
				return nil, fmt.Errorf("CLUSTER NODES slot %q: %w", s, err)
			}
			b := a
			if isRange {
				if b, err = strconv.Atoi(to); err != nil {
					return nil, fmt.Errorf("CLUSTER NODES slot %q: %w", s, err)
				}
			}
			e.slots = append(e.slots, slotRange{a, b})
		}
		out = append(out, e)
	}
	return out, nil
}
