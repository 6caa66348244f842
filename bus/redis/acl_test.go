package redis_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/bus/bustest"
	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// aclPassword replaces the placeholder password of the documented rule.
const aclPassword = "acl-test-password"

// aclRule reads the least-privilege ACL rule from deploy/README.md, the one
// line that starts with "ACL SETUSER keyhole", so that the documentation is
// what the tests run: a rule that lacks a command the bus uses fails them.
func aclRule(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := regexp.MustCompile(`(?m)^ACL SETUSER keyhole .*$`).FindAllString(string(doc), -1)
	if len(lines) != 1 {
		t.Fatalf("deploy/README.md has %d lines starting with \"ACL SETUSER keyhole\", want exactly 1", len(lines))
	}
	args := strings.Fields(lines[0])
	passwords := 0
	for i, a := range args {
		if strings.HasPrefix(a, ">") {
			args[i] = ">" + aclPassword
			passwords++
		}
	}
	if passwords != 1 {
		t.Fatalf("the documented rule sets %d passwords, want 1: %s", passwords, lines[0])
	}
	return args
}

// applyACL sets the documented rule on every node (ACLs are per node, not
// replicated) and clears the ACL log.
func applyACL(t *testing.T, addrs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rule := aclRule(t)
	for _, addr := range addrs {
		if _, err := testenv.RedisCommand(ctx, addr, rule...); err != nil {
			t.Fatalf("%s on %s: %v", strings.Join(rule, " "), addr, err)
		}
		if _, err := testenv.RedisCommand(ctx, addr, "ACL", "LOG", "RESET"); err != nil {
			t.Fatal(err)
		}
	}
}

// checkACLLog fails the test if a node refused the keyhole user anything:
// go-redis ignores some refusals (CLIENT SETINFO at connect), which would
// still fill the operators' ACL log.
func checkACLLog(t *testing.T, addrs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range addrs {
		r, err := testenv.RedisCommand(ctx, addr, "ACL", "LOG")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.([]any) {
			t.Errorf("%s refused the keyhole user: %v", addr, e)
		}
	}
}

// checkDenied checks that the rule is narrow: the keyhole user can do
// nothing outside the keyhole: keys and channels, and no administration.
func checkDenied(t *testing.T, opt *goredis.Options) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := goredis.NewClient(opt)
	defer c.Close()
	denied := [][]any{
		{"GET", "other:key"},
		{"SET", "other:key", "x"},
		{"PUBLISH", "other:channel", "x"},
		{"KEYS", "*"},
		{"FLUSHALL"},
		{"CONFIG", "GET", "*"},
		{"SCRIPT", "FLUSH"},
		{"CLUSTER", "FAILOVER"},
		{"ACL", "LIST"},
		{"CLIENT", "KILL", "ID", "999999999"},
	}
	for _, cmd := range denied {
		err := c.Do(ctx, cmd...).Err()
		if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%v as the keyhole user: %v, want NOPERM", cmd, err)
		}
	}
}

// prefixed puts its topics under "keyhole:", the only channels the rule
// allows, so the conformance suite (whose topics start "bustest:") runs
// through the documented rule unchanged.
type prefixed struct{ *redis.Bus }

const aclTopicPrefix = "keyhole:acltest:"

func (p prefixed) Publish(ctx context.Context, topic string, payload []byte) (int, error) {
	return p.Bus.Publish(ctx, aclTopicPrefix+topic, payload)
}

func (p prefixed) Subscribe(ctx context.Context, topic string, h bus.Handler) (bus.Subscription, error) {
	return p.Bus.Subscribe(ctx, aclTopicPrefix+topic, h)
}

func (p prefixed) PublishBatch(ctx context.Context, msgs []bus.Message) ([]int, error) {
	out := make([]bus.Message, len(msgs))
	for i, m := range msgs {
		out[i] = bus.Message{Topic: aclTopicPrefix + m.Topic, Payload: m.Payload}
	}
	return p.Bus.PublishBatch(ctx, out)
}

// runACL runs the conformance suite, the cert cache and a reconnection
// through the keyhole user.
func runACL(t *testing.T, url string) {
	t.Run("Conformance", func(t *testing.T) {
		bustest.Run(t, func(t *testing.T) (bus.Bus, bus.Registry) {
			b := newBus(t, url, redis.Options{})
			return prefixed{b}, b
		})
	})
	t.Run("CertCache", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cc := newBus(t, url, redis.Options{}).CertCache("")
		for _, key := range []string{"acl.tunnel.example", "acl.tunnel.example+token"} {
			if err := cc.Put(ctx, key, []byte("pem")); err != nil {
				t.Fatal(err)
			}
			if got, err := cc.Get(ctx, key); err != nil || string(got) != "pem" {
				t.Fatalf("Get(%s) = %q, %v", key, got, err)
			}
			if err := cc.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("Ping", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := newBus(t, url, redis.Options{}).Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestACL runs the bus on a single server through the least-privilege user
// that deploy/README.md documents.
func TestACL(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	applyACL(t, srv.Addr)
	url := fmt.Sprintf("redis://keyhole:%s@%s/0", aclPassword, srv.Addr)
	runACL(t, url)
	checkACLLog(t, srv.Addr)
	checkDenied(t, &goredis.Options{Addr: srv.Addr, Username: "keyhole", Password: aclPassword})
}

// testClusterACL is TestACL on a Redis Cluster, where go-redis also reads
// the cluster's layout.
func testClusterACL(t *testing.T, c *testenv.Cluster) {
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr)
	}
	applyACL(t, addrs...)
	url := fmt.Sprintf("redis+cluster://keyhole:%s@%s/", aclPassword, strings.Join(addrs, ","))
	runACL(t, url)
	checkACLLog(t, addrs...)
	checkDenied(t, &goredis.Options{Addr: addrs[0], Username: "keyhole", Password: aclPassword})
}
