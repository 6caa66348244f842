package redis

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseClusterURL checks what the cluster URL form turns into, TLS
// included, which the tests against a real cluster cannot show (the test
// cluster has no TLS).
func TestParseClusterURL(t *testing.T) {
	tests := []struct {
		url        string
		addrs      []string
		user, pass string
		tlsName    string // "" means no TLS
		dial       time.Duration
		wantErr    string
	}{
		{url: "redis+cluster://10.0.0.1:7000", addrs: []string{"10.0.0.1:7000"}},
		{url: "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002/", addrs: []string{"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"}},
		{url: "redis+cluster://:s%3Acr%40t@a:1,b:2/", addrs: []string{"a:1", "b:2"}, pass: "s:cr@t"},
		{url: "redis+cluster://keyhole:pw@a:1/", addrs: []string{"a:1"}, user: "keyhole", pass: "pw"},
		{url: "rediss+cluster://keyhole:pw@node-a.redis.example:6380,node-b.redis.example:6380/", addrs: []string{"node-a.redis.example:6380", "node-b.redis.example:6380"}, user: "keyhole", pass: "pw", tlsName: "node-a.redis.example"},
		{url: "Rediss+Cluster://a:1", addrs: []string{"a:1"}, tlsName: "a"},
		{url: "redis+cluster://[::1]:7000/", addrs: []string{"[::1]:7000"}},
		{url: "redis+cluster://a:1,b:2/?dial_timeout=2s", addrs: []string{"a:1", "b:2"}, dial: 2 * time.Second},
		{url: "redis+cluster://a:1/0", wantErr: "only database 0"},
		{url: "redis+cluster://a,b:2/", wantErr: `node "a"`},
		{url: "redis+cluster://a:1,b/", wantErr: "not a URL"},
		{url: "redis+cluster://a:1,,b:2/", wantErr: `node ""`},
		{url: "redis+cluster:///", wantErr: "no node"},
		{url: "redis+cluster://a:1/?addr=b:2", wantErr: "addr="},
		{url: "redis+cluster://a:1/?colour=blue", wantErr: "colour"},
		{url: "redis+cluster://:se%zzcret@a:1/", wantErr: "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if !isClusterURL(tt.url) {
				t.Fatalf("isClusterURL(%q) = false", tt.url)
			}
			co, err := parseClusterURL(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseClusterURL: %v, want an error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "se%zzcret") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseClusterURL: %v", err)
			}
			if !slices.Equal(co.Addrs, tt.addrs) {
				t.Errorf("Addrs = %q, want %q", co.Addrs, tt.addrs)
			}
			if co.Username != tt.user || co.Password != tt.pass {
				t.Errorf("user %q password %q, want %q %q", co.Username, co.Password, tt.user, tt.pass)
			}
			switch {
			case tt.tlsName == "" && co.TLSConfig != nil:
				t.Errorf("TLS configured for %s", tt.url)
			case tt.tlsName != "" && (co.TLSConfig == nil || co.TLSConfig.ServerName != tt.tlsName):
				t.Errorf("TLS config %+v, want server name %q", co.TLSConfig, tt.tlsName)
			}
			if co.DialTimeout != tt.dial {
				t.Errorf("DialTimeout %s, want %s", co.DialTimeout, tt.dial)
			}
		})
	}
	for _, u := range []string{"redis://a:1/0", "rediss://a:1", "redis+sentinel://a:1", "a:1", "unix:///tmp/redis.sock"} {
		if isClusterURL(u) {
			t.Errorf("isClusterURL(%q) = true", u)
		}
	}
}
