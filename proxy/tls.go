package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/bus"
)

// ACME directories of Let's Encrypt. Staging issues certificates that no
// browser trusts, under far higher rate limits: use it to try a setup, then
// switch to production.
const (
	LetsEncryptURL        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStagingURL = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// DefaultReloadInterval is how often [CertReloader.Watch] checks the
// certificate files by default.
const DefaultReloadInterval = 2 * time.Second

// TLSConfig returns the settings for the public HTTPS listener: TLS 1.2 or
// newer, HTTP/2 and HTTP/1.1 offered through ALPN, and certificates from
// getCertificate (a [CertReloader]'s, or see [ACMETLSConfig]).
//
// Serve it with http.Server.ServeTLS (or Serve on a tls.Listener) so that
// net/http answers "h2" connections itself. WebSocket upgrades still work:
// Go's HTTP/2 server does not advertise RFC 8441 extended CONNECT, so
// browsers and Go clients open WebSockets over HTTP/1.1.
func TLSConfig(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: getCertificate,
	}
}

// ACMETLSConfig is [TLSConfig] for certificates from m. It also offers the
// "acme-tls/1" protocol, so the CA can validate TLS-ALPN-01 challenges on
// this listener.
func ACMETLSConfig(m *autocert.Manager) *tls.Config {
	c := TLSConfig(m.GetCertificate)
	c.NextProtos = append(c.NextProtos, acme.ALPNProto)
	return c
}

// CertFiles names a certificate and key in PEM files, usually a wildcard
// certificate for "*.<Domain>" that a DNS-01 renewal job rewrites.
type CertFiles struct {
	// CertFile holds the certificate, then any intermediates. Required.
	CertFile string
	// KeyFile holds the private key. Required.
	KeyFile string
	// Domain is the proxy's domain. The certificate must be valid for it
	// and for every "<label>.<Domain>". Default "localhost".
	Domain string
	// Logger receives reloads and refused files. Default: discard.
	Logger *slog.Logger
}

// CertReloader serves a certificate from files and replaces it when the
// files change, without a restart: handshakes read the current certificate
// through an atomic pointer, and established connections keep the one they
// negotiated. Create it with [LoadCertFiles]. The files are watched by a
// [FileReloader]: a changed file that cannot be used (a renewal job that
// has written the certificate but not yet the key, or a broken file) is
// logged once and the current certificate stays.
type CertReloader struct {
	cfg   CertFiles
	log   *slog.Logger
	cur   atomic.Pointer[tls.Certificate]
	files *FileReloader
}

// LoadCertFiles loads and checks the certificate: the key must match it,
// it must not have expired, and it must cover the domain and its
// subdomains. Any problem is an error, so a proxy refuses to start with a
// certificate that would fail for its visitors.
func LoadCertFiles(cfg CertFiles) (*CertReloader, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tls: both a certificate file and a key file are required")
	}
	cfg.Domain = strings.TrimSuffix(strings.ToLower(cfg.Domain), ".")
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	r := &CertReloader{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	files, err := NewFileReloader(ReloadFiles{
		Name:    "tls",
		Paths:   []string{cfg.CertFile, cfg.KeyFile},
		Apply:   r.apply,
		Keeping: "the current certificate",
		Logger:  r.log,
	})
	if err != nil {
		return nil, err
	}
	r.files = files
	return r, nil
}

// GetCertificate returns the current certificate, whatever name the client
// asked for; it is the tls.Config hook.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// Leaf returns the certificate being served.
func (r *CertReloader) Leaf() *x509.Certificate { return r.cur.Load().Leaf }

// Reload reads the files again and serves their certificate from the next
// handshake on. If they cannot be used, the current certificate stays and
// the error says why. The proxy command calls it on SIGHUP.
func (r *CertReloader) Reload() error {
	if err := r.files.Reload(); err != nil {
		return fmt.Errorf("%w; keeping the current certificate", err)
	}
	return nil
}

// Watch checks the files every interval (DefaultReloadInterval when zero)
// until ctx ends, and reloads them when their content changed (see
// [FileReloader.Watch]).
func (r *CertReloader) Watch(ctx context.Context, interval time.Duration) {
	r.files.Watch(ctx, interval)
}

// apply parses and checks the files' contents and makes them current.
func (r *CertReloader) apply(contents [][]byte) error {
	c, err := parseCert(contents[0], contents[1], r.cfg.Domain, time.Now())
	if err != nil {
		return fmt.Errorf("%s: %w", r.cfg.CertFile, err)
	}
	old := r.cur.Swap(c)
	r.log.Info("certificate loaded", "file", r.cfg.CertFile,
		"serial", c.Leaf.SerialNumber.Text(16), "not_after", c.Leaf.NotAfter,
		"changed", old == nil || !bytes.Equal(old.Certificate[0], c.Certificate[0]))
	return nil
}

// parseCert checks that key matches the certificate, that it is in its
// validity period, and that it covers domain and its subdomains.
func parseCert(certPEM, keyPEM []byte, domain string, now time.Time) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	leaf := c.Leaf
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, name := range []string{domain, "x." + domain} {
		if err := leaf.VerifyHostname(name); err != nil {
			want := domain
			if name != domain {
				want = "*." + domain
			}
			return nil, fmt.Errorf("certificate does not cover %s (it names %s)", want, certNames(leaf))
		}
	}
	return &c, nil
}

func certNames(c *x509.Certificate) string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no DNS names"
	}
	return strings.Join(names, ", ")
}

// ACMEConfig configures certificates from an ACME CA such as Let's Encrypt.
// Using it accepts the CA's terms of service.
type ACMEConfig struct {
	// DirectoryURL is the CA's ACME directory. Default [LetsEncryptURL].
	DirectoryURL string
	// Email is given to the CA for expiry and account notices. Optional.
	Email string
	// Cache keeps the account key and the certificates across restarts,
	// and between instances when it is shared. Required: without one,
	// every restart would order every certificate again and soon hit the
	// CA's rate limits. autocert.DirCache is a directory; with the Redis
	// bus, use its certificate cache.
	Cache autocert.Cache
	// HTTPClient talks to the CA. Default: http.DefaultClient.
	HTTPClient *http.Client
}

// ACMEManager returns an autocert.Manager that obtains a certificate for
// the apex domain and for each tunnel hostname on its first handshake.
// Its HostPolicy is [Proxy.HostPolicy], so a handshake for any other name
// fails before anything is asked of the CA.
//
// Serve HTTPS with [ACMETLSConfig], which answers TLS-ALPN-01 challenges.
// For HTTP-01 as well, serve [Proxy.ACMEChallengeHandler] on port 80;
// autocert tries TLS-ALPN-01 first.
func (p *Proxy) ACMEManager(cfg ACMEConfig) (*autocert.Manager, error) {
	if cfg.Cache == nil {
		return nil, errors.New("acme: a certificate cache is required")
	}
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = LetsEncryptURL
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      cfg.Cache,
		HostPolicy: p.HostPolicy,
		Email:      cfg.Email,
		Client: &acme.Client{
			DirectoryURL: cfg.DirectoryURL,
			HTTPClient:   cfg.HTTPClient,
			UserAgent:    "keyhole",
		},
	}, nil
}

// errHostNotServed is what HostPolicy refuses with. autocert's HTTP-01
// handler shows a policy error to the requester, so it carries no detail.
var errHostNotServed = errors.New("keyhole: no certificate for this host")

// HostPolicy allows the apex domain and the tunnel hostnames that are
// connected right now, on any instance sharing the registry. host may carry
// a port, upper case and a trailing dot. Everything else is refused, so an
// arbitrary SNI never causes an ACME order.
func (p *Proxy) HostPolicy(ctx context.Context, host string) error {
	host = normalizeHost(host)
	if host == p.cfg.Domain {
		return nil
	}
	label, ok := p.tunnelLabel(host)
	if !ok {
		return errHostNotServed
	}
	_, err := p.reg.Lookup(ctx, label)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		return errHostNotServed
	case err != nil:
		p.log.Warn("acme host policy: registry lookup", "host", label, "err", err)
		return errHostNotServed
	}
	return nil
}

// RedirectHTTPS returns the handler for a plain-HTTP listener beside the
// HTTPS one: requests for the apex and tunnel hostnames are redirected to
// the same URL on https:// with 308 Permanent Redirect (which keeps the
// method and body), on httpsPort unless it is "" or "443". Other hosts get
// 404. Wrap it in an autocert.Manager's HTTPHandler to also answer HTTP-01
// challenges.
func (p *Proxy) RedirectHTTPS(httpsPort string) http.Handler {
	if httpsPort == "443" {
		httpsPort = ""
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := normalizeHost(r.Host)
		if _, ok := p.tunnelLabel(host); !ok && host != p.cfg.Domain {
			publicError(w, http.StatusNotFound)
			return
		}
		if httpsPort != "" {
			host = net.JoinHostPort(host, httpsPort)
		}
		w.Header().Set("Location", "https://"+host+requestURI(r))
		w.WriteHeader(http.StatusPermanentRedirect)
	})
}

// ACMEChallengeHandler returns the handler for a plain-HTTP listener on
// port 80 when certificates come from m: it answers m's HTTP-01 challenges
// (logging each one) and passes everything else to fallback, usually
// [Proxy.RedirectHTTPS]. Calling it enables HTTP-01 in m, which autocert
// tries after TLS-ALPN-01.
func (p *Proxy) ACMEChallengeHandler(m *autocert.Manager, fallback http.Handler) http.Handler {
	h := m.HTTPHandler(fallback)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			p.log.Info("acme http-01 challenge", "host", normalizeHost(r.Host), "remote", r.RemoteAddr)
		}
		h.ServeHTTP(w, r)
	})
}

// HSTS wraps h so that responses to requests that arrived over TLS carry
// Strict-Transport-Security with maxAge. The proxy's header comes before
// any that a tunnel's service sends, and browsers heed only the first.
func HSTS(h http.Handler, maxAge time.Duration) http.Handler {
	value := "max-age=" + strconv.FormatInt(int64(maxAge/time.Second), 10)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", value)
		}
		h.ServeHTTP(w, r)
	})
}

// misdirected answers 421 Misdirected Request, and reports true, when a
// request arrived over TLS on a connection whose SNI names another host,
// and either name is a tunnel's. Browsers reuse an HTTP/2 connection for
// every host its certificate covers, so with a wildcard certificate a
// connection made for one tunnel can carry requests for another; 421 makes
// them retry on a connection of its own (RFC 9110, section 15.5.20). It also
// keeps a certificate obtained for one name from vouching for another. A
// handshake without SNI is left alone: there is no name to compare.
func (p *Proxy) misdirected(w http.ResponseWriter, r *http.Request) bool {
	if r.TLS == nil || r.TLS.ServerName == "" {
		return false
	}
	sni, host := normalizeHost(r.TLS.ServerName), normalizeHost(r.Host)
	if sni == host {
		return false
	}
	_, sniTunnel := p.tunnelLabel(sni)
	_, hostTunnel := p.tunnelLabel(host)
	if !sniTunnel && !hostTunnel {
		return false
	}
	publicError(w, http.StatusMisdirectedRequest)
	return true
}
