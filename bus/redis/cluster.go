package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The URL schemes of a Redis Cluster.
const (
	clusterScheme    = "redis+cluster"
	clusterTLSScheme = "rediss+cluster"
)

// isClusterURL reports whether rawURL names a Redis Cluster.
func isClusterURL(rawURL string) bool {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return false
	}
	scheme = strings.ToLower(scheme)
	return scheme == clusterScheme || scheme == clusterTLSScheme
}

// parseClusterURL turns redis+cluster://[user:password@]h1:p1,h2:p2/?query
// into go-redis cluster options. go-redis's own URL form takes one host and
// the others as addr= query parameters; this one lists them all in the
// place a host goes, as most Redis Cluster tools do.
func parseClusterURL(rawURL string) (*goredis.ClusterOptions, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the whole URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("not a URL: %w", err)
	}
	base := "redis"
	if strings.EqualFold(u.Scheme, clusterTLSScheme) {
		base = "rediss"
	}
	if u.Path != "" && u.Path != "/" {
		return nil, errors.New("a Redis Cluster has only database 0: the path must be empty or /")
	}
	if u.Host == "" {
		return nil, errors.New("no node: want host:port[,host:port...]")
	}
	nodes := strings.Split(u.Host, ",")
	for _, n := range nodes {
		host, port, err := net.SplitHostPort(n)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("node %q: want host:port", n)
		}
	}
	q := u.Query()
	if q.Has("addr") {
		return nil, errors.New("list the nodes in the host part, not as addr= parameters")
	}
	for _, n := range nodes[1:] {
		q.Add("addr", n)
	}
	seed := url.URL{Scheme: base, User: u.User, Host: nodes[0], RawQuery: q.Encode()}
	co, err := goredis.ParseClusterURL(seed.String())
	if err != nil {
		return nil, err
	}
	return co, nil
}

// connectCluster connects to a Redis Cluster. One go-redis ClusterClient
// serves commands and pub/sub alike: its pub/sub connections come from
// per-node pools of their own, and a layout reload that a failed command
// triggers helps the subscriptions find the new master too.
func (b *Bus) connectCluster(ctx context.Context, rawURL string) error {
	co, err := parseClusterURL(rawURL)
	if err != nil {
		return fmt.Errorf("redis bus: parse url: %w", err)
	}
	// As on a single server: no maintenance notifications, no CLIENT
	// SETINFO.
	co.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	co.DisableIdentity = true
	// As on a single server: a command's context bounds its network I/O.
	co.ContextTimeoutEnabled = true
	// One dial attempt per try, not five 100 ms apart: the cluster client
	// retries a command itself, re-reading the layout between tries, and a
	// node that refuses connections has usually failed and been replaced.
	if co.DialerRetries == 0 {
		co.DialerRetries = 1
	}
	b.cluster = goredis.NewClusterClient(co)
	b.client = b.cluster
	// Nodes are created on first use, so every node gets the hook.
	b.cluster.OnNewNode(func(node *goredis.Client) {
		node.AddHook(reloadOnDialError{b.cluster})
	})
	if err := b.ping(ctx); err != nil {
		_ = b.cluster.Close()
		return fmt.Errorf("redis bus: ping cluster %s: %w", strings.Join(co.Addrs, ","), err)
	}
	return nil
}

// reloadOnDialError has the cluster's layout reloaded whenever a node cannot
// be dialled. go-redis reloads it on a MOVED redirect, and every minute, but
// not when a node is gone: until then it keeps sending the slots of a
// crashed master to it, even after a replica has taken over. Reloading at
// the first failed dial lets the retries of the same command (and the
// sharded subscriptions' next attempt) find the new master.
type reloadOnDialError struct{ cluster *goredis.ClusterClient }

func (h reloadOnDialError) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			h.cluster.ReloadState(ctx)
		}
		return conn, err
	}
}

func (reloadOnDialError) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (reloadOnDialError) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}
