package testenv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// TestPebble orders a certificate over HTTP-01 from a server in the test,
// through Pebble's own DNS (every name is 127.0.0.1), and checks that the
// front recorded the order and that the issued certificate chains to
// RootPEM.
func TestPebble(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tokens := make(map[string]string) // path -> key authorization
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := tokens[r.URL.Path]; ok {
			w.Write([]byte(v))
			return
		}
		http.NotFound(w, r)
	})}
	pebble := testenv.Pebble(t, testenv.PebbleConfig{HTTPPort: ln.Addr().(*net.TCPAddr).Port})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := x509.NewCertPool()
	caPEM := mustRead(t, pebble.CAFile)
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &acme.Client{Key: key, DirectoryURL: pebble.DirectoryURL, HTTPClient: &http.Client{Transport: tr}}
	if _, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatal(err)
	}
	const name = "pebble-test.example"
	o, err := c.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		t.Fatal(err)
	}
	z, err := c.GetAuthorization(ctx, o.AuthzURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	var chal *acme.Challenge
	for _, ch := range z.Challenges {
		if ch.Type == "http-01" {
			chal = ch
		}
	}
	if chal == nil {
		t.Fatal("no http-01 challenge offered")
	}
	resp, err := c.HTTP01ChallengeResponse(chal.Token)
	if err != nil {
		t.Fatal(err)
	}
	tokens[c.HTTP01ChallengePath(chal.Token)] = resp
	go srv.Serve(ln)
	defer srv.Close()
	if _, err := c.Accept(ctx, chal); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitAuthorization(ctx, z.URI); err != nil {
		t.Fatal(err)
	}
	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, certKey)
	der, _, err := c.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, d := range der[1:] {
		ic, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pebble.Roots(t), Intermediates: inter}); err != nil {
		t.Fatalf("issued certificate does not chain to Pebble's root: %v", err)
	}
	if got := pebble.Orders(); !slices.Equal(got, []string{name}) {
		t.Fatalf("orders recorded: %q, want [%s]", got, name)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
