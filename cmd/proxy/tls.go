package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// hstsMaxAge is the max-age --hsts sends: a year, the usual choice and
// what browsers' preload lists ask for.
const hstsMaxAge = 365 * 24 * time.Hour

// tlsOptions are the HTTPS flags.
type tlsOptions struct {
	listen, listenHTTP string
	certFile, keyFile  string
	acme               bool
	acmeEmail, acmeDir string
	acmeCache          string
	hsts               bool
}

func (t *tlsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&t.listen, "listen-tls", "", "`address` for HTTPS and wss:// client connections, e.g. :443. Needs\n--tls-cert and --tls-key, or --acme. Unless --listen is also given,\nno plain-HTTP listener is opened then")
	fs.StringVar(&t.listenHTTP, "listen-http", "", "plain-HTTP `address` beside --listen-tls, e.g. :80: answers ACME HTTP-01\nchallenges (with --acme) and redirects everything else to https://")
	fs.StringVar(&t.certFile, "tls-cert", "", "PEM `file` with a certificate for <domain> and *.<domain>, then its chain.\nReloaded on SIGHUP and when the file changes (checked every 2s)")
	fs.StringVar(&t.keyFile, "tls-key", "", "PEM `file` with the private key of --tls-cert")
	fs.BoolVar(&t.acme, "acme", false, "get a certificate for <domain> and for each connected tunnel from an\nACME CA, validated with TLS-ALPN-01 on --listen-tls or HTTP-01 on\n--listen-http. Accepts the CA's terms of service")
	fs.StringVar(&t.acmeEmail, "acme-email", "", "contact `address` for the ACME account (optional)")
	fs.StringVar(&t.acmeDir, "acme-directory", proxy.LetsEncryptURL, "ACME directory `URL`. To try a setup, use Let's Encrypt staging:\n"+proxy.LetsEncryptStagingURL)
	fs.StringVar(&t.acmeCache, "acme-cache", "", "`directory` for the ACME account key and certificates, in a subdirectory\nper --acme-directory (default: in Redis with --bus redis://..., else\nkeyhole/acme under the user's cache directory)")
	fs.BoolVar(&t.hsts, "hsts", false, "send Strict-Transport-Security (max-age one year) on HTTPS responses")
}

// on reports whether the proxy serves HTTPS.
func (t *tlsOptions) on() bool { return t.listen != "" }

// check reports contradictory or incomplete TLS flags.
func (t *tlsOptions) check() error {
	files := t.certFile != "" || t.keyFile != ""
	switch {
	case (t.certFile == "") != (t.keyFile == ""):
		return errors.New("--tls-cert and --tls-key must be given together")
	case files && t.acme:
		return errors.New("choose either --tls-cert and --tls-key, or --acme")
	case !t.on() && (files || t.acme):
		return errors.New("--tls-cert and --acme need --listen-tls ADDR")
	case t.on() && !files && !t.acme:
		return errors.New("--listen-tls needs a certificate: --tls-cert and --tls-key, or --acme")
	case t.listenHTTP != "" && !t.on():
		return errors.New("--listen-http redirects to HTTPS and needs --listen-tls")
	case t.hsts && !t.on():
		return errors.New("--hsts needs --listen-tls")
	}
	if u, err := url.Parse(t.acmeDir); t.acme && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
		return fmt.Errorf("invalid --acme-directory %q: want the CA's https:// directory URL", t.acmeDir)
	}
	for name, addr := range map[string]string{"--listen-tls": t.listen, "--listen-http": t.listenHTTP} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("invalid %s %q: want host:port or :port", name, addr)
		}
	}
	return nil
}

// defaultPublicURL is https://<domain>, with the port of --listen-tls
// unless it is 443.
func (t *tlsOptions) defaultPublicURL(domain string) string {
	_, port, _ := net.SplitHostPort(t.listen) // checked
	if port == "443" {
		return "https://" + domain
	}
	return "https://" + net.JoinHostPort(domain, port)
}

// redirectPort is the port that plain-HTTP requests are redirected to: the
// public URL's when it is https://, else that of --listen-tls.
func (t *tlsOptions) redirectPort(publicURL string) string {
	if u, err := url.Parse(publicURL); err == nil && u.Scheme == "https" {
		return u.Port()
	}
	_, port, _ := net.SplitHostPort(t.listen)
	return port
}

// loadCert loads --tls-cert and --tls-key, refusing a certificate that
// does not cover the domain. It runs before anything listens, so a bad
// file stops the proxy at once.
func (t *tlsOptions) loadCert(domain string, log *slog.Logger) (*proxy.CertReloader, error) {
	if t.certFile == "" {
		return nil, nil
	}
	return proxy.LoadCertFiles(proxy.CertFiles{CertFile: t.certFile, KeyFile: t.keyFile, Domain: domain, Logger: log})
}

// tlsServing is what the HTTPS and port-80 listeners serve.
type tlsServing struct {
	config   *tls.Config
	http     http.Handler // for --listen-http
	reloader *proxy.CertReloader
	log      *slog.Logger
}

// serving builds the TLS configuration from the certificate files
// (reloader) or ACME. shared makes a certificate cache in the bus, when
// the bus can hold one.
func (t *tlsOptions) serving(p *proxy.Proxy, reloader *proxy.CertReloader, shared func(prefix string) autocert.Cache, publicURL string, log *slog.Logger) (*tlsServing, error) {
	s := &tlsServing{reloader: reloader, log: log}
	redirect := p.RedirectHTTPS(t.redirectPort(publicURL))
	if reloader != nil {
		s.config = proxy.TLSConfig(reloader.GetCertificate)
		s.http = redirect
		return s, nil
	}
	// autocert serves any valid certificate it finds in its cache, whoever
	// issued it: each CA gets a namespace of its own, so that moving from
	// staging to production does not keep serving staging certificates.
	ns := cacheNamespace(t.acmeDir)
	var cache autocert.Cache
	var where string
	if t.acmeCache == "" && shared != nil {
		prefix := redis.DefaultCertCachePrefix + ns + ":"
		cache, where = shared(prefix), "redis "+prefix
	} else {
		dir := t.acmeCache
		if dir == "" {
			base, err := os.UserCacheDir()
			if err != nil {
				return nil, fmt.Errorf("acme cache: %w (set --acme-cache)", err)
			}
			dir = filepath.Join(base, "keyhole", "acme")
		}
		dir = filepath.Join(dir, ns)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("acme cache: %w", err)
		}
		cache, where = autocert.DirCache(dir), dir
	}
	m, err := p.ACMEManager(proxy.ACMEConfig{DirectoryURL: t.acmeDir, Email: t.acmeEmail, Cache: cache})
	if err != nil {
		return nil, err
	}
	log.Info("certificates from ACME", "directory", t.acmeDir, "cache", where, "http-01", t.listenHTTP != "")
	s.config = proxy.ACMETLSConfig(m)
	if t.listenHTTP != "" {
		s.http = p.ACMEChallengeHandler(m, redirect)
	}
	return s, nil
}

// cacheNamespace names an ACME directory in a file or key name:
// "acme-v02.api.letsencrypt.org-directory" for Let's Encrypt.
func cacheNamespace(directoryURL string) string {
	u, err := url.Parse(directoryURL)
	name := directoryURL
	if err == nil && u.Host != "" {
		name = u.Host + u.Path
	}
	b := []byte(strings.Trim(name, "/"))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

// handler wraps the proxy's handler for the HTTPS listener.
func (t *tlsOptions) handler(h http.Handler) http.Handler {
	if t.hsts {
		return proxy.HSTS(h, hstsMaxAge)
	}
	return h
}

// watch reloads the certificate files on SIGHUP and when they change,
// until the returned stop function is called; stop returns when both
// goroutines have ended.
func (s *tlsServing) watch(ctx context.Context) (stop func()) {
	if s == nil || s.reloader == nil {
		return func() {}
	}
	return watchFiles(ctx, s.reloader, proxy.DefaultReloadInterval)
}
