package scaleout_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestScaleOut runs three proxy processes sharing one redis-server behind
// nginx (deploy/nginx/keyhole.conf), with one tunnel client connected
// through nginx, and drives traffic and faults through that setup. The
// subtests run in order and share it; each leaves the cluster serving.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	c := startCluster(t)

	t.Run("HTTPThroughNginx", func(t *testing.T) { testHTTPThroughNginx(t, c) })
	t.Run("WebSocketThroughNginx", func(t *testing.T) { testWebSocketThroughNginx(t, c) })
	t.Run("WebSocketAcrossInstances", func(t *testing.T) { testWebSocketAcrossInstances(t, c) })
	t.Run("WebSocketBlastAcrossInstances", func(t *testing.T) { testWebSocketBlast(t, c) })
	t.Run("RestartRedis", func(t *testing.T) { c.keepsClient(t, testRestartRedis) })
	t.Run("RedisDown", func(t *testing.T) { c.keepsClient(t, testRedisDown) })
	t.Run("RedisFrozen", func(t *testing.T) { c.keepsClient(t, testRedisFrozen) })
	t.Run("KillHolder", func(t *testing.T) { testKillHolder(t, c) })
	t.Run("RollingDeploy", func(t *testing.T) { testRollingDeploy(t, c) })
	t.Run("RollingRestartAll", func(t *testing.T) { testRollingRestartAll(t, c) })
}

// keepsClient runs a Redis fault case and checks that the tunnel client
// stayed connected all along: a Redis outage must not cost clients their
// connections.
func (c *cluster) keepsClient(t *testing.T, test func(*testing.T, *cluster)) {
	regs := c.registrations.Load()
	test(t, c)
	if n := c.registrations.Load() - regs; n != 0 {
		t.Errorf("the client registered %d more times; it should have stayed connected", n)
	}
}

// testHTTPThroughNginx: requests of several methods reach the service
// through nginx and every instance; the service sees the public Host with
// its port and the caller's address, and not an address the caller made
// up.
func testHTTPThroughNginx(t *testing.T, c *cluster) {
	before := make([]float64, len(c.proxies))
	for i, pp := range c.proxies {
		before[i] = metric(pp, `keyhole_requests_total{code="200"}`)
	}
	// nginx goes round-robin over the three instances.
	for i := range 9 {
		body := fmt.Sprintf("body %d", i)
		hdr := http.Header{"X-Forwarded-For": {"203.0.113.66"}, "X-Real-Ip": {"203.0.113.66"}}
		o := do(c.public, http.MethodPost, c.url("/echo"), strings.NewReader(body), hdr, 10*time.Second)
		if o.status != http.StatusOK {
			t.Fatalf("POST /echo: %v %s", o, o.body)
		}
		var s seen
		if err := json.Unmarshal([]byte(o.body), &s); err != nil {
			t.Fatalf("POST /echo: %v: %q", err, o.body)
		}
		if s.Method != http.MethodPost || s.Body != body {
			t.Errorf("service saw %s %q, want POST %q", s.Method, s.Body, body)
		}
		if s.Host != c.host {
			t.Errorf("service saw Host %q, want %q (port kept)", s.Host, c.host)
		}
		// nginx sets the caller's address; the proxy, trusting nginx,
		// keeps it and appends nginx's own.
		if s.XForwardedFor != "127.0.0.1, 127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want \"127.0.0.1, 127.0.0.1\" (caller, nginx)", s.XForwardedFor)
		}
		if s.XRealIP != "127.0.0.1" {
			t.Errorf("X-Real-Ip %q, want the caller's 127.0.0.1", s.XRealIP)
		}
		if s.XFwdProto != "http" || s.XFwdHost != c.host {
			t.Errorf("X-Forwarded-Proto %q, -Host %q; want http, %q", s.XFwdProto, s.XFwdHost, c.host)
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		o := do(c.public, m, c.url("/hello"), nil, nil, 10*time.Second)
		if o.status != http.StatusOK {
			t.Errorf("%s /hello: %v", m, o)
		}
	}
	for i, pp := range c.proxies {
		if got := metric(pp, `keyhole_requests_total{code="200"}`); got <= before[i] {
			t.Errorf("%s answered no request: nginx did not spread them", pp.name)
		}
	}
}

// wsDial opens a public WebSocket to the tunnel through hc.
func (c *cluster) wsDial(ctx context.Context, hc *http.Client) (*websocket.Conn, error) {
	conn, _, err := websocket.Dial(ctx, "ws://"+c.host+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	return conn, nil
}

func testWebSocketThroughNginx(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 3 { // one per instance, round-robin
		conn, err := c.wsDial(ctx, c.public)
		if err != nil {
			t.Fatalf("dial through nginx: %v", err)
		}
		for j := range 20 {
			msg := fmt.Sprintf("conn %d message %d", i, j)
			if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			typ, b, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if typ != websocket.MessageText || string(b) != msg {
				t.Fatalf("echo %v %q, want text %q", typ, b, msg)
			}
		}
		conn.Close(websocket.StatusNormalClosure, "")
	}
}

const streamMessages = 10_000

// numbered is message i of a stream: its number and some padding.
func numbered(i int) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint64(b, uint64(i))
	copy(b[8:], "keyhole scale-out ordering test")
	return b
}

// testWebSocketAcrossInstances: a visitor on one instance, the client held
// by another; 10,000 numbered messages come back in order, none lost or
// repeated. The sender keeps at most 100 unanswered, as an application
// with a window would.
func testWebSocketAcrossInstances(t *testing.T, c *cluster) {
	h := c.holder(t, 10*time.Second)
	for _, pp := range c.others(h)[:1] { // one is enough, and it takes a while under -race
		t.Run("via "+pp.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conn, err := c.wsDial(ctx, directClient(pp))
			if err != nil {
				t.Fatalf("dial %s: %v", pp.name, err)
			}
			defer conn.CloseNow()
			start := time.Now()
			const window = 100
			next := 0
			for sent := 0; sent < streamMessages; {
				for range window {
					if err := conn.Write(ctx, websocket.MessageBinary, numbered(sent)); err != nil {
						t.Fatalf("write %d: %v", sent, err)
					}
					sent++
				}
				for next < sent {
					_, b, err := conn.Read(ctx)
					if err != nil {
						t.Fatalf("read, expecting %d: %v", next, err)
					}
					if got := int(binary.BigEndian.Uint64(b)); got != next {
						t.Fatalf("got message %d, want %d: lost, repeated or reordered", got, next)
					}
					next++
				}
			}
			conn.Close(websocket.StatusNormalClosure, "")
			t.Logf("%d messages each way across instances (%s -> holder %s) in %v", streamMessages, pp.name, h.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// testWebSocketBlast sends 10,000 messages with no window at all, reading
// the echoes concurrently. Nothing applies back-pressure across the bus, so
// a stream may fail when a queue on the way overflows; what must never
// happen is a message lost, repeated or reordered on a stream that goes
// on, or a failure that is not a clean close.
func testWebSocketBlast(t *testing.T, c *cluster) {
	h := c.holder(t, 10*time.Second)
	pp := c.others(h)[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := c.wsDial(ctx, directClient(pp))
	if err != nil {
		t.Fatalf("dial %s: %v", pp.name, err)
	}
	defer conn.CloseNow()
	start := time.Now()
	writeErr := make(chan error, 1)
	go func() {
		for i := range streamMessages {
			if err := conn.Write(ctx, websocket.MessageBinary, numbered(i)); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	next := 0
	var readErr error
	for next < streamMessages {
		_, b, err := conn.Read(ctx)
		if err != nil {
			readErr = err
			break
		}
		if got := int(binary.BigEndian.Uint64(b)); got != next {
			t.Fatalf("got message %d, want %d: lost, repeated or reordered", got, next)
		}
		next++
	}
	if readErr == nil {
		t.Logf("blast: all %d messages echoed in order in %v", streamMessages, time.Since(start).Round(time.Millisecond))
		conn.Close(websocket.StatusNormalClosure, "")
		if err := <-writeErr; err != nil {
			t.Errorf("write: %v", err)
		}
		return
	}
	conn.CloseNow()
	<-writeErr
	code := websocket.CloseStatus(readErr)
	t.Logf("blast: stream closed after %d in-order echoes: %v", next, readErr)
	// An overflowing queue fails the stream with a close code that says so:
	// 1008 from the proxy's stream queue, 1013 from the client's.
	if code != websocket.StatusPolicyViolation && code != websocket.StatusTryAgainLater {
		t.Errorf("stream ended with %v, want a clean close (1008 or 1013)", readErr)
	}
}

// testRestartRedis: redis-server restarts empty; every instance recovers
// its subscriptions and re-announces its hostnames, with no proxy
// restarted, and traffic flows within 10 s of Redis being back.
func testRestartRedis(t *testing.T, c *cluster) {
	h := c.holder(t, 10*time.Second)
	reannounced := make([]int, len(c.proxies))
	for i, pp := range c.proxies {
		reannounced[i] = strings.Count(pp.process().Stderr(), "re-announced hostnames")
	}
	c.redis.Stop()
	c.redis.Start()
	back := time.Now()
	// Through every instance, not only the holder.
	for _, pp := range c.proxies {
		c.waitFlowing(t, directClient(pp), 10*time.Second-time.Since(back))
	}
	took := time.Since(back)
	t.Logf("traffic flows through every instance %v after Redis came back (holder %s)", took.Round(time.Millisecond), h.name)
	for i, pp := range c.proxies {
		eventually(t, 5*time.Second, pp.name+" re-announced its hostnames", func() bool {
			return strings.Count(pp.process().Stderr(), "re-announced hostnames") > reannounced[i]
		})
	}
	c.waitFlowing(t, c.public, 5*time.Second)
}

// testRedisDown: while Redis is stopped, every instance reports not ready
// and public requests get 503 promptly; once it is back, everything
// recovers by itself.
func testRedisDown(t *testing.T, c *cluster) {
	c.redis.Stop()
	stopped := time.Now()
	for _, pp := range c.proxies {
		eventually(t, 5*time.Second, pp.name+" /readyz 503", func() bool {
			code, _ := adminGet(pp, "/readyz")
			return code == http.StatusServiceUnavailable
		})
		if code, body := adminGet(pp, "/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz %d %q while Redis is down, want 200", pp.name, code, body)
		}
	}
	t.Logf("every instance not ready %v after Redis stopped", time.Since(stopped).Round(time.Millisecond))
	checkPrompt503(t, c)
	c.redis.Start()
	back := time.Now()
	for _, pp := range c.proxies {
		c.waitReady(t, pp, 10*time.Second)
	}
	c.waitFlowing(t, c.public, 10*time.Second-time.Since(back))
	t.Logf("ready and flowing %v after Redis came back", time.Since(back).Round(time.Millisecond))
}

// checkPrompt503 sends requests, through nginx and to each instance, and
// wants each answered 503 in under 3 s.
func checkPrompt503(t *testing.T, c *cluster) {
	t.Helper()
	clients := []*http.Client{c.public, c.public, c.public}
	for _, pp := range c.proxies {
		clients = append(clients, directClient(pp))
	}
	var wg sync.WaitGroup
	results := make([]outcome, len(clients))
	for i, hc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = do(hc, http.MethodGet, c.url("/hello"), nil, nil, 10*time.Second)
		}()
	}
	wg.Wait()
	var worst time.Duration
	for _, o := range results {
		if o.status != http.StatusServiceUnavailable || o.took >= 3*time.Second {
			t.Errorf("request while Redis is unreachable: %v, want 503 in under 3s", o)
		}
		worst = max(worst, o.took)
	}
	// A WebSocket upgrade too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, resp, err := websocket.Dial(ctx, "ws://"+c.host+"/ws", &websocket.DialOptions{HTTPClient: c.public})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || time.Since(start) >= 3*time.Second {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Errorf("WebSocket while Redis is unreachable: status %d, err %v after %v; want 503 in under 3s", status, err, time.Since(start))
	}
	t.Logf("slowest 503 while Redis was unreachable: %v", worst.Round(time.Millisecond))
}

// testRedisFrozen: a Redis that accepts connections but answers nothing
// (SIGSTOP) must not hang public requests either.
func testRedisFrozen(t *testing.T, c *cluster) {
	pid := c.redis.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer resume()
	for _, pp := range c.proxies {
		eventually(t, 5*time.Second, pp.name+" /readyz 503", func() bool {
			code, _ := adminGet(pp, "/readyz")
			return code == http.StatusServiceUnavailable
		})
	}
	checkPrompt503(t, c)
	resume()
	back := time.Now()
	for _, pp := range c.proxies {
		c.waitReady(t, pp, 10*time.Second)
	}
	c.waitFlowing(t, c.public, 10*time.Second)
	for _, pp := range c.proxies {
		c.waitFlowing(t, directClient(pp), 10*time.Second)
	}
	t.Logf("ready and flowing %v after Redis resumed", time.Since(back).Round(time.Millisecond))
}

// testKillHolder: kill -9 the instance holding the client. The client
// reconnects through nginx to another instance with the same hostname;
// requests meanwhile get 502 or 504, never hang; traffic flows again within
// 30 s.
func testKillHolder(t *testing.T, c *cluster) {
	h := c.holder(t, 10*time.Second)
	url := c.tunnel.URL
	for len(c.registered) > 0 {
		<-c.registered
	}
	regs := c.registrations.Load()

	// Requests all along, through nginx.
	stop := make(chan struct{})
	var mu sync.Mutex
	var during []outcome
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				o := do(c.public, http.MethodGet, c.url("/hello"), nil, nil, proxyTimeout+5*time.Second)
				mu.Lock()
				during = append(during, o)
				mu.Unlock()
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	if err := h.process().Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var newURL string
	select {
	case newURL = <-c.registered:
	case <-time.After(30 * time.Second):
		t.Fatal("the client did not register again within 30s")
	}
	reconnected := time.Since(killed)
	if newURL != url {
		t.Errorf("registered again as %s, want the same %s", newURL, url)
	}
	if n := c.registrations.Load(); n != regs+1 {
		t.Errorf("%d registrations after the kill, want 1", n-regs)
	}
	c.waitFlowing(t, c.public, 30*time.Second-time.Since(killed))
	flowing := time.Since(killed)
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close

	counts := map[int]int{}
	for _, o := range during {
		counts[o.status]++
		switch o.status {
		case http.StatusOK, http.StatusBadGateway, http.StatusGatewayTimeout:
		default:
			t.Errorf("request during failover: %v, want 200, 502 or 504", o)
		}
	}
	t.Logf("kill -9 %s: client registered again after %v, traffic flowing after %v; requests meanwhile by status: %v",
		h.name, reconnected.Round(time.Millisecond), flowing.Round(time.Millisecond), counts)

	nh := c.holder(t, 10*time.Second)
	if nh == h {
		t.Fatalf("%s holds the client after being killed", h.name)
	}
	// Bring the instance back for the next case.
	if code, err := h.process().Wait(context.Background()); err != nil || code != -1 {
		t.Errorf("killed proxy: exit code %d, %v", code, err)
	}
	c.start(h)
	c.waitReady(t, h, 15*time.Second)
}

// testRollingDeploy: SIGTERM the instance holding the client while
// requests are in flight on it, both as the public side and as the
// client's side. It stops accepting, tells the client to move, finishes
// those requests and exits 0 within its timeout; the client moves through
// nginx to another instance, and no request sent before the SIGTERM fails.
func testRollingDeploy(t *testing.T, c *cluster) {
	h := c.holder(t, 10*time.Second)
	release := c.svc.hold()
	defer release()

	// Slow requests through every instance (so some are in flight on h as
	// the public side) and through nginx, all reaching the client on h.
	type slow struct {
		via string
		o   outcome
	}
	var slows []slow
	var slowMu sync.Mutex
	var wg sync.WaitGroup
	launch := func(via string, hc *http.Client) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := do(hc, http.MethodGet, c.url("/slow"), nil, nil, 30*time.Second)
			slowMu.Lock()
			slows = append(slows, slow{via, o})
			slowMu.Unlock()
		}()
	}
	n := 0
	for _, pp := range c.proxies {
		for range 2 {
			launch(pp.name, directClient(pp))
			n++
		}
	}
	for range 3 {
		launch("nginx", c.public)
		n++
	}
	eventually(t, 10*time.Second, "slow requests in flight at the service", func() bool {
		return c.svc.inFlight.Load() == int64(n)
	})

	// Steady load through nginx, before and after the SIGTERM.
	type timed struct {
		start time.Time
		o     outcome
	}
	stop := make(chan struct{})
	var load []timed
	var loadMu sync.Mutex
	var lwg sync.WaitGroup
	for range 2 {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				o := do(c.public, http.MethodGet, c.url("/hello"), nil, nil, 15*time.Second)
				loadMu.Lock()
				load = append(load, timed{start, o})
				loadMu.Unlock()
			}
		}()
	}
	eventually(t, 5*time.Second, "load running", func() bool {
		loadMu.Lock()
		defer loadMu.Unlock()
		return len(load) >= 10
	})

	regs := c.registrations.Load()
	proc := h.process()
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sigterm := time.Now()

	// While draining, the instance reports not ready.
	sawDraining := false
	for !sawDraining && time.Since(sigterm) < 5*time.Second {
		code, body := adminGet(h, "/readyz")
		if code == 0 {
			break // gone already
		}
		sawDraining = code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	}
	if !sawDraining {
		t.Errorf("%s never reported draining on /readyz", h.name)
	}
	eventually(t, 10*time.Second, "the client registered on another instance", func() bool {
		return c.registrations.Load() > regs
	})
	moved := time.Since(sigterm)
	select {
	case <-proc.Done():
		t.Errorf("%s exited with requests in flight", h.name)
	default:
	}
	release()
	wg.Wait()
	for _, s := range slows {
		if s.o.status != http.StatusOK || s.o.body != "slow ok" {
			t.Errorf("slow request via %s, in flight at SIGTERM: %v %q; want 200", s.via, s.o, s.o.body)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), proxyTimeout+10*time.Second)
	defer cancel()
	code, err := proc.Wait(ctx)
	exited := time.Since(sigterm)
	if err != nil || code != 0 {
		t.Fatalf("%s after SIGTERM: exit code %d, %v; want 0", h.name, code, err)
	}
	if exited > proxyTimeout+5*time.Second {
		t.Errorf("%s took %v to exit, over its grace of timeout+5s", h.name, exited)
	}
	nh := c.holder(t, 10*time.Second)
	if nh == h {
		t.Fatalf("%s still holds the client", h.name)
	}
	c.waitFlowing(t, c.public, 10*time.Second)
	close(stop)
	lwg.Wait()

	var before, after, afterFailed int
	for _, l := range load {
		if l.start.Before(sigterm) {
			before++
			if l.o.status != http.StatusOK {
				t.Errorf("request sent %v before SIGTERM: %v", sigterm.Sub(l.start).Round(time.Millisecond), l.o)
			}
			continue
		}
		after++
		if l.o.status != http.StatusOK {
			afterFailed++
			t.Errorf("request sent %v after SIGTERM: %v", l.start.Sub(sigterm).Round(time.Millisecond), l.o)
		}
	}
	t.Logf("SIGTERM %s: client on %s after %v, exit 0 after %v; %d slow requests in flight all 200; load: %d before, %d after (%d failed)",
		h.name, nh.name, moved.Round(time.Millisecond), exited.Round(time.Millisecond), n, before, after, afterFailed)
}

// testRollingRestartAll restarts every proxy in turn, as a rolling deploy
// does, waiting at each step only until the new process answers /readyz,
// under steady load through the shipped nginx config: not one request may
// fail, and the tunnel is never offline.
func testRollingRestartAll(t *testing.T, c *cluster) {
	// Every proxy up first: an earlier case may have stopped one.
	for _, pp := range c.proxies {
		select {
		case <-pp.process().Done():
			c.start(pp)
		default:
		}
	}
	for _, pp := range c.proxies {
		c.waitReady(t, pp, 15*time.Second)
	}
	type result struct {
		what  string
		start time.Time
		o     outcome
	}
	stop := make(chan struct{})
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	// GETs, and POSTs with a body: nginx may not retry a POST, so these
	// are the ones a drain that closes connections too early would fail.
	worker := func(what string, req func(i int) outcome, check func(i int, o outcome) bool) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			o := req(i)
			if !check(i, o) {
				o.status = -o.status // marks a wrong answer
			}
			mu.Lock()
			results = append(results, result{what, start, o})
			mu.Unlock()
		}
	}
	for range 2 {
		wg.Add(1)
		go worker("GET /hello", func(int) outcome {
			return do(c.public, http.MethodGet, c.url("/hello"), nil, nil, 20*time.Second)
		}, func(_ int, o outcome) bool { return o.status == http.StatusOK && o.body == "hello" })
	}
	for range 2 {
		wg.Add(1)
		go worker("POST /echo", func(i int) outcome {
			return do(c.public, http.MethodPost, c.url("/echo"), strings.NewReader(fmt.Sprintf("body %d", i)), nil, 20*time.Second)
		}, func(i int, o outcome) bool {
			var s seen
			return o.status == http.StatusOK && json.Unmarshal([]byte(o.body), &s) == nil && s.Body == fmt.Sprintf("body %d", i)
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(results)
	}
	eventually(t, 10*time.Second, "load running", func() bool { return count() >= 20 })

	for _, pp := range c.proxies {
		step := time.Now()
		if err := pp.process().Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		code, err := pp.process().Wait(ctx)
		cancel()
		if err != nil || code != 0 {
			t.Fatalf("%s after SIGTERM: exit %d, %v", pp.name, code, err)
		}
		c.start(pp)
		c.waitReady(t, pp, 15*time.Second)
		t.Logf("%s restarted and ready in %v; %d requests so far", pp.name, time.Since(step).Round(time.Millisecond), count())
	}
	// A little more load against the all-new fleet.
	n := count()
	eventually(t, 10*time.Second, "load after the restarts", func() bool { return count() >= n+20 })
	close(stop)
	wg.Wait()

	failed := 0
	for _, r := range results {
		if r.o.status != http.StatusOK {
			failed++
			if failed <= 10 {
				t.Errorf("%s at %s: %v", r.what, r.start.Format("15:04:05.000"), r.o)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed during the rolling restart", failed, len(results))
	}
	t.Logf("rolling restart of %d proxies: %d requests, %d failed", len(c.proxies), len(results), failed)
}
