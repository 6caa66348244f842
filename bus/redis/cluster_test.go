package redis_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/bus/bustest"
	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// recoveryBudget is how long, after a master is killed, a subscription on
// its shard may take to deliver again: the failover itself (about 2.5 s
// with the harness's 1 s cluster-node-timeout) and the bus finding the new
// master.
const recoveryBudget = 15 * time.Second

// TestCluster runs everything that needs a Redis Cluster on one cluster,
// which takes a few seconds to start. The subtests run one after the other;
// the two failover tests come last and kill masters of different shards, so
// each finds a master with a replica.
func TestCluster(t *testing.T) {
	t.Parallel()
	// Registered first, so it runs after every bus of the test is closed.
	t.Cleanup(func() { waitDialProbes(t) })
	c := testenv.RedisCluster(t)

	t.Run("Conformance", func(t *testing.T) {
		bustest.Run(t, func(t *testing.T) (bus.Bus, bus.Registry) {
			b := newBus(t, c.URL(), redis.Options{})
			return b, b
		})
	})
	t.Run("New", func(t *testing.T) { testClusterNew(t, c) })
	t.Run("ShardedDelivery", func(t *testing.T) { testShardedDelivery(t, c) })
	t.Run("CertCache", func(t *testing.T) { testClusterCertCache(t, c) })
	t.Run("ACL", func(t *testing.T) { testClusterACL(t, c) })
	t.Run("SlotMove", func(t *testing.T) { testSlotMove(t, c) })
	t.Run("RegistryFailover", func(t *testing.T) { testRegistryFailover(t, c) })
	t.Run("PubSubFailover", func(t *testing.T) { testPubSubFailover(t, c) })
}

func randomID(t *testing.T) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// masters returns the nodes that are masters now.
func masters(t *testing.T, c *testenv.Cluster) []*testenv.ClusterNode {
	t.Helper()
	var out []*testenv.ClusterNode
	for _, n := range c.Nodes() {
		if c.Role(n) == "master" {
			out = append(out, n)
		}
	}
	if len(out) != 3 {
		t.Fatalf("%d masters, want 3", len(out))
	}
	return out
}

// keyOn returns format with the first number that makes it a key (or
// channel) whose slot master m serves.
func keyOn(t *testing.T, c *testenv.Cluster, m *testenv.ClusterNode, format string) string {
	t.Helper()
	for i := range 200 {
		k := fmt.Sprintf(format, i)
		if c.MasterFor(t, k) == m {
			return k
		}
	}
	t.Fatalf("no key of the form %q on %s", format, m)
	return ""
}

// shardChannels returns PUBSUB SHARDCHANNELS of node n, and PUBSUB
// CHANNELS, which must stay empty: the bus never uses plain SUBSCRIBE in
// cluster mode.
func shardChannels(t *testing.T, c *testenv.Cluster, n *testenv.ClusterNode) (sharded, plain []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, q := range []struct {
		sub string
		out *[]string
	}{{"SHARDCHANNELS", &sharded}, {"CHANNELS", &plain}} {
		r, err := c.Do(ctx, n, "PUBSUB", q.sub)
		if err != nil {
			t.Fatalf("PUBSUB %s on %s: %v", q.sub, n, err)
		}
		for _, v := range r.([]any) {
			*q.out = append(*q.out, v.(string))
		}
	}
	return sharded, plain
}

func testClusterNew(t *testing.T, c *testenv.Cluster) {
	nodes := c.Nodes()
	plain := testenv.Redis(t)
	// Only the one node: the bus must find the other five itself.
	one := "redis+cluster://" + nodes[3].Addr
	tests := []struct {
		name    string
		url     string
		wantErr string // substring; "" means success
		timeout time.Duration
	}{
		{name: "every node", url: c.URL()},
		{name: "one node", url: one},
		{name: "one node and a slash", url: one + "/"},
		{name: "query options", url: one + "/?dial_timeout=2s&max_retries=1"},
		{name: "scheme in capitals", url: "REDIS+CLUSTER://" + nodes[0].Addr + "/"},
		{name: "a node and a dead one", url: "redis+cluster://127.0.0.1:" + itoa(testenv.FreePort(t)) + "," + nodes[1].Addr},
		{name: "a database", url: one + "/3", wantErr: "parse url"},
		{name: "no port", url: "redis+cluster://127.0.0.1," + nodes[1].Addr, wantErr: "parse url"},
		{name: "no node", url: "redis+cluster:///", wantErr: "parse url"},
		{name: "addr parameter", url: one + "/?addr=" + nodes[1].Addr, wantErr: "parse url"},
		{name: "unknown option", url: one + "/?colour=blue", wantErr: "parse url"},
		{name: "not a cluster", url: "redis+cluster://" + plain.Addr, wantErr: "ping"},
		{name: "nothing listening", url: "redis+cluster://127.0.0.1:" + itoa(testenv.FreePort(t)), wantErr: "ping"},
		{name: "wrong password", url: "redis+cluster://nobody:pa%3Ass%40word@" + nodes[0].Addr, wantErr: "ping"},
		{name: "tls to a plain cluster", url: "rediss+cluster://" + nodes[0].Addr, wantErr: "ping", timeout: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			b, err := redis.New(ctx, tt.url, redis.Options{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer b.Close()
				if err := b.Ping(ctx); err != nil {
					t.Fatalf("Ping: %v", err)
				}
				// Keys on every shard: the bus knows all three masters.
				for i := range 12 {
					if _, err := b.Claim(ctx, fmt.Sprintf("new-test-%s-%d", tt.name, i), "me", time.Minute); err != nil {
						t.Fatalf("Claim: %v", err)
					}
				}
				return
			}
			if err == nil {
				b.Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "redis bus: ") {
				t.Fatalf("New: %v, want a redis bus error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "pa:ss@word") || strings.Contains(err.Error(), "pa%3Ass") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

// testShardedDelivery checks that pub/sub is sharded: a subscriber and a
// publisher that were each given only a node that does not own the topic
// still meet, on the owner, where PUBSUB SHARDCHANNELS lists the topic and
// no other master does. One bus subscribes a topic on each shard at once,
// which a single multi-channel SSUBSCRIBE would get wrong.
func testShardedDelivery(t *testing.T, c *testenv.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms := masters(t, c)
	id := randomID(t)
	var topics []string
	for i, m := range ms {
		topics = append(topics, keyOn(t, c, m, bus.InstanceTopic(fmt.Sprintf("sharded-%s-%d-%%d", id, i))))
	}
	owner := ms[0]
	var others []*testenv.ClusterNode
	for _, n := range c.Nodes() {
		if n != owner {
			others = append(others, n)
		}
	}
	sub := newBus(t, "redis+cluster://"+others[0].Addr, redis.Options{})
	pub := newBus(t, "redis+cluster://"+others[1].Addr, redis.Options{})

	recvs := make([]recv, len(topics))
	subs := make([]bus.Subscription, len(topics))
	for i, topic := range topics {
		recvs[i] = make(recv, 16)
		s, err := sub.Subscribe(ctx, topic, recvs[i].handle)
		if err != nil {
			t.Fatalf("Subscribe(%q): %v", topic, err)
		}
		subs[i] = s
	}
	for i, topic := range topics {
		n, err := pub.Publish(ctx, topic, []byte("to "+topic))
		if err != nil || n != 1 {
			t.Fatalf("Publish(%q) = %d, %v; want 1 receiver", topic, n, err)
		}
		recvs[i].wait(t, "to "+topic)
	}
	for i, m := range ms {
		sharded, plain := shardChannels(t, c, m)
		for j, topic := range topics {
			if listed := slices.Contains(sharded, topic); listed != (i == j) {
				t.Errorf("master %s: PUBSUB SHARDCHANNELS %q lists %s: %v, want %v", m, sharded, topic, listed, i == j)
			}
		}
		if len(plain) != 0 {
			t.Errorf("master %s: PUBSUB CHANNELS %q, want none (plain SUBSCRIBE)", m, plain)
		}
	}
	// A batch to all three topics keeps each topic's order.
	var msgs []bus.Message
	for i := range 30 {
		msgs = append(msgs, bus.Message{Topic: topics[i%3], Payload: []byte(fmt.Sprintf("batch %d", i))})
	}
	counts, err := pub.PublishBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if counts[i] != 1 {
			t.Fatalf("batch message %d: %d receivers, want 1", i, counts[i])
		}
		recvs[i%3].wait(t, string(m.Payload))
	}

	if err := subs[0].Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	if sharded, _ := shardChannels(t, c, owner); slices.Contains(sharded, topics[0]) {
		t.Fatalf("owner still lists %s after Unsubscribe returned: %q", topics[0], sharded)
	}
	if n, err := pub.Publish(ctx, topics[0], []byte("gone")); err != nil || n != 0 {
		t.Fatalf("Publish after Unsubscribe = %d, %v; want 0 receivers", n, err)
	}
	if n, err := pub.Publish(ctx, topics[1], []byte("still")); err != nil || n != 1 {
		t.Fatalf("Publish to a topic still subscribed = %d, %v; want 1", n, err)
	}
	recvs[1].wait(t, "still")
}

// testClusterCertCache checks the cert cache across buses, with keys that
// land on different shards.
func testClusterCertCache(t *testing.T, c *testenv.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := newBus(t, c.URL(), redis.Options{}).CertCache("")
	b := newBus(t, c.URL(), redis.Options{}).CertCache("")
	owners := map[*testenv.ClusterNode]bool{}
	for i := range 6 {
		key := fmt.Sprintf("host%d.tunnel.example", i)
		owners[c.MasterFor(t, redis.DefaultCertCachePrefix+key)] = true
		data := []byte("-----BEGIN EC PRIVATE KEY-----\n\x00\xff " + key)
		if err := a.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		got, err := b.Get(ctx, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("other bus Get(%s) = %q, %v; want %q", key, got, err, data)
		}
		if err := b.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Get(ctx, key); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("Get after Delete: %v, want autocert.ErrCacheMiss", err)
		}
	}
	if len(owners) < 2 {
		t.Fatalf("all cert keys landed on one shard; the test proves nothing about the others")
	}
}

// publishUntilHeard publishes numbered messages to topic until r receives
// one, or fails after recoveryBudget from start. It returns how long after
// start the first one arrived and how many were published before it (lost).
func publishUntilHeard(t *testing.T, pub *redis.Bus, topic string, r recv, start time.Time) (time.Duration, int) {
	t.Helper()
	deadline := start.Add(recoveryBudget)
	for seq := 0; ; seq++ {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery on %s within %s (%d publishes)", topic, recoveryBudget, seq)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = pub.Publish(ctx, topic, []byte(fmt.Sprintf("probe %d", seq)))
		cancel()
		timer := time.NewTimer(20 * time.Millisecond)
		select {
		case got := <-r:
			timer.Stop()
			var k int
			if _, err := fmt.Sscanf(got, "probe %d", &k); err != nil {
				t.Fatalf("unexpected delivery %q", got)
			}
			return time.Since(start), k
		case <-timer.C:
		}
	}
}

// testSlotMove moves the slot of a subscribed topic to another master, as
// a resharding does. The old owner drops the subscription (an SUNSUBSCRIBE
// nobody asked for) and the connection stays up; the bus must subscribe
// again on the new owner by itself and report it through OnReconnect.
func testSlotMove(t *testing.T, c *testenv.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := randomID(t)
	// A topic whose slot holds no keys, so it can move without MIGRATE.
	var topic string
	var from *testenv.ClusterNode
	for i := 0; topic == ""; i++ {
		cand := bus.InstanceTopic(fmt.Sprintf("moving-%s-%d", id, i))
		owner := c.MasterFor(t, cand)
		n, err := c.Do(ctx, owner, "CLUSTER", "COUNTKEYSINSLOT", itoa(testenv.Slot(cand)))
		if err != nil {
			t.Fatal(err)
		}
		if n == int64(0) {
			topic, from = cand, owner
		}
	}
	var to *testenv.ClusterNode
	for _, m := range masters(t, c) {
		if m != from {
			to = m
			break
		}
	}
	reconnected := make(chan struct{}, 1)
	var logs lockedBuffer
	sub := newBus(t, c.URL(), redis.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnReconnect: func() {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		},
	})
	pub := newBus(t, c.URL(), redis.Options{})
	r := make(recv, 256)
	if _, err := sub.Subscribe(ctx, topic, r.handle); err != nil {
		t.Fatal(err)
	}

	c.MoveSlot(t, testenv.Slot(topic), to)
	moved := time.Now()
	took, lost := publishUntilHeard(t, pub, topic, r, moved)
	t.Logf("subscription delivered again %s after the slot moved; %d messages lost", took.Round(time.Millisecond), lost)
	select {
	case <-reconnected:
	case <-time.After(time.Until(moved.Add(recoveryBudget))):
		t.Fatal("OnReconnect was not called")
	}
	if sharded, _ := shardChannels(t, c, to); !slices.Contains(sharded, topic) {
		t.Fatalf("the new owner %s does not list %s: %q", to, topic, sharded)
	}
	if sharded, _ := shardChannels(t, c, from); slices.Contains(sharded, topic) {
		t.Fatalf("the old owner %s still lists %s", from, topic)
	}
	// The path taken: Redis dropped the subscription, the connection
	// stayed up.
	if l := logs.String(); !strings.Contains(l, "subscription dropped by Redis") || strings.Contains(l, "connection lost") {
		t.Fatalf("the bus did not see an SUNSUBSCRIBE on a live connection; its log:\n%s", l)
	}
	if n, err := pub.Publish(ctx, topic, []byte("settled")); err != nil || n != 1 {
		t.Fatalf("Publish after the move = %d, %v; want 1 receiver", n, err)
	}
	for got := ""; got != "settled"; {
		select {
		case got = <-r:
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery after the move settled")
		}
	}
}

// testRegistryFailover kills the master that holds the instance directory
// and some registry entries, after its replica has them, and checks that
// they are all there when the replica has taken over, and that the names
// can be claimed, refreshed and released again.
func testRegistryFailover(t *testing.T, c *testenv.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := newBus(t, c.URL(), redis.Options{})
	// The instance directory is one key; its master is the one to kill.
	m := c.MasterFor(t, "keyhole:instances")
	if c.ReplicaOf(t, m) == nil {
		t.Fatalf("master %s has no replica", m)
	}
	id := randomID(t)
	var names []string
	for i := range 3 {
		key := keyOn(t, c, m, fmt.Sprintf("keyhole:reg:failover-%s-%d-%%d.example", id, i))
		names = append(names, strings.TrimPrefix(key, "keyhole:reg:"))
	}
	instance := "inst-" + id
	for _, name := range names {
		if _, err := b.Claim(ctx, name, "holder-"+name, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Heartbeat(ctx, instance, time.Minute); err != nil {
		t.Fatal(err)
	}
	c.WaitReplicated(t, m)

	c.Kill(t, m)
	start := time.Now()
	promoted := c.WaitFailover(t, m)
	t.Logf("failover of %s to %s took %s", m, promoted, time.Since(start).Round(time.Millisecond))

	// The bus may need a failed command or two to learn the new layout.
	deadline := time.Now().Add(recoveryBudget)
	for _, name := range names {
		for {
			holder, err := b.Lookup(ctx, name)
			if err == nil {
				if holder != "holder-"+name {
					t.Fatalf("Lookup(%s) after failover = %q, want holder-%s", name, holder, name)
				}
				break
			}
			if errors.Is(err, bus.ErrNotFound) {
				t.Fatalf("Lookup(%s) after failover: the entry was lost", name)
			}
			if time.Now().After(deadline) {
				t.Fatalf("Lookup(%s) still failing %s after the failover: %v", name, recoveryBudget, err)
			}
			pause(ctx, 20*time.Millisecond)
		}
	}
	t.Logf("registry answering again %s after the kill", time.Since(start).Round(time.Millisecond))
	ids, err := b.Instances(ctx)
	if err != nil || !slices.Contains(ids, instance) {
		t.Fatalf("Instances after failover = %q, %v; want %s listed", ids, err, instance)
	}
	if ok, err := b.Refresh(ctx, names[0], "holder-"+names[0], time.Minute); err != nil || !ok {
		t.Fatalf("Refresh after failover = %v, %v; want true", ok, err)
	}
	if prev, err := b.Claim(ctx, names[1], "newcomer", time.Minute); err != nil || prev != "holder-"+names[1] {
		t.Fatalf("Claim after failover = %q, %v; want the previous holder back", prev, err)
	}
	if err := b.Release(ctx, names[2], "holder-"+names[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(ctx, names[2]); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("Lookup after Release: %v, want ErrNotFound", err)
	}
	if err := b.Heartbeat(ctx, instance, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// testPubSubFailover kills, with SIGKILL, the master that owns an instance
// topic's slot while a subscriber listens on it. Within recoveryBudget the
// subscription must deliver again without the caller doing anything, and
// OnReconnect must have run. Messages published during the gap may be lost
// (at-most-once); the test logs how many. After the recovery a numbered
// sequence must arrive whole and in order.
func testPubSubFailover(t *testing.T, c *testenv.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var m *testenv.ClusterNode
	for _, n := range masters(t, c) {
		if r := c.ReplicaOf(t, n); r != nil && r.Alive() {
			m = n
			break
		}
	}
	if m == nil {
		t.Fatal("no master with a live replica is left")
	}
	replica := c.ReplicaOf(t, m)
	topic := keyOn(t, c, m, bus.InstanceTopic("failover-"+randomID(t)+"-%d"))

	reconnected := make(chan struct{}, 1)
	var reconnects atomic.Int32
	sub := newBus(t, c.URL(), redis.Options{OnReconnect: func() {
		reconnects.Add(1)
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}})
	pub := newBus(t, c.URL(), redis.Options{})
	r := make(recv, 1024)
	if _, err := sub.Subscribe(ctx, topic, r.handle); err != nil {
		t.Fatal(err)
	}
	if n, err := pub.Publish(ctx, topic, []byte("before")); err != nil || n != 1 {
		t.Fatalf("Publish before the kill = %d, %v", n, err)
	}
	r.wait(t, "before")

	c.Kill(t, m)
	killed := time.Now()
	// Before a replica can have taken over (that takes at least the 1 s
	// cluster-node-timeout), a slot has no master that answers.
	pingCtx, pingCancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := pub.Ping(pingCtx)
	pingCancel()
	if err == nil && time.Since(killed) < testenv.ClusterNodeTimeout {
		t.Fatal("Ping succeeded right after a master was killed")
	}

	// Publish a numbered message every 20 ms until one arrives. Every
	// message published before the first one heard is lost: it failed, it
	// found no subscriber (the subscription not renewed yet), or Redis
	// accepted it for a subscriber and it never came.
	const (
		failed = iota
		unheard
		accepted
	)
	var outcome []int
	firstHeard := -1
	var recovered time.Duration
	deadline := killed.Add(recoveryBudget)
	for seq := 0; firstHeard < 0; seq++ {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery within %s of the kill (%d publishes)", recoveryBudget, len(outcome))
		}
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		n, err := pub.Publish(pctx, topic, []byte(fmt.Sprintf("gap %d", seq)))
		pcancel()
		switch {
		case err != nil:
			outcome = append(outcome, failed)
		case n == 0:
			outcome = append(outcome, unheard)
		default:
			outcome = append(outcome, accepted)
		}
		timer := time.NewTimer(20 * time.Millisecond)
		select {
		case got := <-r:
			if _, err := fmt.Sscanf(got, "gap %d", &firstHeard); err != nil {
				t.Fatalf("unexpected delivery %q", got)
			}
			recovered = time.Since(killed)
		case <-timer.C:
		}
		timer.Stop()
	}
	var lost [3]int
	for _, o := range outcome[:firstHeard] {
		lost[o]++
	}
	t.Logf("subscription delivered again %s after the kill; %d messages lost in the gap: %d publishes failed, %d found no subscriber, %d accepted for a subscriber",
		recovered.Round(time.Millisecond), firstHeard, lost[failed], lost[unheard], lost[accepted])

	select {
	case <-reconnected:
	case <-time.After(time.Until(deadline)):
		t.Fatal("OnReconnect was not called")
	}
	if promoted := c.WaitFailover(t, m); promoted != replica {
		t.Fatalf("the slot moved to %s, want the replica %s", promoted, replica)
	}
	if sharded, _ := shardChannels(t, c, replica); !slices.Contains(sharded, topic) {
		t.Fatalf("the promoted replica does not list %s: %q", topic, sharded)
	}
	// Ping agrees once the layout is reloaded.
	for err := pub.Ping(ctx); err != nil; err = pub.Ping(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("Ping still failing after the failover: %v", err)
		}
		pause(ctx, 20*time.Millisecond)
	}

	// After the recovery nothing is lost.
	const after = 200
	for i := range after {
		if n, err := pub.Publish(ctx, topic, []byte(fmt.Sprintf("after %d", i))); err != nil || n != 1 {
			t.Fatalf("Publish %d after the recovery = %d, %v; want 1 receiver", i, n, err)
		}
	}
	for i := 0; i < after; {
		select {
		case got := <-r:
			if strings.HasPrefix(got, "gap ") {
				continue // a straggler from the gap
			}
			if want := fmt.Sprintf("after %d", i); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			i++
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d messages arrived after the recovery", i, after)
		}
	}
	t.Logf("OnReconnect ran %d times", reconnects.Load())
}

// waitDialProbes waits until go-redis's dial probes have ended. A pool that
// failed to dial a killed node starts one, which sleeps a second between
// probes and only then sees that its pool has been closed; goleak, at the
// end of the package, would report it as leaked.
func waitDialProbes(t *testing.T) {
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !bytes.Contains(buf[:n], []byte("internal/pool.(*ConnPool).tryDial")) {
			return
		}
		if time.Now().After(deadline) {
			t.Log("go-redis dial probes still running; goleak will name them")
			return
		}
		pause(context.Background(), 50*time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer safe for the bus's goroutines to log to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pause spaces out polls; it is not a wait for state.
func pause(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}
