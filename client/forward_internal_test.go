package client

import (
	"net/url"
	"testing"
)

func TestJoinURL(t *testing.T) {
	for _, tc := range []struct {
		base, uri, want string
	}{
		{"http://h", "/", "http://h/"},
		{"http://h", "/a/b?x=1&x=2", "http://h/a/b?x=1&x=2"},
		{"http://h/", "/a", "http://h/a"},
		{"http://h/base", "/a", "http://h/base/a"},
		{"http://h/base/", "/a/", "http://h/base/a/"},
		{"http://h/base", "/", "http://h/base/"},
		{"http://h/base?ignored=1", "/a?k=v", "http://h/base/a?k=v"},
		{"http://h/base", "/a%2Fb", "http://h/base/a%2Fb"},
		{"http://h/x%2Fy", "/z", "http://h/x%2Fy/z"},
		{"http://h/x%2Fy", "/a%2Fb", "http://h/x%2Fy/a%2Fb"},
		{"http://h/b%20c", "/d%20e", "http://h/b%20c/d%20e"},
		{"https://h:8443/p", "/q?s=a+b%26c", "https://h:8443/p/q?s=a+b%26c"},
	} {
		base, err := url.Parse(tc.base)
		if err != nil {
			t.Fatal(err)
		}
		u, err := joinURL(base, tc.uri)
		if err != nil {
			t.Errorf("joinURL(%s, %s): %v", tc.base, tc.uri, err)
			continue
		}
		if got := u.String(); got != tc.want {
			t.Errorf("joinURL(%s, %s) = %s, want %s", tc.base, tc.uri, got, tc.want)
		}
	}
	for _, bad := range []string{"", "relative", "http://other/abs"} {
		base, _ := url.Parse("http://h")
		if u, err := joinURL(base, bad); err == nil && u.Host != "h" {
			t.Errorf("joinURL(%q) escaped the target: %s", bad, u)
		}
	}
}
