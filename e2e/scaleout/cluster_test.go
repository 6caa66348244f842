package scaleout_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
)

// Settings of every proxy process: short enough that the fault cases run
// in seconds.
const (
	pingInterval = time.Second
	proxyTimeout = 5 * time.Second
)

// cluster is redis-server, three proxy processes sharing it, nginx in
// front of them from deploy/nginx/keyhole.conf, and one tunnel client
// connected through nginx.
type cluster struct {
	t       *testing.T // the top-level test: processes live until it ends
	bin     string
	redis   *testenv.RedisServer
	proxies []*proxyProc
	nginx   *testenv.NginxServer
	// public dials nginx whatever the URL's host says.
	public *http.Client
	svc    *service
	tunnel *tunneltest.Tunnel
	// host is the tunnel's public host, "<label>.localhost:<nginx port>".
	host string
	// registrations counts the client's registrations, first included.
	registrations atomic.Int64
	registered    chan string
}

// proxyProc is one proxy process; restart starts it again on the same
// addresses.
type proxyProc struct {
	name   string
	listen string // 127.0.0.1:port
	admin  string // 127.0.0.1:port
	args   []string

	mu   sync.Mutex
	proc *testenv.Process
}

func (pp *proxyProc) process() *testenv.Process {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.proc
}

func startCluster(t *testing.T) *cluster {
	c := &cluster{t: t, registered: make(chan string, 64)}
	c.bin = testenv.Build(t, "github.com/keyhole-tunnel/keyhole/cmd/proxy")
	c.redis = testenv.Redis(t)
	nginxPort := testenv.FreePort(t)
	publicURL := "http://localhost:" + strconv.Itoa(nginxPort)
	for i := range 3 {
		pp := &proxyProc{
			name:   fmt.Sprintf("proxy%d", i+1),
			listen: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
			admin:  "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		}
		pp.args = []string{
			"--listen", pp.listen,
			"--admin", pp.admin,
			"--bus", c.redis.URL(),
			"--domain", "localhost",
			"--public-url", publicURL,
			"--ping", pingInterval.String(),
			"--timeout", proxyTimeout.String(),
			"--trusted-proxies", "127.0.0.1/32",
		}
		c.proxies = append(c.proxies, pp)
	}
	for _, pp := range c.proxies {
		c.start(pp)
	}
	for _, pp := range c.proxies {
		c.waitReady(t, pp, 15*time.Second)
	}

	c.nginx = testenv.Nginx(t, nginxConf(t, nginxPort, c.proxies), nginxPort)
	c.public = publicClient(c.nginx.Addr)
	t.Cleanup(c.public.CloseIdleConnections)

	c.svc = newService()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	env := &tunneltest.Env{T: t, Addr: c.nginx.Addr, HTTP: c.public}
	c.tunnel = env.Connect(&client.Client{
		Key:     key,
		Handler: c.svc,
		OnRegister: func(u string) {
			c.registrations.Add(1)
			select {
			case c.registered <- u:
			default:
			}
		},
	})
	c.host = c.tunnel.Host()
	<-c.registered // the first registration, which Connect waited for
	return c
}

// start starts (or restarts) a proxy process. Its cleanup belongs to the
// top-level test.
func (c *cluster) start(pp *proxyProc) {
	p := testenv.StartProcess(c.t, c.bin, pp.args, nil)
	pp.mu.Lock()
	pp.proc = p
	pp.mu.Unlock()
}

// waitReady waits until pp's /readyz answers 200.
func (c *cluster) waitReady(t *testing.T, pp *proxyProc, within time.Duration) {
	t.Helper()
	eventually(t, within, pp.name+" /readyz 200", func() bool {
		code, _ := adminGet(pp, "/readyz")
		return code == http.StatusOK
	})
}

// nginxConf is deploy/nginx/keyhole.conf with the upstream servers and the
// listen port replaced, and nothing else changed.
func nginxConf(t *testing.T, port int, proxies []*proxyProc) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nginx", "keyhole.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	upstreams := regexp.MustCompile(`(?s)(# --- upstream servers[^\n]*\n).*?(\s*# --- end of upstream servers ---)`)
	if n := len(upstreams.FindAllStringIndex(conf, -1)); n != 1 {
		t.Fatalf("keyhole.conf: %d upstream server sections, want 1", n)
	}
	// Each proxy gets the shipped server line's parameters (max_fails,
	// fail_timeout), so that the test runs what users run.
	params := regexp.MustCompile(`(?m)^\s*server \S+((?: [a-z_]+=\S+)*);`).FindStringSubmatch(conf)
	if params == nil {
		t.Fatal("keyhole.conf: no upstream server line")
	}
	var servers strings.Builder
	for _, pp := range proxies {
		fmt.Fprintf(&servers, "        server %s%s;\n", pp.listen, params[1])
	}
	conf = upstreams.ReplaceAllLiteralString(conf, "# --- upstream servers ---\n"+servers.String()+"        # --- end of upstream servers ---")
	listen := regexp.MustCompile(`(?m)^(\s*)listen 80;`)
	if n := len(listen.FindAllStringIndex(conf, -1)); n != 1 {
		t.Fatalf("keyhole.conf: %d \"listen 80;\" lines, want 1", n)
	}
	conf = listen.ReplaceAllString(conf, "${1}listen 127.0.0.1:"+strconv.Itoa(port)+";")
	return conf
}

// publicClient reaches addr for every URL, with no overall timeout: each
// request carries its own deadline, and WebSocket dials need none.
func publicClient(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// directClient reaches one proxy instance, bypassing nginx.
func directClient(pp *proxyProc) *http.Client { return publicClient(pp.listen) }

// adminGet fetches path from pp's admin listener; code 0 means no answer.
func adminGet(pp *proxyProc, path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pp.admin+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of an unlabelled metric from pp's /metrics, or
// -1 when pp does not answer.
func metric(pp *proxyProc, name string) float64 {
	code, body := adminGet(pp, "/metrics")
	if code != http.StatusOK {
		return -1
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// holder waits until exactly one live instance holds the client (its
// connected-clients gauge is 1 and every other live one's is 0), and
// returns it.
func (c *cluster) holder(t *testing.T, within time.Duration) *proxyProc {
	t.Helper()
	var h *proxyProc
	eventually(t, within, "exactly one instance holds the client", func() bool {
		h = nil
		for _, pp := range c.proxies {
			switch metric(pp, "keyhole_connected_clients") {
			case 1:
				if h != nil {
					return false
				}
				h = pp
			case 0, -1:
			default:
				return false
			}
		}
		return h != nil
	})
	return h
}

// others returns the instances other than pp.
func (c *cluster) others(pp *proxyProc) []*proxyProc {
	var out []*proxyProc
	for _, o := range c.proxies {
		if o != pp {
			out = append(out, o)
		}
	}
	return out
}

// url is the tunnel's public URL for path.
func (c *cluster) url(path string) string { return "http://" + c.host + path }

// outcome is one public request's result; status 0 means no response.
type outcome struct {
	status int
	body   string
	took   time.Duration
	err    error
}

// do sends one request through hc, bounded by limit.
func do(hc *http.Client, method, url string, body io.Reader, hdr http.Header, limit time.Duration) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return outcome{err: err}
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := hc.Do(req)
	if err != nil {
		return outcome{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return outcome{status: resp.StatusCode, body: string(b), took: time.Since(start), err: err}
}

func (o outcome) String() string {
	if o.status == 0 {
		return fmt.Sprintf("no response after %v: %v", o.took.Round(time.Millisecond), o.err)
	}
	return fmt.Sprintf("%d after %v", o.status, o.took.Round(time.Millisecond))
}

// waitFlowing polls the tunnel through hc until it answers 200 and returns
// how long that took.
func (c *cluster) waitFlowing(t *testing.T, hc *http.Client, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, within, "traffic flows through the tunnel", func() bool {
		return do(hc, http.MethodGet, c.url("/hello"), nil, nil, 3*time.Second).status == http.StatusOK
	})
	return time.Since(start)
}

// eventually polls cond every 20 ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		<-tick.C
	}
}

// service is the local service behind the tunnel.
type service struct {
	mux *http.ServeMux

	mu       sync.Mutex
	gate     chan struct{} // /slow waits for it to close
	inFlight atomic.Int64
}

// seen is what /echo reports about the request it got.
type seen struct {
	Method        string `json:"method"`
	Host          string `json:"host"`
	Body          string `json:"body"`
	XForwardedFor string `json:"xff"`
	XRealIP       string `json:"xrealip"`
	XFwdProto     string `json:"xfproto"`
	XFwdHost      string `json:"xfhost"`
}

func newService() *service {
	s := &service{mux: http.NewServeMux(), gate: make(chan struct{})}
	s.mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	})
	s.mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(seen{
			Method: r.Method, Host: r.Host, Body: string(b),
			XForwardedFor: strings.Join(r.Header.Values("X-Forwarded-For"), ", "),
			XRealIP:       r.Header.Get("X-Real-Ip"),
			XFwdProto:     r.Header.Get("X-Forwarded-Proto"),
			XFwdHost:      r.Header.Get("X-Forwarded-Host"),
		})
	})
	s.mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		gate := s.gate
		s.mu.Unlock()
		s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		select {
		case <-gate:
			io.WriteString(w, "slow ok")
		case <-r.Context().Done():
		}
	})
	s.mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		conn.SetReadLimit(1 << 20)
		ctx := r.Context()
		for {
			typ, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if err := conn.Write(ctx, typ, b); err != nil {
				return
			}
		}
	})
	return s
}

func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// hold makes /slow wait until the returned release is called.
func (s *service) hold() (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}
