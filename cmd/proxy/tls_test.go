package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/internal/testcert"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// TLS tests run the built proxy and client: the point is what the flags
// do. A test client reaches every name through 127.0.0.1, with the name
// still in SNI and Host, so no DNS is involved.

// tlsLocal is the local service behind the tunnels: "/" says hello with
// the Host and X-Forwarded-Proto it got, "/ws" echoes WebSocket messages.
func tlsLocal(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Host+" "+r.Header.Get("X-Forwarded-Proto"))
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
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// httpsVia returns a client that connects to addr whatever the URL's host,
// trusting roots, with HTTP/2 offered. Each client has its own connections.
func httpsVia(t *testing.T, addr string, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type tlsResult struct {
	status int
	proto  int
	header http.Header
	body   string
	serial *big.Int // of the certificate the connection was made with
}

func httpsGet(t *testing.T, c *http.Client, rawURL, host string) tlsResult {
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
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := tlsResult{status: resp.StatusCode, proto: resp.ProtoMajor, header: resp.Header, body: string(b)}
	if resp.TLS != nil {
		r.serial = resp.TLS.PeerCertificates[0].SerialNumber
	}
	return r
}

// handshake makes a fresh TLS connection to addr for serverName and
// returns the leaf certificate it got.
func handshake(addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: serverName, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitHandshake waits until a handshake for serverName at addr succeeds,
// failing the test if p exits first or 20 s pass.
func waitHandshake(t *testing.T, p *testenv.Process, addr, serverName string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		leaf, err := handshake(addr, serverName, roots)
		if err == nil {
			return leaf
		}
		select {
		case <-p.Done():
			t.Fatalf("proxy exited; stderr:\n%s", p.Stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS handshake for %s at %s within 20s: %v", serverName, addr, err)
		}
	}
}

// waitSerial polls fresh handshakes until one presents want.
func waitSerial(t *testing.T, addr, serverName string, roots *x509.CertPool, want *big.Int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		leaf, err := handshake(addr, serverName, roots)
		if err == nil && leaf.SerialNumber.Cmp(want) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new handshakes did not get certificate %x within %v (last: %v)", want, within, err)
		}
		time.Sleep(20 * time.Millisecond) // polling, with the deadline above
	}
}

func startTLSProxy(t *testing.T, env []string, args ...string) *testenv.Process {
	t.Helper()
	return testenv.StartProcess(t, testenv.Build(t, cmdtest.ProxyPkg), args, cmdtest.Env(env...))
}

// startTLSClient starts the client command with its own key file.
func startTLSClient(t *testing.T, args ...string) *testenv.Process {
	t.Helper()
	key := filepath.Join(t.TempDir(), "client.jwk")
	return testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg), append([]string{"--key", key}, args...), cmdtest.Env())
}

// waitTunnelURL waits for the client's first stdout line and checks it
// against want.
func waitTunnelURL(t *testing.T, c *testenv.Process, want *regexp.Regexp) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	line, err := c.WaitLine(ctx, func(string) bool { return true })
	if err != nil {
		t.Fatalf("client printed no URL: %v; stderr:\n%s", err, c.Stderr())
	}
	if !want.MatchString(line) {
		t.Fatalf("client printed %q, want %s", line, want)
	}
	return line
}

func hostOf(rawURL string) string { return strings.TrimPrefix(rawURL, "https://") }

// TestTLSCertFiles serves a wildcard certificate from files: a wss://
// client that trusts the private CA with --ca registers and gets an
// https:// URL; visitors get HTTP/2, WebSockets, HSTS and 421; port 80
// redirects; the certificate is replaced on SIGHUP and on a file change
// while existing connections carry on, and a bad file is refused.
func TestTLSCertFiles(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	first := ca.Issue(t, time.Time{}, "localhost", "*.localhost")
	certFile, keyFile := testcert.WriteFiles(t, dir, first.CertPEM, first.KeyPEM)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	tlsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	tlsAddr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	p := startTLSProxy(t, nil,
		"--listen-tls", tlsAddr, "--listen-http", "127.0.0.1:"+strconv.Itoa(httpPort),
		"--tls-cert", certFile, "--tls-key", keyFile, "--hsts")
	waitHandshake(t, p, tlsAddr, "localhost", ca.Pool())

	c := startTLSClient(t, "--proxy", "wss://localhost:"+strconv.Itoa(tlsPort), "--ca", caFile, tlsLocal(t))
	url := waitTunnelURL(t, c, regexp.MustCompile(`^https://[a-z2-7]{52}\.localhost:`+strconv.Itoa(tlsPort)+`$`))
	host := hostOf(url)
	name := strings.Split(host, ":")[0]
	visitor := httpsVia(t, tlsAddr, ca.Pool())

	t.Run("only the HTTPS and redirect listeners", func(t *testing.T) {
		var listeners []string
		for _, l := range cmdtest.StderrLines(p) {
			if m := regexp.MustCompile(`msg="proxy listening" .*listener=(\S+)`).FindStringSubmatch(l); m != nil {
				listeners = append(listeners, m[1])
			}
		}
		slices.Sort(listeners)
		if !slices.Equal(listeners, []string{"http-redirect", "https"}) {
			t.Fatalf("listeners %q, want https and http-redirect (no plain --listen unless given)", listeners)
		}
	})
	t.Run("HTTP/2 through the tunnel, with HSTS", func(t *testing.T) {
		r := httpsGet(t, visitor, url+"/", "")
		if r.status != 200 || r.body != "hello "+host+" https" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
		if r.proto != 2 {
			t.Errorf("HTTP/%d, want HTTP/2", r.proto)
		}
		if got := r.header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Errorf("Strict-Transport-Security %q", got)
		}
	})
	t.Run("wss through the tunnel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "wss://"+host+"/ws", &websocket.DialOptions{HTTPClient: visitor})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if err := ws.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
			t.Fatal(err)
		}
		typ, b, err := ws.Read(ctx)
		if err != nil || typ != websocket.MessageBinary || !bytes.Equal(b, []byte{0, 1, 2}) {
			t.Fatalf("echo: %v %v %v", typ, b, err)
		}
		ws.Close(websocket.StatusNormalClosure, "")
	})
	t.Run("421 for another host on a tunnel's connection", func(t *testing.T) {
		r := httpsGet(t, visitor, url+"/", "localhost:"+strconv.Itoa(tlsPort))
		if r.status != http.StatusMisdirectedRequest {
			t.Fatalf("SNI %s, Host localhost: %d %q, want 421", host, r.status, r.body)
		}
	})
	t.Run("port 80 redirects to https", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/a?b=c", strings.NewReader("x"))
		req.Host = name
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		defer hc.CloseIdleConnections()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := url + "/a?b=c"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("%d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})
	t.Run("a client without --ca refuses the proxy", func(t *testing.T) {
		c := startTLSClient(t, "--proxy", "wss://localhost:"+strconv.Itoa(tlsPort), tlsLocal(t))
		cmdtest.WaitStderr(t, c, 20*time.Second, "certificate signed by unknown authority")
		if out := c.Stdout(); out != "" {
			t.Fatalf("registered without trusting the proxy: %q", out)
		}
	})
	t.Run("reload", func(t *testing.T) {
		// An HTTP/2 connection made before the reload keeps its
		// certificate and keeps working; so does the client's wss://
		// connection, which never re-registers.
		kept := httpsVia(t, tlsAddr, ca.Pool())
		if r := httpsGet(t, kept, url+"/", ""); r.status != 200 || r.serial.Cmp(first.Cert.SerialNumber) != 0 {
			t.Fatalf("before reload: %d, serial %x", r.status, r.serial)
		}

		second := ca.Issue(t, time.Time{}, "localhost", "*.localhost")
		testcert.WriteFiles(t, dir, second.CertPEM, second.KeyPEM)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitSerial(t, tlsAddr, name, ca.Pool(), second.Cert.SerialNumber, 5*time.Second)
		if r := httpsGet(t, kept, url+"/", ""); r.status != 200 || r.serial.Cmp(first.Cert.SerialNumber) != 0 {
			t.Fatalf("the connection from before the reload: %d, serial %x (a new connection?)", r.status, r.serial)
		}

		// No signal: the proxy notices the changed files by itself.
		third := ca.Issue(t, time.Time{}, "localhost", "*.localhost")
		testcert.WriteFiles(t, dir, third.CertPEM, third.KeyPEM)
		waitSerial(t, tlsAddr, name, ca.Pool(), third.Cert.SerialNumber, 15*time.Second)

		// A certificate for another domain is refused and logged; the
		// current one stays.
		wrong := ca.Issue(t, time.Time{}, "example.org", "*.example.org")
		testcert.WriteFiles(t, dir, wrong.CertPEM, wrong.KeyPEM)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		cmdtest.WaitStderr(t, p, 10*time.Second, "does not cover localhost", "keeping the current certificate")
		if leaf, err := handshake(tlsAddr, name, ca.Pool()); err != nil || leaf.SerialNumber.Cmp(third.Cert.SerialNumber) != 0 {
			t.Fatalf("after a refused file: %v, want certificate %x", err, third.Cert.SerialNumber)
		}
		if r := httpsGet(t, visitor, url+"/", ""); r.status != 200 {
			t.Fatalf("through the tunnel after the reloads: %d %q", r.status, r.body)
		}
		if lines := strings.Split(c.Stdout(), "\n"); len(lines) != 1 {
			t.Fatalf("the client registered again: %q", lines)
		}
	})
}

// TestTLSBadCertificateAtStart: a certificate that cannot serve the domain
// stops the proxy at once with one line and a non-zero exit.
func TestTLSBadCertificateAtStart(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	good := ca.Issue(t, time.Time{}, "tunnel.example.com", "*.tunnel.example.com")
	for _, tc := range []struct {
		name string
		leaf *testcert.Leaf
		key  []byte
		want string
	}{
		{"mismatched key", good, ca.Issue(t, time.Time{}, "tunnel.example.com").KeyPEM, "private key does not match public key"},
		{"another domain", ca.Issue(t, time.Time{}, "example.org", "*.example.org"), nil, "does not cover tunnel.example.com"},
		{"no wildcard", ca.Issue(t, time.Time{}, "tunnel.example.com"), nil, "does not cover *.tunnel.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == nil {
				key = tc.leaf.KeyPEM
			}
			cf, kf := testcert.WriteFiles(t, t.TempDir(), tc.leaf.CertPEM, key)
			code, stdout, stderr := cmdtest.Run(t, cmdtest.ProxyPkg, []string{
				"--domain", "tunnel.example.com", "--listen-tls", "127.0.0.1:0", "--tls-cert", cf, "--tls-key", kf,
			}, nil)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code == 0 || stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "proxy: tls: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q: want a non-zero exit and one line with %q", code, stdout, stderr, tc.want)
			}
		})
	}
}

func TestTLSFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key must be given together"},
		{[]string{"--listen-tls", ":8443", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--acme"}, "choose either"},
		{[]string{"--acme"}, "need --listen-tls"},
		{[]string{"--listen-tls", ":8443"}, "--listen-tls needs a certificate"},
		{[]string{"--listen-http", ":8081"}, "--listen-http redirects to HTTPS and needs --listen-tls"},
		{[]string{"--hsts"}, "--hsts needs --listen-tls"},
		{[]string{"--listen-tls", "8443", "--acme"}, "invalid --listen-tls"},
		{[]string{"--listen-tls", ":8443", "--acme", "--acme-directory", "acme.example.com"}, "invalid --acme-directory"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, func(string) string { return "" }, &stdout, &stderr)
		if !errors.As(err, new(cli.UsageError)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}

func TestACMECacheNamespace(t *testing.T) {
	for in, want := range map[string]string{
		"https://acme-v02.api.letsencrypt.org/directory":         "acme-v02.api.letsencrypt.org-directory",
		"https://acme-staging-v02.api.letsencrypt.org/directory": "acme-staging-v02.api.letsencrypt.org-directory",
		"https://127.0.0.1:14000/dir":                            "127.0.0.1-14000-dir",
		"https://ca.internal/acme/acme/directory/":               "ca.internal-acme-acme-directory",
	} {
		if got := cacheNamespace(in); got != want {
			t.Errorf("cacheNamespace(%q) = %q, want %q", in, got, want)
		}
	}
}

// acmeProxy is a proxy getting certificates from Pebble for tunnel.test.
type acmeProxy struct {
	proc    *testenv.Process
	tlsAddr string
	plain   string
}

func startACMEProxy(t *testing.T, pebble *testenv.PebbleServer, tlsPort int, extra ...string) *acmeProxy {
	t.Helper()
	a := &acmeProxy{
		tlsAddr: "127.0.0.1:" + strconv.Itoa(tlsPort),
		plain:   "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
	}
	args := append([]string{
		"--domain", "tunnel.test",
		"--listen", a.plain, // clients connect here: tunnel.test does not resolve outside the test
		"--listen-tls", a.tlsAddr,
		"--acme", "--acme-directory", pebble.DirectoryURL, "--acme-email", "ops@tunnel.test",
	}, extra...)
	// The proxy trusts Pebble's API certificate the way an operator would
	// trust a private ACME CA.
	if !slices.Contains(args, "--bus") {
		args = append(args, "--acme-cache", t.TempDir())
	}
	a.proc = startTLSProxy(t, []string{"SSL_CERT_FILE=" + pebble.CAFile}, args...)
	cmdtest.WaitHTTP(t, a.proc, a.plain)
	return a
}

var tunnelTestURL = func(tlsPort int) *regexp.Regexp {
	return regexp.MustCompile(`^https://[a-z2-7]{52}\.tunnel\.test:` + strconv.Itoa(tlsPort) + `$`)
}

func countOf(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

// TestACME gets certificates from a real ACME server, Pebble, once through
// each challenge type: the tunnel's hostname and the apex get one and
// serve HTTPS end to end; names that are not connected tunnels fail the
// handshake and are never ordered.
func TestACME(t *testing.T) {
	t.Parallel()
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			t.Parallel()
			tlsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
			var pebble *testenv.PebbleServer
			var extra []string
			if challenge == "tls-alpn-01" {
				// Pebble validates HTTP-01 at a port where nothing listens,
				// and the proxy has no --listen-http, so autocert offers
				// TLS-ALPN-01 only.
				pebble = testenv.Pebble(t, testenv.PebbleConfig{TLSPort: tlsPort})
			} else {
				// TLS-ALPN-01 cannot succeed: Pebble checks it at a port
				// where nothing listens. autocert tries it first, then
				// orders again with HTTP-01.
				pebble = testenv.Pebble(t, testenv.PebbleConfig{HTTPPort: httpPort})
				extra = []string{"--listen-http", "127.0.0.1:" + strconv.Itoa(httpPort)}
			}
			a := startACMEProxy(t, pebble, tlsPort, extra...)
			c := startTLSClient(t, "--proxy", "ws://"+a.plain, tlsLocal(t))
			url := waitTunnelURL(t, c, tunnelTestURL(tlsPort))
			host := hostOf(url)
			name := strings.Split(host, ":")[0]
			roots := pebble.Roots(t)

			r := httpsGet(t, httpsVia(t, a.tlsAddr, roots), url+"/", "")
			if r.status != 200 || r.body != "hello "+host+" https" {
				t.Fatalf("through the tunnel: %d %q", r.status, r.body)
			}
			orders := pebble.Orders()
			switch challenge {
			case "tls-alpn-01":
				if !slices.Equal(orders, []string{name}) {
					t.Fatalf("orders %q, want one for %s", orders, name)
				}
			case "http-01":
				if countOf(orders, name) < 2 {
					t.Fatalf("orders %q, want a failed TLS-ALPN-01 one and an HTTP-01 one for %s", orders, name)
				}
				cmdtest.WaitStderr(t, a.proc, 5*time.Second, "acme http-01 challenge", "host="+name)
			}

			for _, bad := range []string{
				strings.Repeat("a", 52) + ".tunnel.test", // well-formed, not connected
				"www.tunnel.test",
				"tunnel.test.example.org",
				"example.org",
			} {
				if _, err := handshake(a.tlsAddr, bad, roots); err == nil {
					t.Errorf("handshake for %s succeeded", bad)
				}
			}
			if challenge == "tls-alpn-01" {
				// The apex too gets its certificate on first use.
				r := httpsGet(t, httpsVia(t, a.tlsAddr, roots), "https://tunnel.test:"+strconv.Itoa(tlsPort)+"/", "")
				if r.status != 200 || !strings.Contains(r.body, "keyhole") {
					t.Fatalf("apex: %d %q", r.status, r.body)
				}
			}
			for _, o := range pebble.Orders() {
				if o != name && o != "tunnel.test" {
					t.Errorf("Pebble saw an order for %q", o)
				}
			}
		})
	}
}

// TestACMESharedRedisCache: two instances share Redis; the certificate the
// first obtained is served by the second without a new order, and the
// second forwards to the tunnel the first holds.
func TestACMESharedRedisCache(t *testing.T) {
	t.Parallel()
	redis := testenv.Redis(t)
	tlsA, tlsB := testenv.FreePort(t), testenv.FreePort(t)
	pebble := testenv.Pebble(t, testenv.PebbleConfig{TLSPort: tlsA})
	a := startACMEProxy(t, pebble, tlsA, "--bus", redis.URL())
	b := startACMEProxy(t, pebble, tlsB, "--bus", redis.URL())
	c := startTLSClient(t, "--proxy", "ws://"+a.plain, tlsLocal(t))
	url := waitTunnelURL(t, c, tunnelTestURL(tlsA))
	name := strings.Split(hostOf(url), ":")[0]
	roots := pebble.Roots(t)

	first := httpsGet(t, httpsVia(t, a.tlsAddr, roots), url+"/", "")
	if first.status != 200 {
		t.Fatalf("through instance A: %d %q", first.status, first.body)
	}
	if orders := pebble.Orders(); !slices.Equal(orders, []string{name}) {
		t.Fatalf("orders %q, want one for %s", orders, name)
	}
	viaB := "https://" + name + ":" + strconv.Itoa(tlsB)
	second := httpsGet(t, httpsVia(t, b.tlsAddr, roots), viaB+"/", "")
	if second.status != 200 || second.body != "hello "+name+":"+strconv.Itoa(tlsB)+" https" {
		t.Fatalf("through instance B: %d %q", second.status, second.body)
	}
	if second.serial.Cmp(first.serial) != 0 {
		t.Fatalf("instance B serves certificate %x, A %x", second.serial, first.serial)
	}
	if orders := pebble.Orders(); !slices.Equal(orders, []string{name}) {
		t.Fatalf("orders after instance B served the name: %q, want still one", orders)
	}
}

// TestNginxTLSTermination runs deploy/nginx/keyhole-tls.conf: nginx holds
// the wildcard certificate and speaks HTTPS and HTTP/2; the proxy serves
// plain HTTP behind it and, trusting nginx through --trusted-proxies,
// tells the tunnel's service that the visitor used https.
func TestNginxTLSTermination(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nginx", "keyhole-tls.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	leaf := ca.Issue(t, time.Time{}, "localhost", "*.localhost")
	certFile, keyFile := testcert.WriteFiles(t, dir, leaf.CertPEM, leaf.KeyPEM)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	proxyPort, httpPort, tlsPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)

	conf := string(b)
	for _, r := range []struct {
		old  *regexp.Regexp
		new  string
		want int
	}{
		{regexp.MustCompile(`(?s)# --- upstream servers[^\n]*\n.*?# --- end of upstream servers ---`), "server 127.0.0.1:" + strconv.Itoa(proxyPort) + ";", 1},
		{regexp.MustCompile(`listen 80;`), "listen 127.0.0.1:" + strconv.Itoa(httpPort) + ";", 1},
		{regexp.MustCompile(`listen 443 ssl http2;`), "listen 127.0.0.1:" + strconv.Itoa(tlsPort) + " ssl http2;", 1},
		{regexp.MustCompile(`ssl_certificate +/etc/keyhole/tls/fullchain.pem;`), "ssl_certificate " + certFile + ";", 1},
		{regexp.MustCompile(`ssl_certificate_key +/etc/keyhole/tls/privkey.pem;`), "ssl_certificate_key " + keyFile + ";", 1},
		{regexp.MustCompile(`server_name tunnel\.example\.com \*\.tunnel\.example\.com;`), "server_name localhost *.localhost;", 2},
	} {
		if n := len(r.old.FindAllStringIndex(conf, -1)); n != r.want {
			t.Fatalf("keyhole-tls.conf: %d matches of %s, want %d", n, r.old, r.want)
		}
		conf = r.old.ReplaceAllLiteralString(conf, r.new)
	}

	plain := "127.0.0.1:" + strconv.Itoa(proxyPort)
	p := startTLSProxy(t, nil, "--listen", plain, "--public-url", "https://localhost:"+strconv.Itoa(tlsPort), "--trusted-proxies", "127.0.0.1")
	cmdtest.WaitHTTP(t, p, plain)
	testenv.Nginx(t, conf, tlsPort)
	tlsAddr := "127.0.0.1:" + strconv.Itoa(tlsPort)

	c := startTLSClient(t, "--proxy", "wss://localhost:"+strconv.Itoa(tlsPort), "--ca", caFile, tlsLocal(t))
	url := waitTunnelURL(t, c, regexp.MustCompile(`^https://[a-z2-7]{52}\.localhost:`+strconv.Itoa(tlsPort)+`$`))
	host := hostOf(url)
	visitor := httpsVia(t, tlsAddr, ca.Pool())

	r := httpsGet(t, visitor, url+"/", "")
	if r.status != 200 || r.body != "hello "+host+" https" {
		t.Fatalf("through nginx: %d %q, want the tunnel's answer with X-Forwarded-Proto https", r.status, r.body)
	}
	if r.proto != 2 {
		t.Errorf("HTTP/%d from nginx, want HTTP/2", r.proto)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss://"+host+"/ws", &websocket.DialOptions{HTTPClient: visitor})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("through nginx")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.Read(ctx); err != nil || string(got) != "through nginx" {
		t.Fatalf("echo: %q %v", got, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")

	req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/a?b=c", nil)
	req.Host = strings.Split(host, ":")[0]
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://" + req.Host + "/a?b=c"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("port 80: %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}
