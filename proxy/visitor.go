package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
	"golang.org/x/crypto/bcrypt"
)

// visitorPolicy is what a tunnel's client declared, in its signed
// registration, about who may visit it: checked by the instance that
// receives a visitor's request, before anything is sent to the tunnel.
// nil admits everyone.
type visitorPolicy struct {
	users       []visitorUser
	allow, deny []netip.Prefix
	enc         string // the registry entry's form, made once
}

type visitorUser struct {
	digest [sha256.Size]byte // of the name: compared in constant time
	hash   []byte            // bcrypt
}

// newVisitorPolicy builds the policy a registration declares, or says why
// it is refused (the reason goes to the client).
func newVisitorPolicy(claims *messages.RegistrationClaims) (*visitorPolicy, error) {
	pr := claims.Protect
	if pr.Empty() {
		return nil, nil
	}
	if err := pr.Check(); err != nil {
		return nil, err
	}
	enc, err := json.Marshal(pr)
	if err != nil {
		return nil, err
	}
	vp := &visitorPolicy{allow: pr.AllowIP, deny: pr.DenyIP, enc: string(enc)}
	for _, u := range pr.BasicAuth {
		vp.users = append(vp.users, visitorUser{digest: sha256.Sum256([]byte(u.User)), hash: []byte(u.Hash)})
	}
	return vp, nil
}

// encode returns the policy in one line for the registry entry ("" for
// nil); decodeVisitorPolicy reverses it. The line is the JSON of the
// registration's Protection: encoding/json escapes every control
// character, so it holds no newline, and writes a struct's fields in one
// order, so the same rules make the same line.
func (vp *visitorPolicy) encode() string {
	if vp == nil {
		return ""
	}
	return vp.enc
}

// decodeVisitorPolicy reads what encode wrote, as strictly as a
// registration is read: a registry entry is input too. Anything but the
// exact encoding of valid, non-empty rules is an error.
func decodeVisitorPolicy(s string) (*visitorPolicy, error) {
	if s == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var pr messages.Protection
	if err := dec.Decode(&pr); err != nil {
		return nil, err
	}
	if pr.Empty() {
		return nil, errors.New("visitor rules: empty")
	}
	vp, err := newVisitorPolicy(&messages.RegistrationClaims{Protect: &pr})
	if err != nil {
		return nil, err
	}
	if vp.enc != s {
		// Trailing data, another order, duplicate members, other
		// spellings: not what this proxy writes.
		return nil, errors.New("visitor rules: not in their encoded form")
	}
	return vp, nil
}

// admit returns 0 if r may go through to the tunnel; otherwise it has
// written the answer (401 or 403, or 503 when too many logins wait), and
// returns its status, or 499 without an answer if the visitor left while
// its login waited.
func (vp *visitorPolicy) admit(p *Proxy, w http.ResponseWriter, r *http.Request) int {
	if vp == nil {
		return 0
	}
	if (len(vp.allow) > 0 || len(vp.deny) > 0) && !vp.addrAdmitted(p.visitorAddr(r)) {
		return publicError(w, http.StatusForbidden)
	}
	if len(vp.users) == 0 {
		return 0
	}
	switch err := vp.checkBasic(r.Context(), defaultLogins, r); {
	case err == nil:
		return 0
	case errors.Is(err, errLoginsBusy):
		w.Header().Set("Retry-After", "1")
		return publicError(w, http.StatusServiceUnavailable)
	case r.Context().Err() != nil:
		return 499
	default:
		w.Header().Set("WWW-Authenticate", `Basic realm="`+realm(r.Host)+`", charset="UTF-8"`)
		return publicError(w, http.StatusUnauthorized)
	}
}

// addrAdmitted applies the IP lists to a: deny first, then allow. An
// unknown address (a trusted proxy forwarded garbage) is refused: the
// rules cannot be shown to pass.
func (vp *visitorPolicy) addrAdmitted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, pfx := range vp.deny {
		if pfx.Contains(a) {
			return false
		}
	}
	if len(vp.allow) == 0 {
		return true
	}
	for _, pfx := range vp.allow {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// visitorAddr is the visitor's address as this proxy sees it: the TCP
// peer, unless the peer is one of Config.TrustedProxies; then the
// X-Forwarded-For entries are walked from the right, past every trusted
// proxy, to the first address that is not one (the leftmost, if all are).
// An entry that is not an address ends the walk with the zero Addr: who
// sent the request is unknown. IPv4-mapped IPv6 addresses are IPv4.
func (p *Proxy) visitorAddr(r *http.Request) netip.Addr {
	a := peerIP(r)
	if !p.trusted(a) {
		return a
	}
	hops := forwardedFor(r.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		if a = parseHop(hops[i]); !p.trusted(a) {
			return a
		}
	}
	return a
}

// forwardedFor returns the X-Forwarded-For entries, left to right, over
// all the header's lines.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, line := range h.Values("X-Forwarded-For") {
		for hop := range strings.SplitSeq(line, ",") {
			hops = append(hops, strings.TrimSpace(hop))
		}
	}
	return hops
}

// parseHop reads one X-Forwarded-For entry: an address, or an address with
// a port as some proxies write it ("192.0.2.1:443", "[2001:db8::1]:443").
func parseHop(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}
		}
		a = ap.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}
	}
	return a.Unmap()
}

// realm is the host part of the visitor's Host, which a browser shows in
// its prompt: a tunnel's hostname, so only its characters are kept.
func realm(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' {
			return c
		}
		return -1
	}, host)
}

// Basic auth checks: what a bcrypt comparison costs is what the cache and
// the slots are for.
const (
	// loginCacheEntries bounds each of the two caches of results (logins
	// that passed and that failed); loginCacheTTL is how long a result is
	// remembered. A result depends only on the hash and the credentials,
	// so it never goes stale: the time bound is for memory.
	loginCacheEntries = 4096
	loginCacheTTL     = 10 * time.Minute
	// maxLoginWaiters bounds, per slot, the logins waiting for one; more
	// get 503 at once rather than pile up.
	maxLoginWaiters = 64
)

// errLoginsBusy says a login found too many others waiting for a slot.
var errLoginsBusy = errors.New("too many logins waiting")

// errLoginFailed says the credentials are missing or wrong.
var errLoginFailed = errors.New("wrong or missing credentials")

// logins runs the bcrypt comparisons of basic auth: results cached, keyed
// by a salted hash of the hash and the credentials presented, and at most
// len(slots) comparisons at once, with those that wait bounded too. One
// serves the whole process, whichever Proxy asks: comparisons share the
// process's CPUs, and a result is the same for every Proxy.
type logins struct {
	compare    func(hash, password []byte) error // bcrypt's; a seam for tests
	slots      chan struct{}
	maxWaiting int64
	waiting    atomic.Int64
	entries    int
	ttl        time.Duration
	now        func() time.Time
	salt       [32]byte

	mu       sync.Mutex
	passed   map[[sha256.Size]byte]time.Time // key → when it expires
	failed   map[[sha256.Size]byte]time.Time
	inflight map[[sha256.Size]byte]*loginCall
}

// loginCall is a comparison under way, which requests with the same
// credentials wait for instead of running their own.
type loginCall struct {
	done    chan struct{}
	ok      bool
	err     error // the comparison did not run: its requester gave up
	waiters int   // requests waiting for it, under logins.mu (tests read it)
}

func newLogins(slots, entries int, ttl time.Duration) *logins {
	l := &logins{
		compare:    bcrypt.CompareHashAndPassword,
		slots:      make(chan struct{}, slots),
		maxWaiting: int64(slots * maxLoginWaiters),
		entries:    entries,
		ttl:        ttl,
		now:        time.Now,
		passed:     map[[sha256.Size]byte]time.Time{},
		failed:     map[[sha256.Size]byte]time.Time{},
		inflight:   map[[sha256.Size]byte]*loginCall{},
	}
	rand.Read(l.salt[:])
	return l
}

// loginSlots is how many bcrypt comparisons run at once: half the CPUs, at
// least one, so that a flood of wrong passwords leaves the rest to the
// tunnels' traffic.
func loginSlots() int { return max(1, runtime.GOMAXPROCS(0)/2) }

var defaultLogins = newLogins(loginSlots(), loginCacheEntries, loginCacheTTL)

// checkBasic returns nil if r presents, with HTTP Basic authentication,
// one of the policy's users and that user's password; errLoginFailed if
// not; errLoginsBusy, or ctx's error, if it could not find out.
func (vp *visitorPolicy) checkBasic(ctx context.Context, l *logins, r *http.Request) error {
	user, password, ok := r.BasicAuth()
	if !ok || len(user) > messages.MaxBasicAuthUserLen || len(password) > messages.MaxBasicAuthPassword {
		// No user has a longer name, and bcrypt would read only the first
		// 72 bytes of a longer password: either fails without a
		// comparison.
		return errLoginFailed
	}
	// Every user is compared, in constant time, and an unknown user still
	// costs a comparison (against the first user's hash): the time taken
	// does not tell which names exist.
	digest := sha256.Sum256([]byte(user))
	found := -1
	for i, u := range vp.users {
		if subtle.ConstantTimeCompare(u.digest[:], digest[:]) == 1 && found < 0 {
			found = i
		}
	}
	hash := vp.users[max(found, 0)].hash
	ok, err := l.check(ctx, hash, user, password, found >= 0)
	switch {
	case err != nil:
		return err
	case !ok:
		return errLoginFailed
	}
	return nil
}

// check compares password against hash, or finds the result of an earlier
// comparison of the same hash and credentials. known is false when user is
// not the hash's: the comparison runs all the same, and fails.
func (l *logins) check(ctx context.Context, hash []byte, user, password string, known bool) (bool, error) {
	key := l.key(hash, user, password, known)
	for {
		l.mu.Lock()
		now := l.now()
		if until, ok := l.passed[key]; ok && now.Before(until) {
			l.mu.Unlock()
			return true, nil
		}
		if until, ok := l.failed[key]; ok && now.Before(until) {
			l.mu.Unlock()
			return false, nil
		}
		if c, ok := l.inflight[key]; ok {
			c.waiters++
			l.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			if c.err == nil {
				return c.ok, nil
			}
			continue // its requester gave up before it ran: try again
		}
		c := &loginCall{done: make(chan struct{})}
		l.inflight[key] = c
		l.mu.Unlock()

		c.ok, c.err = l.compareInSlot(ctx, hash, password)
		c.ok = c.ok && known
		l.mu.Lock()
		delete(l.inflight, key)
		if c.err == nil {
			l.remember(key, c.ok, l.now())
		}
		l.mu.Unlock()
		close(c.done)
		return c.ok, c.err
	}
}

// compareInSlot waits for a slot, within ctx, and runs the comparison.
func (l *logins) compareInSlot(ctx context.Context, hash []byte, password string) (bool, error) {
	if l.waiting.Add(1) > l.maxWaiting {
		l.waiting.Add(-1)
		return false, errLoginsBusy
	}
	select {
	case l.slots <- struct{}{}:
		l.waiting.Add(-1)
	case <-ctx.Done():
		l.waiting.Add(-1)
		return false, ctx.Err()
	}
	defer func() { <-l.slots }()
	return l.compare(hash, []byte(password)) == nil, nil
}

// key names a comparison in the caches: a SHA-256, salted per process so
// that no table made beforehand matches it, of everything the result
// depends on (parts under 64 KiB each, length-prefixed).
func (l *logins) key(hash []byte, user, password string, known bool) [sha256.Size]byte {
	var b bytes.Buffer
	b.Write(l.salt[:])
	if known {
		b.WriteByte(1)
	} else {
		b.WriteByte(0)
	}
	for _, part := range [][]byte{hash, []byte(user), []byte(password)} {
		b.WriteByte(byte(len(part) >> 8))
		b.WriteByte(byte(len(part)))
		b.Write(part)
	}
	return sha256.Sum256(b.Bytes())
}

// remember records a result; l.mu is held. A full cache first loses what
// has expired, then, if still full, an arbitrary eighth: successes and
// failures are kept apart, so a flood of wrong passwords cannot push out
// the logins that work.
func (l *logins) remember(key [sha256.Size]byte, ok bool, now time.Time) {
	m := l.failed
	if ok {
		m = l.passed
	}
	if _, there := m[key]; !there && len(m) >= l.entries {
		for k, until := range m {
			if !now.Before(until) {
				delete(m, k)
			}
		}
		drop := len(m) - l.entries + max(l.entries/8, 1)
		for k := range m {
			if len(m) < l.entries && drop <= 0 {
				break
			}
			delete(m, k)
			drop--
		}
	}
	m[key] = now.Add(l.ttl)
}
