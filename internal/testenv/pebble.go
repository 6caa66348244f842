package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// pebbleModule is the ACME test server. go.mod pins its version through a
// tool directive ("go get -tool .../cmd/pebble@VERSION"), and "go tool"
// builds it from the module proxy's source into the build cache.
const pebbleModule = "github.com/letsencrypt/pebble/v2"

// PebbleConfig configures [Pebble].
type PebbleConfig struct {
	// HTTPPort and TLSPort are the ports on 127.0.0.1 where Pebble's
	// validation authority checks HTTP-01 and TLS-ALPN-01 challenges; its
	// DNS server resolves every name to 127.0.0.1. Zero means a port that
	// nothing listens on, so that challenge type fails: set only one to
	// force the other type.
	HTTPPort, TLSPort int
}

// PebbleServer is a Pebble ACME server started by [Pebble], with a DNS
// server of its own that answers 127.0.0.1 for every name.
//
// Clients reach Pebble through a front in the test process that records
// the identifiers of every new-order request, so a test can prove that a
// name was never ordered: see [PebbleServer.Orders].
type PebbleServer struct {
	// DirectoryURL is the ACME directory URL to give an ACME client.
	DirectoryURL string
	// CAFile is a PEM file of the CA that signed the certificate of
	// Pebble's ACME API (not of the certificates Pebble issues; see
	// [PebbleServer.RootPEM]). A process trusts it through SSL_CERT_FILE.
	CAFile string

	proc   *Process
	mgmt   string // management interface, https://127.0.0.1:PORT
	client *http.Client

	mu     sync.Mutex
	orders [][]string
}

// Pebble builds Pebble, starts it on free ports of 127.0.0.1 with a DNS
// server and the order-recording front, and waits until it serves its
// directory. Validation runs without Pebble's random sleeps, no nonce is
// rejected on purpose, and no authorization is reused, so every order is
// validated afresh. Cleanup stops everything.
func Pebble(t testing.TB, cfg PebbleConfig) *PebbleServer {
	t.Helper()
	bin, modDir, err := buildPebble()
	if err != nil {
		t.Fatalf("testenv: pebble: %v", err)
	}
	certs := filepath.Join(modDir, "test", "certs")
	s := &PebbleServer{CAFile: filepath.Join(certs, "pebble.minica.pem")}
	pool, err := poolFromFile(s.CAFile)
	if err != nil {
		t.Fatalf("testenv: pebble: %v", err)
	}
	s.client = &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Proxy: nil},
		Timeout:   10 * time.Second,
	}
	t.Cleanup(s.client.CloseIdleConnections)

	dnsAddr := startDNS(t)
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = FreePort(t)
	}
	if cfg.TLSPort == 0 {
		cfg.TLSPort = FreePort(t)
	}
	dir := t.TempDir()
	env := []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}
	var acmeAddr string
	var lastErr error
	for range 3 {
		acmeAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
		s.mgmt = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
		conf := map[string]any{"pebble": map[string]any{
			"listenAddress":                  acmeAddr,
			"managementListenAddress":        strings.TrimPrefix(s.mgmt, "https://"),
			"certificate":                    filepath.Join(certs, "localhost", "cert.pem"),
			"privateKey":                     filepath.Join(certs, "localhost", "key.pem"),
			"httpPort":                       cfg.HTTPPort,
			"tlsPort":                        cfg.TLSPort,
			"ocspResponderURL":               "",
			"externalAccountBindingRequired": false,
			"retryAfter":                     map[string]int{"authz": 1, "order": 1},
			"keyAlgorithm":                   "ecdsa",
		}}
		b, _ := json.Marshal(conf)
		confPath := filepath.Join(dir, "pebble-config.json")
		if err := os.WriteFile(confPath, b, 0o644); err != nil {
			t.Fatalf("testenv: pebble: %v", err)
		}
		p, err := startProcess(t, bin, []string{"-config", confPath, "-dnsserver", dnsAddr}, env)
		if err != nil {
			t.Fatalf("testenv: pebble: %v", err)
		}
		ready := func(ctx context.Context) bool {
			return s.get(ctx, "https://"+acmeAddr+"/dir") == nil && s.get(ctx, s.mgmt+"/roots/0") == nil
		}
		if lastErr = waitReady(p, ready); lastErr == nil {
			s.proc = p
			break
		}
		p.stop(stopGrace)
		if !errors.Is(lastErr, errExitedEarly) {
			break
		}
	}
	if s.proc == nil {
		t.Fatalf("testenv: pebble: %v", lastErr)
	}
	s.DirectoryURL = s.startFront(t, certs, acmeAddr) + "/dir"
	return s
}

// buildPebble returns the path of the Pebble binary and the directory of
// its module source, which holds the certificates of its HTTPS listeners.
func buildPebble() (bin, modDir string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", pebbleModule).Output()
	if err != nil {
		return "", "", fmt.Errorf("go mod download %s: %w", pebbleModule, stderrOf(err))
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return "", "", fmt.Errorf("go mod download %s: no module directory (%v %s)", pebbleModule, err, mod.Error)
	}
	// "go tool -n" builds the tool at the version go.mod pins, caches it,
	// and prints its path instead of running it.
	out, err = exec.CommandContext(ctx, "go", "tool", "-n", "pebble").Output()
	if err != nil {
		return "", "", fmt.Errorf("go tool -n pebble: %w", stderrOf(err))
	}
	return strings.TrimSpace(string(out)), mod.Dir, nil
}

func stderrOf(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return err
}

func poolFromFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

func (s *PebbleServer) get(ctx context.Context, u string) error {
	_, err := s.fetch(ctx, u)
	return err
}

func (s *PebbleServer) fetch(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return b, nil
}

// RootPEM returns the root certificate that the certificates Pebble issues
// chain to. Each Pebble run makes a new one.
func (s *PebbleServer) RootPEM(t testing.TB) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := s.fetch(ctx, s.mgmt+"/roots/0")
	if err != nil {
		t.Fatalf("testenv: pebble root: %v", err)
	}
	return b
}

// Roots returns a pool holding [PebbleServer.RootPEM].
func (s *PebbleServer) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.RootPEM(t)) {
		t.Fatal("testenv: pebble root: no PEM certificate")
	}
	return pool
}

// Orders returns the DNS names of every new-order request that reached
// Pebble so far, one entry per name per order, in arrival order.
func (s *PebbleServer) Orders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for _, o := range s.orders {
		names = append(names, o...)
	}
	return names
}

// Process returns the Pebble process, whose stdout is Pebble's log.
func (s *PebbleServer) Process() *Process { return s.proc }

// startFront serves an HTTPS reverse proxy to Pebble that records new-order
// requests, and returns its base URL. It keeps the Host header, from which
// Pebble builds every URL it hands out, so clients stay on the front.
func (s *PebbleServer) startFront(t testing.TB, certs, acmeAddr string) string {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certs, "localhost", "cert.pem"), filepath.Join(certs, "localhost", "key.pem"))
	if err != nil {
		t.Fatalf("testenv: pebble front: %v", err)
	}
	backend := &url.URL{Scheme: "https", Host: acmeAddr}
	transport := s.client.Transport.(*http.Transport).Clone()
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(backend)
			r.Out.Host = r.In.Host
		},
		Transport: transport,
	}
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, "front: read body", http.StatusBadRequest)
				return
			}
			s.recordOrder(body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		rp.ServeHTTP(w, r)
	}))
	front.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	front.StartTLS()
	t.Cleanup(func() {
		front.Close()
		transport.CloseIdleConnections()
	})
	return front.URL
}

// recordOrder notes the identifiers of a new-order request: a flattened
// JWS whose payload is {"identifiers":[{"type":"dns","value":NAME}]}.
func (s *PebbleServer) recordOrder(jws []byte) {
	var msg struct{ Payload string }
	var order struct {
		Identifiers []struct{ Type, Value string }
	}
	names := []string{"<unreadable order>"}
	if json.Unmarshal(jws, &msg) == nil {
		if payload, err := base64.RawURLEncoding.DecodeString(msg.Payload); err == nil && json.Unmarshal(payload, &order) == nil {
			names = names[:0]
			for _, id := range order.Identifiers {
				names = append(names, id.Value)
			}
		}
	}
	s.mu.Lock()
	s.orders = append(s.orders, names)
	s.mu.Unlock()
}

// startDNS serves DNS on one port of 127.0.0.1 over UDP and TCP (Pebble
// asks over TCP): A queries get 127.0.0.1 for any name, every other query
// an empty NOERROR answer, so no name has an IPv6 address. It returns the
// address; cleanup stops the server and waits for its goroutines.
func startDNS(t testing.TB) string {
	t.Helper()
	var (
		ln  net.Listener
		pc  net.PacketConn
		err error
	)
	for range 10 {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatalf("testenv: dns: %v", err)
		}
		if pc, err = net.ListenPacket("udp", ln.Addr().String()); err == nil {
			break
		}
		ln.Close()
	}
	if err != nil {
		t.Fatalf("testenv: dns: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := make(map[net.Conn]struct{})
	closed := false
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n]); resp != nil {
				pc.WriteTo(resp, addr)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				serveDNSConn(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		ln.Close()
		pc.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// serveDNSConn answers length-prefixed queries on one TCP connection until
// the client closes it or stays idle for 10 s.
func serveDNSConn(c net.Conn) {
	defer c.Close()
	var lenBuf [2]byte
	for {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp := dnsAnswer(msg)
		if resp == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// dnsAnswer builds the answer to one query, or returns nil for a message
// that is not a query with a question.
func dnsAnswer(query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID:               h.ID,
		Response:         true,
		Authoritative:    true,
		RecursionDesired: h.RecursionDesired,
		RCode:            dnsmessage.RCodeSuccess,
	})
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil
	}
	if q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
		if b.AResource(rh, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}}) != nil {
			return nil
		}
	}
	resp, err := b.Finish()
	if err != nil {
		return nil
	}
	return resp
}
