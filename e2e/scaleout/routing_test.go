package scaleout_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// Routing by directory (proxy/route.go): every instance subscribes to its
// own topic only, a request goes to the instance the registry names, and
// the holder's answers come back through pipelined lanes. These tests run
// in-process proxies on a real redis-server.

// routeTimeout is the Config.Timeout of every proxy here: far longer than
// any answer these tests expect, so that a request that waits for it shows.
const routeTimeout = 5 * time.Second

// routeProxy is redisProxy for a Redis at any URL (a relay in front of
// one, say), wired the same way: the bus's reconnect hook re-announces the
// proxy's hostnames. It returns the bus too, for a test to close.
func routeProxy(t *testing.T, redisURL string, cfg proxy.Config) (*tunneltest.Env, *redis.Bus) {
	t.Helper()
	var current atomic.Pointer[proxy.Proxy]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redis.New(ctx, redisURL, redis.Options{
		Logger: tunneltest.Logger(t),
		OnReconnect: func() {
			if p := current.Load(); p != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				p.Reannounce(ctx)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cfg.Bus, cfg.Registry = b, b
	env := tunneltest.StartProxy(t, cfg)
	current.Store(env.Proxy)
	return env, b
}

// tunnelClient is one client.Client run against one instance's control
// endpoint. Unlike tunneltest.Env.Connect it reports errors instead of
// failing the test, so that many can be started from goroutines.
type tunnelClient struct {
	url    string // the public URL it registered
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// connectClient runs a client serving h at env with key and waits until
// it has registered.
func connectClient(env *tunneltest.Env, key ed25519.PrivateKey, h http.Handler) (*tunnelClient, error) {
	urls := make(chan string, 1)
	c := &client.Client{
		Proxy:   env.ProxyURL(),
		Key:     key,
		Handler: h,
		OnRegister: func(u string) {
			select {
			case urls <- u:
			default:
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &tunnelClient{cancel: cancel, done: make(chan error, 1)}
	go func() { tc.done <- c.Run(ctx) }()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case tc.url = <-urls:
		return tc, nil
	case err := <-tc.done:
		cancel()
		return nil, fmt.Errorf("client stopped before registering: %v", err)
	case <-timer.C:
		tc.stop()
		return nil, errors.New("client did not register within 10s")
	}
}

// stop stops the client and waits until Run has returned. It may be
// called more than once.
func (tc *tunnelClient) stop() {
	tc.once.Do(func() {
		tc.cancel()
		<-tc.done
	})
}

// mustConnect is connectClient for the test goroutine; the client stops
// at cleanup.
func mustConnect(t *testing.T, env *tunneltest.Env, key ed25519.PrivateKey, h http.Handler) *tunnelClient {
	t.Helper()
	tc, err := connectClient(env, key, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.stop)
	return tc
}

// hostname returns the hostname of a tunnel URL, without the port.
func hostname(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// newKey returns a fresh Ed25519 key; the hostname derives from it.
func newKey() ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return k
}

// registryKeys counts the hostnames in the registry.
func registryKeys(ctx context.Context, rdb *goredis.Client) (int, error) {
	n := 0
	iter := rdb.Scan(ctx, 0, "keyhole:reg:*", 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n, iter.Err()
}

// bounded runs f(i) for i in [0, n) with at most limit running at once.
func bounded(n, limit int, f func(i int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// TestRoutingOneSubscriptionPerInstance: with 1,000 clients connected,
// half to each of two instances, Redis has exactly one channel per
// instance with one subscriber each, not one per hostname; a random
// sample of the tunnels answers through the instance that does not hold
// it, each from its own client; and once the clients stop, every registry
// entry is released.
func TestRoutingOneSubscriptionPerInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("connects 1,000 clients")
	}
	const (
		clients  = 1000
		inFlight = 32 // registrations at once
		sample   = 50
	)
	rs := testenv.Redis(t)
	cfg := proxy.Config{Timeout: routeTimeout}
	envs := []*tunneltest.Env{redisProxy(t, rs, cfg), redisProxy(t, rs, cfg)}

	tcs := make([]*tunnelClient, clients)
	errs := make([]error, clients)
	start := time.Now()
	bounded(clients, inFlight, func(i int) {
		body := strconv.Itoa(i)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
		tcs[i], errs[i] = connectClient(envs[i%2], newKey(), h)
	})
	stopAll := func() {
		bounded(clients, 64, func(i int) {
			if tcs[i] != nil {
				tcs[i].stop()
			}
		})
	}
	t.Cleanup(stopAll)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("connecting %d clients: %v", clients, err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("%d clients registered in %v (%d at a time); both sides in this process: %d goroutines, %d MiB heap in use, %d MiB from the OS",
		clients, time.Since(start).Round(time.Millisecond), inFlight, runtime.NumGoroutine(), ms.HeapInuse>>20, ms.Sys>>20)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := newRedisClient(rs.Addr, "keyhole-test")
	defer rdb.Close()
	if n, err := registryKeys(ctx, rdb); n != clients || err != nil {
		t.Errorf("%d registry entries (%v) with %d clients connected", n, err, clients)
	}

	channels, err := rdb.PubSubChannels(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{bus.InstanceTopic(envs[0].Proxy.Instance()), bus.InstanceTopic(envs[1].Proxy.Instance())}
	slices.Sort(channels)
	slices.Sort(want)
	if !slices.Equal(channels, want) {
		t.Errorf("PUBSUB CHANNELS: %d channels %.200q, want exactly the instances' own %q", len(channels), channels, want)
	}
	subs, err := rdb.PubSubNumSub(ctx, want...).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range want {
		if subs[ch] != 1 {
			t.Errorf("PUBSUB NUMSUB %s = %d, want 1", ch, subs[ch])
		}
	}
	conns, err := pubsubClients(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 2 {
		t.Errorf("%d pub/sub connections to Redis, want one per instance", len(conns))
	}
	t.Logf("PUBSUB CHANNELS %q, NUMSUB %v, %d pub/sub connections", channels, subs, len(conns))

	// The sample goes through the instance that does not hold the tunnel:
	// each answer must come from the tunnel's own client.
	start = time.Now()
	for _, i := range rand.Perm(clients)[:sample] {
		other := envs[(i+1)%2]
		o := do(other.HTTP, http.MethodGet, tcs[i].url+"/", nil, nil, 10*time.Second)
		if o.status != http.StatusOK || o.body != strconv.Itoa(i) {
			t.Errorf("tunnel %d via the other instance: %v %q, want 200 %q", i, o, o.body, strconv.Itoa(i))
		}
	}
	t.Logf("%d tunnels answered through the other instance in %v", sample, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	stopAll()
	t.Logf("%d clients stopped in %v", clients, time.Since(start).Round(time.Millisecond))
	eventually(t, 10*time.Second, "the registry is empty once the clients stopped", func() bool {
		n, err := registryKeys(ctx, rdb)
		return n == 0 && err == nil
	})
	t.Logf("registry empty %v after the clients began to stop", time.Since(start).Round(time.Millisecond))
}

// slowRelay is a TCP relay that delays every chunk it reads by delay
// before writing it on, in each direction and in order: a Redis far away.
type slowRelay struct {
	ln     net.Listener
	target string
	delay  time.Duration
	quit   chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startSlowRelay(t *testing.T, target string, delay time.Duration) *slowRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &slowRelay{ln: ln, target: target, delay: delay, quit: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	r.wg.Go(r.accept)
	t.Cleanup(r.close)
	return r
}

// url is the relay as a Redis URL.
func (r *slowRelay) url() string { return "redis://" + r.ln.Addr().String() + "/0" }

func (r *slowRelay) accept() {
	for {
		down, err := r.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			down.Close()
			continue
		}
		if !r.track(down, up) {
			return
		}
		r.wg.Go(func() { r.pipe(down, up) })
		r.wg.Go(func() { r.pipe(up, down) })
	}
}

// track records the pair for close; false if the relay is closing.
func (r *slowRelay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

type delayedChunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, each chunk no sooner than delay after it was
// read. Either direction ending ends both.
func (r *slowRelay) pipe(src, dst net.Conn) {
	chunks := make(chan delayedChunk, 256)
	r.wg.Go(func() {
		defer src.Close()
		defer dst.Close()
		failed := false
		timer := time.NewTimer(0)
		defer timer.Stop()
		for c := range chunks {
			if failed {
				continue // drain, so that the reader never blocks
			}
			timer.Reset(time.Until(c.due))
			select {
			case <-timer.C:
			case <-r.quit:
				failed = true
				continue
			}
			if _, err := dst.Write(c.b); err != nil {
				failed = true
				src.Close()
			}
		}
	})
	defer close(chunks)
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			chunks <- delayedChunk{b: buf[:n], due: time.Now().Add(r.delay)}
		}
		if err != nil {
			return
		}
	}
}

func (r *slowRelay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	close(r.quit)
	r.ln.Close()
	r.wg.Wait()
}

// downloadHandler writes n bytes generated from seed.
func downloadHandler(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil {
		http.Error(w, "bad n", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	io.Copy(w, io.LimitReader(generator(r.URL.Query().Get("seed")), n))
}

// generatedSum is the SHA-256 of the n bytes generated from seed.
func generatedSum(seed string, n int64) string {
	h := sha256.New()
	io.Copy(h, io.LimitReader(generator(seed), n))
	return hex.EncodeToString(h.Sum(nil))
}

// TestRoutingSlowRedis: with 100 ms of latency each way between both
// instances and Redis (200 ms a round trip), 16 GETs at once to one tunnel
// all answer 200 well within the 5 s timeout, through the instance that
// does not hold the client (every frame crosses Redis) and through the
// one that does; and a 1 MB download through the non-holder arrives
// byte-exact. Answers that left the holder one Redis round trip at a time
// per tunnel made half of the 16 time out.
func TestRoutingSlowRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis behind a slow relay")
	}
	const (
		delay      = 100 * time.Millisecond
		concurrent = 16
		download   = 1 << 20
	)
	rs := testenv.Redis(t)
	relay := startSlowRelay(t, rs.Addr, delay)
	// The relay must really cost a round trip of 2×delay, or the test
	// proves nothing.
	probe := newRedisClient(relay.ln.Addr().String(), "keyhole-test-probe")
	defer probe.Close()
	for i := range 2 { // the first dials and says HELLO as well
		start := time.Now()
		if err := probe.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("PING through the relay: %v", err)
		}
		if took := time.Since(start); i == 1 {
			t.Logf("PING through the relay: %v", took.Round(time.Millisecond))
			if took < 2*delay {
				t.Fatalf("PING through the relay took %v, want at least %v", took, 2*delay)
			}
		}
	}
	cfg := proxy.Config{Timeout: routeTimeout, MaxBody: -1}
	holder, _ := routeProxy(t, relay.url(), cfg)
	other, _ := routeProxy(t, relay.url(), cfg)
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	mux.HandleFunc("/download", downloadHandler)
	tc := mustConnect(t, holder, newKey(), mux)

	for _, via := range []struct {
		name string
		env  *tunneltest.Env
	}{{"NonHolder", other}, {"Holder", holder}} {
		t.Run(via.name, func(t *testing.T) {
			outs := make([]outcome, concurrent)
			ready := make(chan struct{})
			var wg sync.WaitGroup
			for i := range concurrent {
				wg.Go(func() {
					<-ready
					outs[i] = do(via.env.HTTP, http.MethodGet, tc.url+"/hello", nil, nil, 3*routeTimeout)
				})
			}
			start := time.Now()
			close(ready)
			wg.Wait()
			all := time.Since(start)
			var took []string
			for i, o := range outs {
				took = append(took, o.took.Round(time.Millisecond).String())
				if o.status != http.StatusOK || o.body != "hello" || o.took >= routeTimeout {
					t.Errorf("GET %d: %v %q, want 200 \"hello\" within %v", i, o, o.body, routeTimeout)
				}
			}
			t.Logf("%d concurrent GETs via the %s: all done in %v; each took %s", concurrent, strings.ToLower(via.name), all.Round(time.Millisecond), strings.Join(took, " "))
		})
	}

	t.Run("DownloadViaNonHolder", func(t *testing.T) {
		const seed = "slow-redis"
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/download?n=%d&seed=%s", tc.url, download, seed), nil)
		resp, err := other.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK || err != nil || n != download {
			t.Fatalf("download: status %d, %d bytes (%v) after %v, want 200 and %d bytes", resp.StatusCode, n, err, took, download)
		}
		if got, want := hex.EncodeToString(h.Sum(nil)), generatedSum(seed, download); got != want {
			t.Errorf("download: sha256 %.16s…, the service wrote %.16s…", got, want)
		}
		t.Logf("1 MiB via the non-holder in %v (%.2f MB/s) with %v each way to Redis", took.Round(time.Millisecond), mbps(download, took), delay)
	})
}

// TestRoutingDisconnectRace: a request for a tunnel whose client has
// just gone is answered 502 at once, not after the timeout, whether the
// requesting instance still has the old route cached or the request was
// already with the local service; and a client that moves to the other
// instance is found through every instance without a GET failing.
func TestRoutingDisconnectRace(t *testing.T) {
	if testing.Short() {
		t.Skip("real Redis")
	}
	const (
		// The race below is narrow: 20 rounds met it in about one run of
		// three, 50 in most.
		rounds = 50
		prompt = time.Second // "at once": far below routeTimeout
	)
	rs := testenv.Redis(t)
	cfg := proxy.Config{Timeout: routeTimeout}
	regA := prometheus.NewRegistry()
	a := redisProxy(t, rs, proxy.Config{Timeout: routeTimeout, Metrics: regA})
	b := redisProxy(t, rs, cfg)

	t.Run("GoneWithRouteCached", func(t *testing.T) {
		var worst time.Duration
		for i := range rounds {
			body := "alive " + strconv.Itoa(i)
			tc := mustConnect(t, a, newKey(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, body)
			}))
			// B learns the route.
			if o := do(b.HTTP, http.MethodGet, tc.url+"/", nil, nil, 10*time.Second); o.status != http.StatusOK || o.body != body {
				t.Fatalf("round %d: via B before the disconnect: %v %q", i, o, o.body)
			}
			tc.stop()
			o := do(b.HTTP, http.MethodGet, tc.url+"/", nil, nil, 3*routeTimeout)
			worst = max(worst, o.took)
			if o.status != http.StatusBadGateway || o.took >= prompt {
				// A frame the holder could not queue for its client counts
				// as dropped there.
				t.Errorf("round %d: via B right after the disconnect: %v body %q, want 502 within %v (A's keyhole_dropped_messages_total %v)",
					i, o, o.body, prompt, metricValue(t, regA, "keyhole_dropped_messages_total"))
			}
		}
		t.Logf("%d rounds: slowest 502 took %v", rounds, worst.Round(time.Millisecond))
	})

	t.Run("GoneWhileAtService", func(t *testing.T) {
		var worst time.Duration
		for i := range rounds / 2 {
			entered := make(chan struct{}, 1)
			tc := mustConnect(t, a, newKey(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/block" {
					entered <- struct{}{}
					<-r.Context().Done()
					return
				}
				io.WriteString(w, "alive")
			}))
			if o := do(b.HTTP, http.MethodGet, tc.url+"/", nil, nil, 10*time.Second); o.status != http.StatusOK {
				t.Fatalf("round %d: via B before the disconnect: %v", i, o)
			}
			res := make(chan outcome, 1)
			go func() { res <- do(b.HTTP, http.MethodGet, tc.url+"/block", nil, nil, 3*routeTimeout) }()
			select {
			case <-entered:
			case o := <-res:
				t.Fatalf("round %d: /block answered %v before the service had it", i, o)
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: /block never reached the service", i)
			}
			stopped := time.Now()
			tc.stop()
			o := <-res
			since := time.Since(stopped)
			worst = max(worst, since)
			if o.status != http.StatusBadGateway || since >= prompt {
				t.Errorf("round %d: in flight at the service when the client stopped: %v body %q, %v after the stop; want 502 within %v", i, o, o.body, since.Round(time.Millisecond), prompt)
			}
		}
		t.Logf("%d rounds: slowest 502 came %v after the stop", rounds/2, worst.Round(time.Millisecond))
	})

	t.Run("HolderInstanceGone", func(t *testing.T) {
		// An instance that died without a word (kill -9) leaves its
		// registry entries until they expire, but nobody subscribes to its
		// topic any more. Closing its bus is that, in-process.
		dead, deadBus := routeProxy(t, rs.URL(), cfg)
		tc := mustConnect(t, dead, newKey(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "alive")
		}))
		if o := do(b.HTTP, http.MethodGet, tc.url+"/", nil, nil, 10*time.Second); o.status != http.StatusOK || o.body != "alive" {
			t.Fatalf("via B before the holder's bus closed: %v %q", o, o.body)
		}
		deadBus.Close()
		// A killed process's socket closes at once, and Redis drops its
		// subscription as soon as it reads the close; a request published
		// before that is lost with the instance (its visitor gets a 504).
		// From then on, nothing is lost.
		rdb := newRedisClient(rs.Addr, "keyhole-test")
		defer rdb.Close()
		topic := bus.InstanceTopic(dead.Proxy.Instance())
		tunneltest.Eventually(t, 5*time.Second, "Redis dropped the dead instance's subscription", func() bool {
			subs, err := rdb.PubSubNumSub(context.Background(), topic).Result()
			return err == nil && subs[topic] == 0
		})
		// The first GET meets B's cached route, the next ones the
		// registry's entry, which still names the dead instance; a POST is
		// never sent twice.
		for i, method := range []string{http.MethodGet, http.MethodGet, http.MethodPost} {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("posted")
			}
			o := do(b.HTTP, method, tc.url+"/", body, nil, 3*routeTimeout)
			t.Logf("%s %d via B, holder's instance gone: %v %q", method, i, o, o.body)
			if o.status != http.StatusBadGateway || o.took >= prompt {
				t.Errorf("%s %d via B, holder's instance gone: %v body %q, want 502 within %v", method, i, o, o.body, prompt)
			}
		}
	})

	t.Run("MovedToOtherInstance", func(t *testing.T) { testMoved(t, rs, a, b) })
}

// testMoved stops a client on A and starts one with the same key on B.
// A third instance C asked for the tunnel just before, so its cache still
// names the connection on A, which is gone with no successor: a GET
// through C finds that out and asks the registry again. From the new
// registration on, GETs through every instance must all succeed; a POST
// cannot be sent again (its body may have been read), so one that meets
// the stale route may fail, and is reported.
func testMoved(t *testing.T, rs *testenv.RedisServer, a, b *tunneltest.Env) {
	c := redisProxy(t, rs, proxy.Config{Timeout: routeTimeout})
	envs := map[string]*tunneltest.Env{"A": a, "B": b, "C": c}
	names := []string{"A", "B", "C"}
	const watch = 1500 * time.Millisecond // past the cache's 1 s

	for _, first := range []string{http.MethodGet, http.MethodPost} {
		t.Run("First"+first+"ViaC", func(t *testing.T) {
			key := newKey()
			h := func(name string) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					io.WriteString(w, name)
				})
			}
			old := mustConnect(t, a, key, h("A"))
			for _, n := range names {
				if o := do(envs[n].HTTP, http.MethodGet, old.url+"/", nil, nil, 10*time.Second); o.status != http.StatusOK || o.body != "A" {
					t.Fatalf("via %s before the move: %v %q", n, o, o.body)
				}
			}
			cached := time.Now()
			old.stop()
			moved := mustConnect(t, b, key, h("B"))
			registered := time.Now()
			// The URL's port is the instance's own listener; the hostname
			// is the key's.
			if hostname(moved.url) != hostname(old.url) {
				t.Fatalf("same key, URL %s then %s", old.url, moved.url)
			}
			// C's cached route lives a second from cached: the move must
			// be quicker for the first request to meet it.
			t.Logf("moved from A to B in %v after C learnt the route", registered.Sub(cached).Round(time.Millisecond))

			// The first request through C, while its cache names A's
			// connection.
			var body io.Reader
			if first == http.MethodPost {
				body = strings.NewReader("posted")
			}
			o := do(c.HTTP, first, moved.url+"/", body, nil, 3*routeTimeout)
			switch {
			case o.status == http.StatusOK && o.body == "B":
				t.Logf("first %s via C (stale route): %v", first, o)
			case first == http.MethodGet:
				t.Errorf("first GET via C (stale route): %v %q, want 200 from B", o, o.body)
			default:
				t.Logf("first POST via C (stale route) failed: %v %q; a request with a body is not sent again", o, o.body)
			}

			// Then every instance, GET and POST, until past the cache's
			// lifetime.
			var gets, posts, postFailures int
			var slowest time.Duration
			for time.Since(registered) < watch {
				for _, n := range names {
					o := do(envs[n].HTTP, http.MethodGet, moved.url+"/", nil, nil, 3*routeTimeout)
					gets++
					slowest = max(slowest, o.took)
					if o.status != http.StatusOK || o.body != "B" {
						t.Errorf("GET via %s %v after the move: %v %q, want 200 from B", n, time.Since(registered).Round(time.Millisecond), o, o.body)
					}
					o = do(envs[n].HTTP, http.MethodPost, moved.url+"/", strings.NewReader("posted"), nil, 3*routeTimeout)
					posts++
					if o.status != http.StatusOK || o.body != "B" {
						postFailures++
						t.Logf("POST via %s %v after the move: %v %q", n, time.Since(registered).Round(time.Millisecond), o, o.body)
					}
				}
			}
			t.Logf("after the move: %d GETs all 200 (slowest %v), %d POSTs with %d failures", gets, slowest.Round(time.Millisecond), posts, postFailures)
		})
	}
}

// TestRoutingRedisRestart: with clients on both instances, a restart of
// redis-server (which comes back empty) leaves every hostname in the
// registry again, and reachable through the instance that does not hold
// it, within 2 s of Redis answering PING. The ping interval is far longer
// than the test, so the periodic refresh is not what restores the
// registry; and the instances that do not hold a tunnel have never looked
// it up before the restart, so no cached route can stand in for the
// registry either.
func TestRoutingRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts redis-server")
	}
	const (
		perInstance = 5
		within      = 2 * time.Second
	)
	rs := testenv.Redis(t)
	cfg := proxy.Config{Timeout: routeTimeout, Ping: time.Minute}
	envs := []*tunneltest.Env{redisProxy(t, rs, cfg), redisProxy(t, rs, cfg)}
	type tunnel struct {
		url  string
		body string
		via  *tunneltest.Env // the instance that does not hold it
	}
	var tunnels []tunnel
	var tcs []*tunnelClient
	for i := range 2 * perInstance {
		body := "tunnel " + strconv.Itoa(i)
		tc := mustConnect(t, envs[i%2], newKey(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, body)
		}))
		tcs = append(tcs, tc)
		tunnels = append(tunnels, tunnel{url: tc.url, body: body, via: envs[(i+1)%2]})
	}
	for i, tn := range tunnels {
		holder := envs[i%2]
		if o := do(holder.HTTP, http.MethodGet, tn.url+"/", nil, nil, 10*time.Second); o.status != http.StatusOK || o.body != tn.body {
			t.Fatalf("tunnel %d via its holder before the restart: %v %q", i, o, o.body)
		}
	}

	stopped := time.Now()
	rs.Stop()
	rs.Start() // returns once Redis answers PING
	back := time.Now()
	t.Logf("redis-server down and up again in %v", back.Sub(stopped).Round(time.Millisecond))
	// The restarted server's cleanup runs before everything registered
	// earlier; the clients must release their hostnames while it is up.
	t.Cleanup(func() {
		for _, tc := range tcs {
			tc.stop()
		}
	})
	took := make([]time.Duration, len(tunnels))
	var wg sync.WaitGroup
	var registry time.Duration
	rdb := newRedisClient(rs.Addr, "keyhole-test")
	defer rdb.Close()
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*within)
		defer cancel()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			// Errors count as not yet: Redis has only just come back.
			if n, err := registryKeys(ctx, rdb); n == len(tunnels) && err == nil {
				break
			}
			select {
			case <-ctx.Done():
				registry = -1
				return
			case <-tick.C:
			}
		}
		registry = time.Since(back)
	})
	for i, tn := range tunnels {
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for time.Since(back) < 5*within {
				o := do(tn.via.HTTP, http.MethodGet, tn.url+"/", nil, nil, time.Second)
				if o.status == http.StatusOK && o.body == tn.body {
					took[i] = time.Since(back)
					return
				}
				<-tick.C
			}
			took[i] = -1
		})
	}
	wg.Wait()
	var worst time.Duration
	var all []string
	for i, d := range took {
		if d < 0 {
			t.Errorf("tunnel %d not reachable via the non-holder within %v of Redis answering", i, 5*within)
			continue
		}
		worst = max(worst, d)
		all = append(all, d.Round(time.Millisecond).String())
	}
	t.Logf("after the restart, reachable via the non-holder in %s; worst %v", strings.Join(all, " "), worst.Round(time.Millisecond))
	switch {
	case registry < 0:
		t.Errorf("the registry did not hold the %d hostnames again within %v", len(tunnels), 5*within)
	case registry > within:
		t.Errorf("the registry held the %d hostnames again after %v, want within %v", len(tunnels), registry.Round(time.Millisecond), within)
	default:
		t.Logf("the registry held all %d hostnames again after %v", len(tunnels), registry.Round(time.Millisecond))
	}
	if worst > within {
		t.Errorf("worst tunnel took %v to be reachable again, want within %v of Redis answering PING", worst.Round(time.Millisecond), within)
	}
}
