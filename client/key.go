package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	jose "github.com/go-jose/go-jose/v4"
)

// DefaultKeyPath is where the client keeps its key unless told otherwise:
// keyhole/client.jwk under the user's configuration directory.
func DefaultKeyPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find config directory: %w", err)
	}
	return filepath.Join(dir, "keyhole", "client.jwk"), nil
}

// LoadOrCreateKey reads the private JWK at path, or creates an Ed25519 key
// there (mode 0600) if the file does not exist. The same file always gives
// the same hostname. A new key is written to a temporary file and renamed
// into place, so a crash never leaves a half-written key.
func LoadOrCreateKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return parseKey(path, b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	out, err := jose.JSONWebKey{Key: priv, Use: "sig", Algorithm: string(jose.EdDSA)}.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	err = writeNew(path, append(out, '\n'))
	if errors.Is(err, fs.ErrExist) {
		// Another process created the key in the meantime: use theirs.
		return LoadOrCreateKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	return priv, nil
}

// writeNew creates path with data and mode 0600, failing with fs.ErrExist
// if it already exists. The data goes to a temporary file first and is
// linked into place, so nobody ever reads a half-written file.
func writeNew(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".client-*.jwk")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}

func parseKey(path string, b []byte) (crypto.Signer, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("key file %s is not a JWK: %w", path, err)
	}
	k, ok := jwk.Key.(crypto.Signer)
	if !ok || checkKey(k) != nil {
		return nil, fmt.Errorf("key file %s must hold an Ed25519 or P-256 private key", path)
	}
	return k, nil
}

// checkKey reports whether k can sign a registration: the proxy accepts
// only Ed25519 and P-256 keys.
func checkKey(k crypto.Signer) error {
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return nil
	case *ecdsa.PrivateKey:
		if k.Curve == elliptic.P256() {
			return nil
		}
		return fmt.Errorf("ECDSA key on %s: only P-256 is accepted", k.Curve.Params().Name)
	}
	return fmt.Errorf("key must be an Ed25519 or P-256 private key, not %T", k)
}
