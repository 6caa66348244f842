package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/bus"
	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/testcert"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

func TestLoadCertFilesRefuses(t *testing.T) {
	ca := testcert.NewCA(t)
	const domain = "tunnel.example.com"
	good := ca.Issue(t, time.Time{}, domain, "*."+domain)
	other := ca.Issue(t, time.Time{}, domain, "*."+domain)
	for _, tc := range []struct {
		name string
		cert *testcert.Leaf
		key  []byte // default: the certificate's own
		want string // in the error
	}{
		{"key of another certificate", good, other.KeyPEM, "private key does not match"},
		{"apex only", ca.Issue(t, time.Time{}, domain), nil, "does not cover *.tunnel.example.com"},
		{"wildcard only", ca.Issue(t, time.Time{}, "*."+domain), nil, "does not cover tunnel.example.com"},
		{"another domain", ca.Issue(t, time.Time{}, "example.org", "*.example.org"), nil, "(it names example.org, *.example.org)"},
		{"wildcard one level too deep", ca.Issue(t, time.Time{}, domain, "*.x."+domain), nil, "does not cover *.tunnel.example.com"},
		{"expired", ca.Issue(t, time.Now().Add(-time.Minute), domain, "*."+domain), nil, "expired"},
		{"not PEM", &testcert.Leaf{CertPEM: []byte("hello")}, good.KeyPEM, "failed to find any PEM data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == nil {
				key = tc.cert.KeyPEM
			}
			cf, kf := testcert.WriteFiles(t, t.TempDir(), tc.cert.CertPEM, key)
			// The domain as a user might type it: case and a trailing dot
			// do not matter.
			_, err := proxy.LoadCertFiles(proxy.CertFiles{CertFile: cf, KeyFile: kf, Domain: "Tunnel.Example.com."})
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line containing %q", err, tc.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		dir := t.TempDir()
		_, err := proxy.LoadCertFiles(proxy.CertFiles{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), Domain: domain})
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %v, want a not-exist error", err)
		}
	})
	t.Run("good", func(t *testing.T) {
		cf, kf := testcert.WriteFiles(t, t.TempDir(), good.CertPEM, good.KeyPEM)
		r, err := proxy.LoadCertFiles(proxy.CertFiles{CertFile: cf, KeyFile: kf, Domain: domain})
		if err != nil {
			t.Fatal(err)
		}
		if r.Leaf().SerialNumber.Cmp(good.Cert.SerialNumber) != 0 {
			t.Fatal("serves another certificate")
		}
	})
}

// logRecorder is a slog.Handler that keeps warnings, as message and
// attributes.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			msg += " " + a.String()
			return true
		})
		l.mu.Lock()
		l.msgs = append(l.msgs, msg)
		l.mu.Unlock()
	}
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }
func (l *logRecorder) warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

func TestCertReloader(t *testing.T) {
	ca := testcert.NewCA(t)
	issue := func() *testcert.Leaf { return ca.Issue(t, time.Time{}, "localhost", "*.localhost") }
	dir := t.TempDir()
	first := issue()
	cf, kf := testcert.WriteFiles(t, dir, first.CertPEM, first.KeyPEM)
	logs := &logRecorder{}
	r, err := proxy.LoadCertFiles(proxy.CertFiles{CertFile: cf, KeyFile: kf, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	serving := func() *x509.Certificate {
		c, err := r.GetCertificate(&tls.ClientHelloInfo{ServerName: "x.localhost"})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	isServing := func(l *testcert.Leaf) bool { return serving().SerialNumber.Cmp(l.Cert.SerialNumber) == 0 }
	if !isServing(first) {
		t.Fatal("not serving the loaded certificate")
	}

	t.Run("reload", func(t *testing.T) {
		second := issue()
		testcert.WriteFiles(t, dir, second.CertPEM, second.KeyPEM)
		if err := r.Reload(); err != nil {
			t.Fatal(err)
		}
		if !isServing(second) {
			t.Fatal("Reload did not switch to the new certificate")
		}
	})
	t.Run("bad file at reload keeps the old certificate", func(t *testing.T) {
		before := serving()
		testcert.WriteFiles(t, dir, issue().CertPEM, issue().KeyPEM) // mismatched
		err := r.Reload()
		if err == nil || !strings.Contains(err.Error(), "keeping the current certificate") {
			t.Fatalf("Reload of a mismatched pair: %v", err)
		}
		if serving().SerialNumber.Cmp(before.SerialNumber) != 0 {
			t.Fatal("a bad file replaced the certificate")
		}
	})
	t.Run("watch", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.Watch(ctx, 10*time.Millisecond)
		}()
		defer func() { cancel(); <-done }()

		third := issue()
		testcert.WriteFiles(t, dir, third.CertPEM, third.KeyPEM)
		tunneltest.Eventually(t, 5*time.Second, "Watch loads the changed files", func() bool { return isServing(third) })

		// A certificate for another domain is refused, logged once
		// however many polls see it, and the current one stays. (A poll
		// between the two renames may first see a mismatched pair, which
		// is refused and logged too.)
		wrong := ca.Issue(t, time.Time{}, "example.org", "*.example.org")
		testcert.WriteFiles(t, dir, wrong.CertPEM, wrong.KeyPEM)
		refused := func() bool {
			w := logs.warnings()
			return len(w) > 0 && strings.Contains(w[len(w)-1], "keeping the current certificate") && strings.Contains(w[len(w)-1], "does not cover localhost")
		}
		tunneltest.Eventually(t, 5*time.Second, "Watch reports the refused files", refused)
		n := len(logs.warnings())
		// Many more polls pass; none may log again.
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) {
			if !isServing(third) {
				t.Fatal("a refused file replaced the certificate")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if w := logs.warnings(); len(w) != n {
			t.Fatalf("the same refused files were reported again: %q", w[n-1:])
		}

		// Fixing the files is picked up.
		fourth := issue()
		testcert.WriteFiles(t, dir, fourth.CertPEM, fourth.KeyPEM)
		tunneltest.Eventually(t, 5*time.Second, "Watch loads the fixed files", func() bool { return isServing(fourth) })
	})
}

func TestHostPolicy(t *testing.T) {
	m := bus.NewMemory()
	t.Cleanup(func() { m.Close() })
	p, err := proxy.New(context.Background(), proxy.Config{Domain: "tunnel.example.com", Bus: m, Registry: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	ctx := context.Background()
	online, offline := strings.Repeat("a", 52), strings.Repeat("b", 52)
	if _, err := m.Claim(ctx, online, "someone", time.Minute); err != nil {
		t.Fatal(err)
	}
	// A friendly name counts while some key holds it.
	if _, _, err := m.ClaimOrdered(ctx, "myapp", "0000000000000001|someone", time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"tunnel.example.com", true},
		{"TUNNEL.example.com.", true},
		{"tunnel.example.com:443", true},
		{online + ".tunnel.example.com", true},
		{strings.ToUpper(online) + ".tunnel.example.com.:443", true},
		{offline + ".tunnel.example.com", false},
		{"www.tunnel.example.com", false},
		{"myapp.tunnel.example.com", true},
		{"otherapp.tunnel.example.com", false},
		{"tunnel.tunnel.example.com", false}, // reserved: the domain's first label
		{"x." + online + ".tunnel.example.com", false},
		{online + ".example.com", false},
		{"example.com", false},
		{"tunnel.example.com.evil.org", false},
		{"", false},
	} {
		err := p.HostPolicy(ctx, tc.host)
		if (err == nil) != tc.ok {
			t.Errorf("HostPolicy(%q) = %v, want allowed %v", tc.host, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), tc.host) && tc.host != "" {
			t.Errorf("HostPolicy(%q) error names the host: %q", tc.host, err)
		}
	}
	if _, err := p.ACMEManager(proxy.ACMEConfig{}); err == nil {
		t.Error("ACMEManager without a cache succeeded")
	}
	mgr, err := p.ACMEManager(proxy.ACMEConfig{Cache: autocert.DirCache(t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	if mgr.Client.DirectoryURL != proxy.LetsEncryptURL {
		t.Errorf("default directory %q", mgr.Client.DirectoryURL)
	}
	if err := mgr.HostPolicy(ctx, offline+".tunnel.example.com"); err == nil {
		t.Error("the manager's policy is not the proxy's")
	}
}

func TestTLSConfigDefaults(t *testing.T) {
	c := proxy.TLSConfig(nil)
	if c.MinVersion != tls.VersionTLS12 || !slices.Equal(c.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("TLSConfig: min version %x, protocols %q", c.MinVersion, c.NextProtos)
	}
	a := proxy.ACMETLSConfig(&autocert.Manager{})
	if a.MinVersion != tls.VersionTLS12 || !slices.Equal(a.NextProtos, []string{"h2", "http/1.1", acme.ALPNProto}) {
		t.Errorf("ACMETLSConfig: min version %x, protocols %q", a.MinVersion, a.NextProtos)
	}
}

// tlsEnv is a proxy on a TLS listener with a wildcard certificate for
// localhost and *.localhost from a private CA, served as cmd/proxy serves
// it.
type tlsEnv struct {
	*tunneltest.Env
	CA   *testcert.CA
	Port string
}

func startTLSProxy(t *testing.T, wrap func(http.Handler) http.Handler) *tlsEnv {
	t.Helper()
	ca := testcert.NewCA(t)
	leaf := ca.Issue(t, time.Time{}, "localhost", "*.localhost")
	cf, kf := testcert.WriteFiles(t, t.TempDir(), leaf.CertPEM, leaf.KeyPEM)
	r, err := proxy.LoadCertFiles(proxy.CertFiles{CertFile: cf, KeyFile: kf})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	p, err := proxy.New(context.Background(), proxy.Config{PublicURL: "https://localhost:" + port, Logger: tunneltest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = p
	if wrap != nil {
		h = wrap(p)
	}
	cfg := proxy.TLSConfig(r.GetCertificate)
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: proxy.MaxHeaderBytes}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tls.NewListener(ln, cfg))
	}()
	e := &tlsEnv{Env: &tunneltest.Env{T: t, Proxy: p, Addr: ln.Addr().String()}, CA: ca, Port: port}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		srv.Close()
		<-done
	})
	return e
}

// connect registers an in-process client over wss:// that trusts the CA.
func (e *tlsEnv) connect(h http.Handler) *tunneltest.Tunnel {
	return e.Connect(&client.Client{
		Proxy:     "wss://localhost:" + e.Port,
		Handler:   h,
		TLSConfig: &tls.Config{RootCAs: e.CA.Pool()},
	})
}

// httpsClient dials the proxy whatever the URL's host, trusts the CA, and
// offers HTTP/2. serverName, when set, is the SNI instead of the URL's
// host.
func (e *tlsEnv) httpsClient(serverName string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, e.Addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: e.CA.Pool(), ServerName: serverName},
		ForceAttemptHTTP2: true,
	}
	e.T.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func tlsGet(t *testing.T, c *http.Client, rawURL, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func tlsEcho() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello " + r.Host + " " + r.Header.Get("X-Forwarded-Proto")))
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			c.Write(r.Context(), typ, b)
		}
	})
	return mux
}

// TestTLSListener runs a tunnel whose client connects over wss:// and
// whose visitors use HTTPS: HTTP/2 for requests, HTTP/1.1 for WebSockets.
func TestTLSListener(t *testing.T) {
	e := startTLSProxy(t, func(h http.Handler) http.Handler { return proxy.HSTS(h, 365*24*time.Hour) })
	tun := e.connect(tlsEcho())
	if !strings.HasPrefix(tun.URL, "https://") || !strings.HasSuffix(tun.URL, ".localhost:"+e.Port) {
		t.Fatalf("public URL %q, want https://<hostname>.localhost:%s", tun.URL, e.Port)
	}
	c := e.httpsClient("")

	t.Run("http2 through the tunnel", func(t *testing.T) {
		resp, body := tlsGet(t, c, tun.URL+"/hello", "")
		if resp.StatusCode != 200 || body != "hello "+tun.Host()+" https" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("protocol %s, want HTTP/2", resp.Proto)
		}
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Errorf("Strict-Transport-Security %q", got)
		}
	})
	t.Run("websocket through the tunnel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(tun.URL, "https")+"/ws", &websocket.DialOptions{HTTPClient: c})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if resp.ProtoMajor != 1 {
			t.Errorf("upgrade over %s", resp.Proto)
		}
		for _, m := range []string{"one", "two"} {
			if err := ws.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
				t.Fatal(err)
			}
			_, b, err := ws.Read(ctx)
			if err != nil || string(b) != m {
				t.Fatalf("echo %q: %q %v", m, b, err)
			}
		}
		ws.Close(websocket.StatusNormalClosure, "")
	})
	t.Run("no TLS 1.1", func(t *testing.T) {
		conn, err := tls.Dial("tcp", e.Addr, &tls.Config{RootCAs: e.CA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
	t.Run("421 when SNI and Host name different hosts", func(t *testing.T) {
		other := e.connect(tlsEcho())
		apex := "localhost:" + e.Port
		for _, tc := range []struct {
			name      string
			sni, host string
			want      int
		}{
			{"other tunnel", tun.Host(), other.Host(), http.StatusMisdirectedRequest},
			{"apex connection, tunnel host", "localhost", other.Host(), http.StatusMisdirectedRequest},
			{"tunnel connection, apex host", tun.Host(), apex, http.StatusMisdirectedRequest},
			{"unknown name, tunnel host", "nothing.localhost", tun.Host(), http.StatusMisdirectedRequest},
			{"same tunnel, other case and no port", tun.Host(), strings.ToUpper(strings.Split(tun.Host(), ":")[0]), http.StatusOK},
			{"apex", "localhost", apex, http.StatusOK},
			{"no tunnel involved", "www.localhost", apex, http.StatusOK}, // a reserved name
		} {
			t.Run(tc.name, func(t *testing.T) {
				sni, _, err := net.SplitHostPort(tc.sni)
				if err != nil {
					sni = tc.sni
				}
				// "/" is the landing page on the apex, and tlsEcho's
				// answer on a tunnel.
				resp, body := tlsGet(t, e.httpsClient(sni), "https://"+apex+"/", tc.host)
				if resp.StatusCode != tc.want {
					t.Fatalf("SNI %s, Host %s: %d %q, want %d", sni, tc.host, resp.StatusCode, body, tc.want)
				}
			})
		}
	})
}

func TestRedirectHTTPS(t *testing.T) {
	p, err := proxy.New(context.Background(), proxy.Config{Domain: "tunnel.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	label := strings.Repeat("c", 52)
	for _, tc := range []struct {
		port, method, target, host string
		status                     int
		location                   string
	}{
		{"8443", "GET", "/a/b?c=d", label + ".tunnel.example.com", 308, "https://" + label + ".tunnel.example.com:8443/a/b?c=d"},
		{"443", "POST", "/form", strings.ToUpper(label) + ".Tunnel.Example.com:80", 308, "https://" + label + ".tunnel.example.com/form"},
		{"", "HEAD", "/", "tunnel.example.com", 308, "https://tunnel.example.com/"},
		{"443", "GET", "/", "example.org", 404, ""},
		{"443", "GET", "/", "www.tunnel.example.com", 404, ""},
	} {
		req := httptest.NewRequest(tc.method, "http://"+tc.host+tc.target, nil)
		rec := httptest.NewRecorder()
		p.RedirectHTTPS(tc.port).ServeHTTP(rec, req)
		if rec.Code != tc.status || rec.Header().Get("Location") != tc.location {
			t.Errorf("%s http://%s%s: %d Location %q, want %d %q", tc.method, tc.host, tc.target, rec.Code, rec.Header().Get("Location"), tc.status, tc.location)
		}
	}
}

func TestHSTSOnlyOverTLS(t *testing.T) {
	h := proxy.HSTS(http.NotFoundHandler(), 24*time.Hour)
	req := httptest.NewRequest("GET", "http://localhost/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("Strict-Transport-Security"); got != "" {
		t.Errorf("plain HTTP got Strict-Transport-Security %q", got)
	}
	req.TLS = &tls.ConnectionState{ServerName: "localhost"}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("Strict-Transport-Security"); got != "max-age=86400" {
		t.Errorf("HTTPS got Strict-Transport-Security %q", got)
	}
}
