package proxy_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/proxy"
)

// ExampleLoadCertFiles serves HTTPS from a wildcard certificate that a
// DNS-01 job renews: the certificate is reloaded on SIGHUP and when the
// files change. It binds port 443, so it is compiled but not run.
func ExampleLoadCertFiles() {
	ctx := context.Background()
	const domain = "tunnel.example.com"
	certs, err := proxy.LoadCertFiles(proxy.CertFiles{
		CertFile: "/etc/keyhole/tls/fullchain.pem",
		KeyFile:  "/etc/keyhole/tls/privkey.pem",
		Domain:   domain, // the certificate must cover it and *.tunnel.example.com
	})
	if err != nil {
		log.Fatal(err) // refused: it would fail for visitors
	}
	go certs.Watch(ctx, proxy.DefaultReloadInterval)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := certs.Reload(); err != nil {
				log.Print(err) // the current certificate stays
			}
		}
	}()

	p, err := proxy.New(ctx, proxy.Config{Domain: domain, PublicURL: "https://" + domain})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Addr:              ":443",
		Handler:           proxy.HSTS(p, 365*24*time.Hour),
		TLSConfig:         proxy.TLSConfig(certs.GetCertificate),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

// ExampleProxy_ACMEManager gets a certificate for the apex and for each
// connected tunnel from Let's Encrypt, answering TLS-ALPN-01 on port 443
// and HTTP-01 on port 80. It binds both, so it is compiled but not run.
func ExampleProxy_ACMEManager() {
	ctx := context.Background()
	const domain = "tunnel.example.com"
	p, err := proxy.New(ctx, proxy.Config{Domain: domain, PublicURL: "https://" + domain})
	if err != nil {
		log.Fatal(err)
	}
	m, err := p.ACMEManager(proxy.ACMEConfig{
		DirectoryURL: proxy.LetsEncryptStagingURL, // until the setup works
		Email:        "ops@example.com",
		Cache:        autocert.DirCache("/var/lib/keyhole/acme"),
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		port80 := &http.Server{
			Addr:              ":80",
			Handler:           p.ACMEChallengeHandler(m, p.RedirectHTTPS("443")),
			ReadHeaderTimeout: 10 * time.Second,
		}
		log.Fatal(port80.ListenAndServe())
	}()
	srv := &http.Server{
		Addr:              ":443",
		Handler:           p,
		TLSConfig:         proxy.ACMETLSConfig(m),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
