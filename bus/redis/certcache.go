package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/crypto/acme/autocert"
)

// DefaultCertCachePrefix is the key prefix [Bus.CertCache] uses when given
// an empty one.
const DefaultCertCachePrefix = "keyhole:acme:"

// challengeTTL bounds how long an ACME challenge answer stays in Redis if
// the instance that stored it dies before deleting it. Challenges are
// answered within minutes.
const challengeTTL = time.Hour

// CertCache returns an autocert.Cache that keeps ACME state in Redis under
// keys starting with prefix (DefaultCertCachePrefix when empty): the
// account key, the certificates and their private keys, and the answers to
// pending challenges. Every proxy instance sharing the Redis server then
// serves every certificate, and answers any HTTP-01 or TLS-ALPN-01
// challenge, whichever instance placed the order.
//
// Certificates and the account key do not expire in Redis; autocert
// replaces a certificate when it renews it. Challenge answers expire after
// an hour in case the instance that stored one dies before deleting it.
//
// The cache holds private keys: protect the Redis server accordingly (a
// password, rediss://, a private network).
//
// In cluster mode the keys spread over the shards like any others; each
// entry is one key, so nothing needs them on one node.
func (b *Bus) CertCache(prefix string) autocert.Cache {
	if prefix == "" {
		prefix = DefaultCertCachePrefix
	}
	return &certCache{b: b, prefix: prefix}
}

type certCache struct {
	b      *Bus
	prefix string
}

var _ autocert.Cache = (*certCache)(nil)

// Get returns autocert.ErrCacheMiss for a missing key, which makes
// autocert order the certificate (or create the account key).
func (c *certCache) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := c.b.client.Get(ctx, c.prefix+key).Bytes()
	switch {
	case errors.Is(err, goredis.Nil):
		return nil, autocert.ErrCacheMiss
	case err != nil:
		c.b.failed(err)
		return nil, fmt.Errorf("redis cert cache: get %s: %w", key, err)
	}
	return data, nil
}

func (c *certCache) Put(ctx context.Context, key string, data []byte) error {
	var ttl time.Duration // 0: no expiry
	if isChallengeKey(key) {
		ttl = challengeTTL
	}
	if err := c.b.client.Set(ctx, c.prefix+key, data, ttl).Err(); err != nil {
		c.b.failed(err)
		return fmt.Errorf("redis cert cache: put %s: %w", key, err)
	}
	return nil
}

func (c *certCache) Delete(ctx context.Context, key string) error {
	if err := c.b.client.Del(ctx, c.prefix+key).Err(); err != nil {
		c.b.failed(err)
		return fmt.Errorf("redis cert cache: delete %s: %w", key, err)
	}
	return nil
}

// isChallengeKey reports whether autocert stores a challenge answer under
// key: "<domain>+token" for TLS-ALPN-01, "<path>+http-01" for HTTP-01.
func isChallengeKey(key string) bool {
	return strings.HasSuffix(key, "+token") || strings.HasSuffix(key, "+http-01")
}
