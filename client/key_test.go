package client_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/messages"
)

func hostname(t *testing.T, k crypto.Signer) string {
	t.Helper()
	h, err := messages.Hostname(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestLoadOrCreateKeyCreatesPrivateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config", "keyhole")
	path := filepath.Join(dir, "client.jwk")

	k1, err := client.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k1.(ed25519.PrivateKey); !ok {
		t.Errorf("new key is %T, want ed25519.PrivateKey", k1)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("key file mode %v, want 0600", m)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		di, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if m := di.Mode().Perm(); m != 0o700 {
			t.Errorf("directory %s mode %v, want 0700", d, m)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key (no temporary files left)", len(entries))
	}

	before, _ := os.ReadFile(path)
	k2, err := client.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := hostname(t, k1), hostname(t, k2)
	if h1 != h2 {
		t.Errorf("reloaded key gives hostname %s, first gave %s", h2, h1)
	}
	if !messages.IsHostnameLabel(h1) {
		t.Errorf("hostname %q is not a 52-character label", h1)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("loading the key rewrote the file")
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.jwk")
	const n = 8
	hosts := make([]string, n)
	errs := make([]error, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		wg.Go(func() {
			start.Wait()
			k, err := client.LoadOrCreateKey(path)
			if err != nil {
				errs[i] = err
				return
			}
			hosts[i], errs[i] = messages.Hostname(k.Public())
		})
	}
	start.Done()
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if hosts[i] != hosts[0] {
			t.Fatalf("goroutine %d got hostname %s, goroutine 0 got %s: two keys were created", i, hosts[i], hosts[0])
		}
	}
	k, err := client.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if h := hostname(t, k); h != hosts[0] {
		t.Fatalf("key on disk gives %s, the callers got %s", h, hosts[0])
	}
}

func jwkJSON(t *testing.T, key any) string {
	t.Helper()
	b, err := jose.JSONWebKey{Key: key}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLoadOrCreateKeyRefusesBadFile(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, content, want string
	}{
		{"garbage", "this is not a key\n", "not a JWK"},
		{"empty", "", "not a JWK"},
		{"truncated", `{"kty":"OKP","crv":"Ed25519",`, "not a JWK"},
		{"public Ed25519", jwkJSON(t, edPub), "private key"},
		{"public ECDSA", jwkJSON(t, p384.Public()), "private key"},
		{"symmetric", jwkJSON(t, []byte("0123456789abcdef0123456789abcdef")), "private key"},
		{"RSA private", jwkJSON(t, rsaKey), "private key"},
		{"P-384 private", jwkJSON(t, p384), "P-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "client.jwk")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := client.LoadOrCreateKey(path)
			if err == nil {
				t.Fatalf("loaded a %T from a %s file", k, tc.name)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q should name the file and say %q", err, tc.want)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.content {
				t.Errorf("the bad key file was overwritten with %q", b)
			}
		})
	}
}

func TestLoadOrCreateKeyP256(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "client.jwk")
	if err := os.WriteFile(path, []byte(jwkJSON(t, k)), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := client.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if hostname(t, got) != hostname(t, k) {
		t.Fatal("a P-256 key file loads as a different key")
	}
}

func TestLoadOrCreateKeyUnreadable(t *testing.T) {
	// A directory where the file should be: reading fails with something
	// other than "does not exist", and nothing may be created instead.
	path := filepath.Join(t.TempDir(), "client.jwk")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := client.LoadOrCreateKey(path); err == nil {
		t.Fatal("loaded a key from a directory")
	}
}
