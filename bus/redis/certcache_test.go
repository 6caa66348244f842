package redis_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/keyhole-tunnel/keyhole/bus/redis"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

func TestCertCache(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := newBus(t, srv.URL(), redis.Options{}).CertCache("")
	b := newBus(t, srv.URL(), redis.Options{}).CertCache("")
	other := newBus(t, srv.URL(), redis.Options{}).CertCache("other:")

	t.Run("miss", func(t *testing.T) {
		if _, err := a.Get(ctx, "nothing.example"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("Get of a missing key: %v, want autocert.ErrCacheMiss", err)
		}
	})
	t.Run("shared between buses", func(t *testing.T) {
		data := []byte("-----BEGIN EC PRIVATE KEY-----\n\x00\xff binary-safe\n")
		if err := a.Put(ctx, "tunnel.example", data); err != nil {
			t.Fatal(err)
		}
		got, err := b.Get(ctx, "tunnel.example")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("other instance Get = %q, %v; want %q", got, err, data)
		}
		if _, err := other.Get(ctx, "tunnel.example"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("a cache with another prefix sees the key: %v", err)
		}
		if err := b.Delete(ctx, "tunnel.example"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Get(ctx, "tunnel.example"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("Get after Delete: %v, want autocert.ErrCacheMiss", err)
		}
		if err := a.Delete(ctx, "tunnel.example"); err != nil {
			t.Fatalf("deleting a missing key: %v", err)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		for key, wantTTL := range map[string]bool{
			"acme_account+key":     false,
			"tunnel.example":       false,
			"tunnel.example+rsa":   false,
			"tunnel.example+token": true,
			"Zm9vYmFy+http-01":     true,
		} {
			if err := a.Put(ctx, key, []byte("x")); err != nil {
				t.Fatal(err)
			}
			ttl := redisTTL(t, srv.Addr, redis.DefaultCertCachePrefix+key)
			if gotTTL := ttl > 0; gotTTL != wantTTL || ttl > 3600 {
				t.Errorf("%s: TTL %d s, want expiry %v (at most an hour)", key, ttl, wantTTL)
			}
		}
	})
}

func TestCertCacheRedisDown(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	c := newBus(t, srv.URL(), redis.Options{}).CertCache("")
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// An unreachable Redis is an error, never a miss: a miss would make
	// autocert order a certificate it may already have.
	if _, err := c.Get(ctx, "tunnel.example"); err == nil || errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("Get with Redis down: %v, want an error other than ErrCacheMiss", err)
	}
	if err := c.Put(ctx, "tunnel.example", []byte("x")); err == nil {
		t.Fatal("Put with Redis down succeeded")
	}
}

// redisTTL asks Redis for key's TTL in seconds (-1: none, -2: no key).
func redisTTL(t *testing.T, addr, key string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("*2\r\n$3\r\nTTL\r\n$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(buf[:n]))
	if !strings.HasPrefix(line, ":") {
		t.Fatalf("TTL %s: %q", key, line)
	}
	v, err := strconv.Atoi(line[1:])
	if err != nil {
		t.Fatalf("TTL %s: %q", key, line)
	}
	return v
}
