package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
	"golang.org/x/crypto/bcrypt"
)

func mustPolicy(t testing.TB, pr *messages.Protection) *visitorPolicy {
	t.Helper()
	vp, err := newVisitorPolicy(&messages.RegistrationClaims{Protect: pr})
	if err != nil {
		t.Fatal(err)
	}
	return vp
}

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

// hashOf is a real bcrypt hash at the lowest cost, quick to make and to
// compare.
func hashOf(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), messages.MinBcryptCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func visitorRequest(remote string, header ...string) *http.Request {
	r := httptest.NewRequest("GET", "http://"+testLabel+".localhost:8080/", nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

// admitted runs vp.admit for r on a proxy that trusts trusted, and returns
// the status and what was written.
func admitted(vp *visitorPolicy, trusted []netip.Prefix, r *http.Request) (int, *httptest.ResponseRecorder) {
	p := &Proxy{cfg: Config{TrustedProxies: trusted}}
	w := httptest.NewRecorder()
	return vp.admit(p, w, r), w
}

func TestVisitorIPRules(t *testing.T) {
	type probe struct {
		addr string
		want bool
	}
	for _, tc := range []struct {
		name        string
		allow, deny []string
		probes      []probe
	}{
		{"IPv4 /24 edges", []string{"192.0.2.0/24"}, nil, []probe{
			{"192.0.2.0", true}, {"192.0.2.255", true}, {"192.0.1.255", false}, {"192.0.3.0", false}}},
		{"IPv6 /48 edges", []string{"2001:db8:1::/48"}, nil, []probe{
			{"2001:db8:1::", true}, {"2001:db8:1:ffff:ffff:ffff:ffff:ffff", true},
			{"2001:db8:0:ffff:ffff:ffff:ffff:ffff", false}, {"2001:db8:2::", false}}},
		{"IPv4 /32", []string{"192.0.2.7/32"}, nil, []probe{
			{"192.0.2.7", true}, {"192.0.2.6", false}, {"192.0.2.8", false}}},
		{"IPv6 /128", []string{"2001:db8::7/128"}, nil, []probe{
			{"2001:db8::7", true}, {"2001:db8::6", false}, {"2001:db8::8", false}}},
		{"0.0.0.0/0 is every IPv4 address and no IPv6 one", []string{"0.0.0.0/0"}, nil, []probe{
			{"0.0.0.0", true}, {"255.255.255.255", true}, {"::ffff:192.0.2.7", true}, {"2001:db8::1", false}}},
		{"::/0 is every IPv6 address and no IPv4 one", []string{"::/0"}, nil, []probe{
			{"::", true}, {"2001:db8::1", true}, {"192.0.2.7", false}, {"::ffff:192.0.2.7", false}}},
		{"IPv4-mapped visitors are IPv4", []string{"192.0.2.0/24"}, nil, []probe{
			{"::ffff:192.0.2.1", true}, {"::ffff:192.0.3.1", false}}},
		{"deny beats allow", []string{"192.0.2.0/24", "2001:db8::/32"}, []string{"192.0.2.128/25", "2001:db8::bad/128"}, []probe{
			{"192.0.2.127", true}, {"192.0.2.128", false}, {"192.0.2.255", false},
			{"2001:db8::bac", true}, {"2001:db8::bad", false}, {"2001:db8::bae", true}}},
		{"deny alone admits the rest", nil, []string{"192.0.2.0/24"}, []probe{
			{"192.0.1.255", true}, {"192.0.2.0", false}, {"192.0.2.255", false}, {"192.0.3.0", true}, {"2001:db8::1", true}}},
		{"deny everything", nil, []string{"0.0.0.0/0", "::/0"}, []probe{{"192.0.2.1", false}, {"2001:db8::1", false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vp := mustPolicy(t, &messages.Protection{AllowIP: prefixes(tc.allow...), DenyIP: prefixes(tc.deny...)})
			for _, pr := range tc.probes {
				status, w := admitted(vp, nil, visitorRequest(netip.AddrPortFrom(netip.MustParseAddr(pr.addr), 4321).String()))
				if got := status == 0; got != pr.want {
					t.Errorf("%s: admitted %v, want %v", pr.addr, got, pr.want)
				}
				if status != 0 && (status != http.StatusForbidden || w.Code != http.StatusForbidden) {
					t.Errorf("%s: status %d, written %d, want 403", pr.addr, status, w.Code)
				}
			}
		})
	}
	t.Run("refusal page", func(t *testing.T) {
		vp := mustPolicy(t, &messages.Protection{DenyIP: prefixes("192.0.2.0/24")})
		_, w := admitted(vp, nil, visitorRequest("192.0.2.1:1"))
		if ct := w.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		if body := w.Body.String(); body != PublicMessageText(http.StatusForbidden) {
			t.Errorf("body %q, want the generic page", body)
		}
	})
	t.Run("unknown address", func(t *testing.T) {
		vp := mustPolicy(t, &messages.Protection{DenyIP: prefixes("192.0.2.0/24")})
		if status, _ := admitted(vp, nil, visitorRequest("not an address")); status != http.StatusForbidden {
			t.Errorf("a visitor of unknown address: %d, want 403", status)
		}
	})
}

// PublicMessageText is the body publicError writes for status.
func PublicMessageText(status int) string { return publicMessages[status] + "\n" }

func TestVisitorAddr(t *testing.T) {
	lb := prefixes("10.0.0.0/8", "2001:db8:ffff::/48")
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		remote  string
		xff     []string
		want    string // "" for the zero Addr
	}{
		{"untrusted peer, no header", lb, "203.0.113.9:1000", nil, "203.0.113.9"},
		{"untrusted peer's header is ignored", lb, "203.0.113.9:1000", []string{"198.51.100.1"}, "203.0.113.9"},
		{"no trusted proxies at all", nil, "10.0.0.1:1000", []string{"198.51.100.1"}, "10.0.0.1"},
		{"trusted peer: its entry", lb, "10.0.0.1:1000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"trusted peer: a spoofed entry left of its own is not read", lb, "10.0.0.1:1000", []string{"198.51.100.1, 203.0.113.9"}, "203.0.113.9"},
		{"chain of trusted proxies", lb, "10.0.0.1:1000", []string{"198.51.100.1, 203.0.113.9, 10.0.0.3, 10.0.0.2"}, "203.0.113.9"},
		{"chain over several header lines", lb, "10.0.0.1:1000", []string{"198.51.100.1, 203.0.113.9", "10.0.0.2"}, "203.0.113.9"},
		{"every entry trusted: the leftmost", lb, "10.0.0.1:1000", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"trusted peer without a header: the peer", lb, "10.0.0.1:1000", nil, "10.0.0.1"},
		{"garbage where the visitor should be", lb, "10.0.0.1:1000", []string{"unknown"}, ""},
		{"garbage past the visitor is not read", lb, "10.0.0.1:1000", []string{"garbage, 203.0.113.9"}, "203.0.113.9"},
		{"empty entry", lb, "10.0.0.1:1000", []string{"203.0.113.9, "}, ""},
		{"entry with a port", lb, "10.0.0.1:1000", []string{"203.0.113.9:5555"}, "203.0.113.9"},
		{"IPv6 entry with a port", lb, "10.0.0.1:1000", []string{"[2001:db8::9]:443"}, "2001:db8::9"},
		{"IPv6 entry with a zone", lb, "10.0.0.1:1000", []string{"fe80::1%eth0"}, ""},
		{"IPv4-mapped entry", lb, "10.0.0.1:1000", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"IPv4-mapped trusted entry is trusted", lb, "10.0.0.1:1000", []string{"203.0.113.9, ::ffff:10.0.0.2"}, "203.0.113.9"},
		{"IPv4-mapped trusted peer", lb, "[::ffff:10.0.0.1]:1000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"IPv4-mapped untrusted peer", lb, "[::ffff:203.0.113.9]:1000", []string{"10.0.0.5"}, "203.0.113.9"},
		{"IPv6 trusted peer", lb, "[2001:db8:ffff::1]:1000", []string{"2001:db8::9"}, "2001:db8::9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Proxy{cfg: Config{TrustedProxies: tc.trusted}}
			r := visitorRequest(tc.remote)
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			got := p.visitorAddr(r)
			if tc.want == "" {
				if got.IsValid() {
					t.Fatalf("visitorAddr = %s, want unknown", got)
				}
				return
			}
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("visitorAddr = %s, want %s", got, tc.want)
			}
		})
	}
	// The walk decides the IP rules: a spoofed entry from an untrusted
	// peer cannot get a visitor in.
	vp := mustPolicy(t, &messages.Protection{AllowIP: prefixes("198.51.100.0/24")})
	if status, _ := admitted(vp, lb, visitorRequest("203.0.113.9:1", "X-Forwarded-For", "198.51.100.1")); status != http.StatusForbidden {
		t.Errorf("spoofed X-Forwarded-For from an untrusted peer: %d, want 403", status)
	}
	if status, _ := admitted(vp, lb, visitorRequest("10.0.0.1:1", "X-Forwarded-For", "198.51.100.1")); status != 0 {
		t.Errorf("X-Forwarded-For from a trusted proxy: %d, want admitted", status)
	}
}

func basicHeader(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func TestVisitorBasicAuth(t *testing.T) {
	vp := mustPolicy(t, &messages.Protection{BasicAuth: []messages.BasicAuthUser{
		{User: "alice", Hash: hashOf(t, "wonder:land,1")},
		{User: "bob", Hash: hashOf(t, "builder")},
	}})
	wantChallenge := `Basic realm="` + testLabel + `.localhost", charset="UTF-8"`
	for _, tc := range []struct {
		name, authorization string
		want                int
	}{
		{"right", basicHeader("alice", "wonder:land,1"), 0},
		{"second user", basicHeader("bob", "builder"), 0},
		{"scheme in lower case", "basic " + base64.StdEncoding.EncodeToString([]byte("bob:builder")), 0},
		{"wrong password", basicHeader("alice", "wonder:land,2"), 401},
		{"another user's password", basicHeader("alice", "builder"), 401},
		{"wrong user", basicHeader("carol", "builder"), 401},
		{"user name in another case", basicHeader("Alice", "wonder:land,1"), 401},
		{"password prefix", basicHeader("alice", "wonder"), 401},
		{"missing", "", 401},
		{"not base64", "Basic %%%", 401},
		{"no colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), 401},
		{"bearer scheme", "Bearer " + base64.StdEncoding.EncodeToString([]byte("alice:wonder:land,1")), 401},
		{"scheme alone", "Basic", 401},
		{"password over bcrypt's 72 bytes", basicHeader("alice", "wonder:land,1"+strings.Repeat("x", 72)), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := visitorRequest("192.0.2.1:1")
			if tc.authorization != "" {
				r.Header.Set("Authorization", tc.authorization)
			}
			status, w := admitted(vp, nil, r)
			if status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
			if tc.want == 0 {
				if w.Code != 200 || w.Body.Len() != 0 || len(w.Header()) != 0 {
					t.Errorf("an admitted request had an answer written: %d %q %v", w.Code, w.Body, w.Header())
				}
				return
			}
			if w.Code != 401 {
				t.Errorf("written %d", w.Code)
			}
			if got := w.Header().Values("WWW-Authenticate"); len(got) != 1 || got[0] != wantChallenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, wantChallenge)
			}
			if body := w.Body.String(); body != PublicMessageText(401) {
				t.Errorf("body %q", body)
			}
		})
	}
	t.Run("IP rules first", func(t *testing.T) {
		vp := mustPolicy(t, &messages.Protection{
			BasicAuth: []messages.BasicAuthUser{{User: "alice", Hash: hashOf(t, "pw")}},
			DenyIP:    prefixes("192.0.2.0/24"),
		})
		r := visitorRequest("192.0.2.1:1", "Authorization", basicHeader("alice", "pw"))
		if status, w := admitted(vp, nil, r); status != 403 || w.Header().Get("WWW-Authenticate") != "" {
			t.Errorf("a denied address with the right password: %d %v, want 403 without a challenge", status, w.Header())
		}
		r = visitorRequest("192.0.3.1:1", "Authorization", basicHeader("alice", "pw"))
		if status, _ := admitted(vp, nil, r); status != 0 {
			t.Errorf("an address not denied, with the right password: %d", status)
		}
	})
}

func TestRealm(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{testLabel + ".localhost:8080", testLabel + ".localhost"},
		{"myapp.tunnel.example", "myapp.tunnel.example"},
		{`evil".example:1`, "evil.example"},
		{"[::1]:80", "1"},
	} {
		if got := realm(tc.in); got != tc.want {
			t.Errorf("realm(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// countingLogins is a logins whose comparisons are counted and decided by
// a table rather than bcrypt.
func countingLogins(slots, entries int) (*logins, *atomic.Int64) {
	l := newLogins(slots, entries, time.Minute)
	var n atomic.Int64
	l.compare = func(hash, password []byte) error {
		n.Add(1)
		if string(hash) == "hash-of-"+string(password) {
			return nil
		}
		return bcrypt.ErrMismatchedHashAndPassword
	}
	return l, &n
}

// seamPolicy has users whose "hashes" the counting compare understands.
func seamPolicy(users ...string) *visitorPolicy {
	vp := &visitorPolicy{}
	for _, u := range users {
		name, pw, _ := strings.Cut(u, ":")
		vp.users = append(vp.users, visitorUser{digest: sha256Sum(name), hash: []byte("hash-of-" + pw)})
	}
	return vp
}

func sha256Sum(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }

func authRequest(user, password string) *http.Request {
	return visitorRequest("192.0.2.1:1", "Authorization", basicHeader(user, password))
}

func TestLoginCache(t *testing.T) {
	vp := seamPolicy("alice:pw", "bob:other")
	ctx := context.Background()
	t.Run("success cached", func(t *testing.T) {
		l, n := countingLogins(1, 16)
		for i := range 3 {
			if err := vp.checkBasic(ctx, l, authRequest("alice", "pw")); err != nil {
				t.Fatalf("attempt %d: %v", i, err)
			}
		}
		if n.Load() != 1 {
			t.Fatalf("%d comparisons for three requests with the same credentials, want 1", n.Load())
		}
	})
	t.Run("failure cached", func(t *testing.T) {
		l, n := countingLogins(1, 16)
		for i := range 3 {
			if err := vp.checkBasic(ctx, l, authRequest("alice", "nope")); !errors.Is(err, errLoginFailed) {
				t.Fatalf("attempt %d: %v", i, err)
			}
		}
		if n.Load() != 1 {
			t.Fatalf("%d comparisons, want 1", n.Load())
		}
	})
	t.Run("other credentials are compared", func(t *testing.T) {
		l, n := countingLogins(1, 16)
		for _, c := range [][2]string{{"alice", "pw"}, {"alice", "pw2"}, {"bob", "pw"}, {"bob", "other"}} {
			vp.checkBasic(ctx, l, authRequest(c[0], c[1]))
		}
		if n.Load() != 4 {
			t.Fatalf("%d comparisons for four different credentials, want 4", n.Load())
		}
	})
	t.Run("an unknown user costs a comparison too, and fails", func(t *testing.T) {
		l, n := countingLogins(1, 16)
		// The first user's password, under another name.
		if err := vp.checkBasic(ctx, l, authRequest("mallory", "pw")); !errors.Is(err, errLoginFailed) {
			t.Fatalf("unknown user: %v", err)
		}
		if n.Load() != 1 {
			t.Fatalf("%d comparisons for an unknown user, want 1", n.Load())
		}
		// Its cached failure is not alice's success.
		if err := vp.checkBasic(ctx, l, authRequest("alice", "pw")); err != nil {
			t.Fatalf("alice after mallory: %v", err)
		}
	})
	t.Run("no comparison for what cannot match", func(t *testing.T) {
		l, n := countingLogins(1, 16)
		for _, r := range []*http.Request{visitorRequest("192.0.2.1:1"), authRequest(strings.Repeat("u", 65), "pw"), authRequest("alice", strings.Repeat("p", 73))} {
			if err := vp.checkBasic(ctx, l, r); !errors.Is(err, errLoginFailed) {
				t.Fatalf("%v", err)
			}
		}
		if n.Load() != 0 {
			t.Fatalf("%d comparisons, want none", n.Load())
		}
	})
	t.Run("expiry", func(t *testing.T) {
		l, n := countingLogins(1, 16)
		now := time.Now()
		l.now = func() time.Time { return now }
		vp.checkBasic(ctx, l, authRequest("alice", "pw"))
		now = now.Add(l.ttl - time.Nanosecond)
		vp.checkBasic(ctx, l, authRequest("alice", "pw"))
		if n.Load() != 1 {
			t.Fatalf("within the TTL: %d comparisons, want 1", n.Load())
		}
		now = now.Add(time.Nanosecond)
		vp.checkBasic(ctx, l, authRequest("alice", "pw"))
		if n.Load() != 2 {
			t.Fatalf("at the TTL: %d comparisons, want 2", n.Load())
		}
	})
}

func TestLoginCacheBound(t *testing.T) {
	const entries = 16
	vp := seamPolicy("alice:pw")
	ctx := context.Background()
	l, n := countingLogins(1, entries)
	if err := vp.checkBasic(ctx, l, authRequest("alice", "pw")); err != nil {
		t.Fatal(err)
	}
	for i := range 5 * entries {
		vp.checkBasic(ctx, l, authRequest("alice", fmt.Sprint("guess", i)))
		l.mu.Lock()
		size := len(l.failed)
		l.mu.Unlock()
		if size > entries {
			t.Fatalf("after %d failures the cache holds %d, over its bound %d", i+1, size, entries)
		}
	}
	if n.Load() != 1+5*entries {
		t.Fatalf("%d comparisons, want %d", n.Load(), 1+5*entries)
	}
	// The flood of failures did not push out the login that works.
	before := n.Load()
	if err := vp.checkBasic(ctx, l, authRequest("alice", "pw")); err != nil {
		t.Fatal(err)
	}
	if n.Load() != before {
		t.Error("the good login was compared again after a flood of wrong ones")
	}
	// Successes are bounded too.
	l2, _ := countingLogins(1, entries)
	var many []string
	for i := range 3 * entries {
		many = append(many, fmt.Sprintf("u%d:p%d", i, i))
	}
	vp2 := seamPolicy(many...)
	for i := range 3 * entries {
		if err := vp2.checkBasic(ctx, l2, authRequest(fmt.Sprint("u", i), fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	if len(l2.passed) > entries {
		t.Errorf("%d successes cached, over the bound %d", len(l2.passed), entries)
	}
}

// blockingLogins is a logins whose comparisons wait for release, and
// which counts them and records how many ran at once.
type blockingLogins struct {
	*logins
	release          chan struct{}
	started          chan struct{}
	running, maxSeen atomic.Int64
	calls            atomic.Int64
}

func newBlockingLogins(slots int) *blockingLogins {
	b := &blockingLogins{logins: newLogins(slots, 64, time.Minute), release: make(chan struct{}), started: make(chan struct{}, 64)}
	b.compare = func(hash, password []byte) error {
		b.calls.Add(1)
		n := b.running.Add(1)
		for {
			m := b.maxSeen.Load()
			if n <= m || b.maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		b.started <- struct{}{}
		<-b.release
		b.running.Add(-1)
		return nil
	}
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling, with the deadline above
	}
}

func TestLoginConcurrency(t *testing.T) {
	ctx := context.Background()
	t.Run("at most the slots at once", func(t *testing.T) {
		const slots, logins = 2, 6
		b := newBlockingLogins(slots)
		var users []string
		for i := range logins {
			users = append(users, fmt.Sprintf("u%d:p%d", i, i))
		}
		vp := seamPolicy(users...)
		var wg sync.WaitGroup
		errs := make(chan error, logins)
		for i := range logins {
			wg.Go(func() { errs <- vp.checkBasic(ctx, b.logins, authRequest(fmt.Sprint("u", i), fmt.Sprint("p", i))) })
		}
		for range slots {
			<-b.started
		}
		waitFor(t, "the other logins to wait for a slot", func() bool { return b.waiting.Load() == logins-slots })
		if r := b.running.Load(); r != slots {
			t.Fatalf("%d comparisons running, want %d", r, slots)
		}
		close(b.release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if m := b.maxSeen.Load(); m != slots {
			t.Errorf("%d comparisons ran at once, want at most and at last %d", m, slots)
		}
		if c := b.calls.Load(); c != logins {
			t.Errorf("%d comparisons, want %d", c, logins)
		}
	})
	t.Run("the same credentials wait for one comparison", func(t *testing.T) {
		b := newBlockingLogins(4)
		vp := seamPolicy("alice:pw")
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range 8 {
			wg.Go(func() {
				if vp.checkBasic(ctx, b.logins, authRequest("alice", "pw")) != nil {
					failed.Add(1)
				}
			})
		}
		<-b.started
		waitFor(t, "the others to wait for the comparison under way", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			for _, c := range b.inflight {
				return c.waiters == 7
			}
			return false
		})
		close(b.release)
		wg.Wait()
		if c := b.calls.Load(); c != 1 {
			t.Errorf("%d comparisons for eight requests at once with the same credentials, want 1", c)
		}
		if failed.Load() != 0 {
			t.Errorf("%d failed", failed.Load())
		}
	})
	t.Run("waiting ends with the request", func(t *testing.T) {
		b := newBlockingLogins(1)
		vp := seamPolicy("alice:pw", "bob:pw")
		done := make(chan error, 1)
		go func() { done <- vp.checkBasic(ctx, b.logins, authRequest("alice", "pw")) }()
		<-b.started
		cctx, cancel := context.WithCancel(ctx)
		waiting := make(chan error, 1)
		go func() { waiting <- vp.checkBasic(cctx, b.logins, authRequest("bob", "pw")) }()
		waitFor(t, "bob to wait for the slot", func() bool { return b.waiting.Load() == 1 })
		cancel()
		if err := <-waiting; !errors.Is(err, context.Canceled) {
			t.Errorf("a cancelled wait: %v, want context.Canceled", err)
		}
		if w := b.waiting.Load(); w != 0 {
			t.Errorf("%d still counted as waiting", w)
		}
		close(b.release)
		if err := <-done; err != nil {
			t.Error(err)
		}
		// Nothing was cached for bob: his next login compares.
		if err := vp.checkBasic(ctx, b.logins, authRequest("bob", "pw")); err != nil {
			t.Error(err)
		}
		if c := b.calls.Load(); c != 2 {
			t.Errorf("%d comparisons, want 2", c)
		}
	})
	t.Run("too many waiting get busy", func(t *testing.T) {
		b := newBlockingLogins(1)
		b.maxWaiting = 2
		var users []string
		for i := range 4 {
			users = append(users, fmt.Sprintf("u%d:p", i))
		}
		vp := seamPolicy(users...)
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for i := range 3 {
			wg.Go(func() { errs <- vp.checkBasic(ctx, b.logins, authRequest(fmt.Sprint("u", i), "p")) })
			if i == 0 {
				<-b.started
			}
		}
		waitFor(t, "two waiting", func() bool { return b.waiting.Load() == 2 })
		if err := vp.checkBasic(ctx, b.logins, authRequest("u3", "p")); !errors.Is(err, errLoginsBusy) {
			t.Errorf("a third waiter: %v, want errLoginsBusy", err)
		}
		close(b.release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("admit answers busy with 503", func(t *testing.T) {
		// Through admit, on the process's logins: fill its waiting room
		// by hand rather than with real comparisons.
		vp := mustPolicy(t, &messages.Protection{BasicAuth: []messages.BasicAuthUser{{User: "alice", Hash: hashOf(t, "pw")}}})
		defaultLogins.waiting.Add(defaultLogins.maxWaiting)
		defer defaultLogins.waiting.Add(-defaultLogins.maxWaiting)
		status, w := admitted(vp, nil, authRequest("alice", fmt.Sprint("untried ", time.Now().UnixNano())))
		if status != 503 || w.Header().Get("Retry-After") != "1" {
			t.Errorf("status %d, Retry-After %q; want 503 and 1", status, w.Header().Get("Retry-After"))
		}
	})
}

func TestVisitorPolicyRegistration(t *testing.T) {
	for _, tc := range []struct {
		name string
		pr   *messages.Protection
		want string // "" for accepted
	}{
		{"none", nil, ""},
		{"empty", &messages.Protection{}, ""},
		{"cost 12", &messages.Protection{BasicAuth: []messages.BasicAuthUser{{User: "a", Hash: "$2a$12$" + strings.Repeat("x", 53)}}}, ""},
		{"cost 13", &messages.Protection{BasicAuth: []messages.BasicAuthUser{{User: "a", Hash: "$2a$13$" + strings.Repeat("x", 53)}}}, "bcrypt cost 13 is over the proxy's limit of 12"},
		{"malformed hash", &messages.Protection{BasicAuth: []messages.BasicAuthUser{{User: "a", Hash: "plain password"}}}, "malformed bcrypt hash"},
		{"non-canonical prefix", &messages.Protection{AllowIP: prefixes("192.0.2.1/24")}, "not in canonical form"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vp, err := newVisitorPolicy(&messages.RegistrationClaims{Protect: tc.pr})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tc.pr.Empty() != (vp == nil) {
					t.Fatalf("policy %v for protection %+v", vp, tc.pr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || vp != nil {
				t.Fatalf("got %v, %v; want a refusal with %q", vp, err, tc.want)
			}
		})
	}
}

func TestVisitorPolicyEncoding(t *testing.T) {
	full := &messages.Protection{
		BasicAuth: []messages.BasicAuthUser{{User: "alice", Hash: hashOf(t, "pw")}, {User: "Zoë", Hash: hashOf(t, "pw2")}},
		AllowIP:   prefixes("192.0.2.0/24", "2001:db8::/32"),
		DenyIP:    prefixes("192.0.2.7/32"),
	}
	t.Run("round trip", func(t *testing.T) {
		for _, pr := range []*messages.Protection{
			full,
			{AllowIP: prefixes("0.0.0.0/0")},
			{DenyIP: prefixes("::/0")},
			{BasicAuth: full.BasicAuth[:1]},
		} {
			vp := mustPolicy(t, pr)
			enc := vp.encode()
			if enc == "" || strings.ContainsAny(enc, "\n\r") {
				t.Fatalf("encoding %q: want one non-empty line", enc)
			}
			again := mustPolicy(t, pr).encode()
			if again != enc {
				t.Fatalf("two encodings of the same rules differ:\n%s\n%s", enc, again)
			}
			back, err := decodeVisitorPolicy(enc)
			if err != nil {
				t.Fatalf("decode %q: %v", enc, err)
			}
			if back.encode() != enc || len(back.users) != len(vp.users) || len(back.allow) != len(vp.allow) || len(back.deny) != len(vp.deny) {
				t.Fatalf("decoded %+v from %q, want %+v", back, enc, vp)
			}
			for i := range vp.users {
				if back.users[i].digest != vp.users[i].digest || string(back.users[i].hash) != string(vp.users[i].hash) {
					t.Fatalf("user %d differs", i)
				}
			}
		}
	})
	t.Run("nil", func(t *testing.T) {
		var vp *visitorPolicy
		if vp.encode() != "" {
			t.Error("nil policy encodes to something")
		}
		if vp, err := decodeVisitorPolicy(""); vp != nil || err != nil {
			t.Errorf(`decode "": %v, %v`, vp, err)
		}
		if status, _ := admitted(nil, nil, visitorRequest("192.0.2.1:1")); status != 0 {
			t.Errorf("nil policy refused with %d", status)
		}
	})
	enc := mustPolicy(t, full).encode()
	hash := full.BasicAuth[0].Hash
	for _, tc := range []struct{ name, s string }{
		{"trailing data", enc + "x"},
		{"a second value", enc + "{}"},
		{"leading space", " " + enc},
		{"trailing newline", enc + "\n"},
		{"unknown member", strings.Replace(enc, `{"basic_auth"`, `{"x":1,"basic_auth"`, 1)},
		{"members in another order", `{"allow_ip":["192.0.2.0/24"],"basic_auth":[{"user":"alice","hash":"` + hash + `"}]}`},
		{"duplicate member", `{"allow_ip":["192.0.2.0/24"],"allow_ip":["192.0.2.0/24"]}`},
		{"member in another case", `{"Allow_IP":["192.0.2.0/24"]}`},
		{"empty object", `{}`},
		{"empty lists", `{"allow_ip":[]}`},
		{"null", `null`},
		{"not JSON", `allow 192.0.2.0/24`},
		{"invalid prefix", `{"allow_ip":[""]}`},
		{"non-canonical prefix", `{"allow_ip":["192.0.2.1/24"]}`},
		{"IPv4-mapped prefix", `{"allow_ip":["::ffff:192.0.2.0/120"]}`},
		{"cost over the limit", `{"basic_auth":[{"user":"alice","hash":"$2a$13$` + strings.Repeat("x", 53) + `"}]}`},
		{"malformed hash", `{"basic_auth":[{"user":"alice","hash":"pw"}]}`},
		{"user without a hash", `{"basic_auth":[{"user":"alice"}]}`},
		{"too many prefixes", `{"deny_ip":[` + strings.Repeat(`"192.0.2.0/24",`, messages.MaxIPRules) + `"192.0.2.0/24"]}`},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			if vp, err := decodeVisitorPolicy(tc.s); err == nil || vp != nil {
				t.Fatalf("decode %q: %+v, %v; want an error", tc.s, vp, err)
			}
		})
	}
}
