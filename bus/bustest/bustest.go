package bustest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/bus"
)

// waitTimeout bounds every wait for a delivery. Deliveries normally take
// microseconds; the bound only keeps a broken implementation from hanging.
const waitTimeout = 10 * time.Second

// Run runs the conformance suite. newBus is called once per subtest and must
// return a bus whose Bus and Registry share one backend; it should register
// Close with t.Cleanup (the suite may also call Close itself, so Close must
// tolerate a second call).
func Run(t *testing.T, newBus func(t *testing.T) (bus.Bus, bus.Registry)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b bus.Bus, r bus.Registry)
	}{
		{"PublishWithoutSubscribers", testPublishWithoutSubscribers},
		{"DeliverOnceIntact", testDeliverOnceIntact},
		{"TwoSubscribers", testTwoSubscribers},
		{"Order", testOrder},
		{"Unsubscribe", testUnsubscribe},
		{"SubscribeThenPublish", testSubscribeThenPublish},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"SubscribeChurn", testSubscribeChurn},
		{"RegistryClaim", testRegistryClaim},
		{"RegistryClaimOrdered", testRegistryClaimOrdered},
		{"Sets", testSets},
		{"RegistryExpiry", testRegistryExpiry},
		{"RegistryRefreshExtends", testRegistryRefreshExtends},
		{"Instances", testInstances},
		{"PublishBatch", testPublishBatch},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, r := newBus(t)
			tt.fn(t, b, r)
		})
	}
}

// unique returns a name no other subtest or run uses.
func unique(t *testing.T, kind string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("bustest:%s:%s:%s", kind, t.Name(), hex.EncodeToString(b[:]))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// recorder is a handler that never blocks: it queues payloads and notes an
// overflow instead, as the bus contract asks of every handler.
type recorder struct {
	ch       chan []byte
	overflow atomic.Bool
}

func newRecorder(size int) *recorder { return &recorder{ch: make(chan []byte, size)} }

func (r *recorder) handle(p []byte) {
	select {
	case r.ch <- bytes.Clone(p):
	default:
		r.overflow.Store(true)
	}
}

func (r *recorder) next(t *testing.T) []byte {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case p := <-r.ch:
		return p
	case <-timer.C:
		t.Fatalf("no delivery within %s (overflow %v)", waitTimeout, r.overflow.Load())
		return nil
	}
}

// empty fails if anything was delivered that nobody has read.
func (r *recorder) empty(t *testing.T, what string) {
	t.Helper()
	select {
	case p := <-r.ch:
		t.Fatalf("%s: unexpected delivery %q", what, p)
	default:
	}
	if r.overflow.Load() {
		t.Fatalf("%s: handler queue overflowed", what)
	}
}

func subscribe(t *testing.T, ctx context.Context, b bus.Bus, topic string, h bus.Handler) bus.Subscription {
	t.Helper()
	s, err := b.Subscribe(ctx, topic, h)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	return s
}

func publish(t *testing.T, ctx context.Context, b bus.Bus, topic string, p []byte) int {
	t.Helper()
	n, err := b.Publish(ctx, topic, p)
	if err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return n
}

func testPublishWithoutSubscribers(t *testing.T, b bus.Bus, _ bus.Registry) {
	ctx := testCtx(t)
	if n := publish(t, ctx, b, unique(t, "topic"), []byte("nobody")); n != 0 {
		t.Fatalf("Publish with no subscribers = %d, want 0", n)
	}
}

func testDeliverOnceIntact(t *testing.T, b bus.Bus, _ bus.Registry) {
	ctx := testCtx(t)
	topic := unique(t, "topic")
	rec := newRecorder(16)
	subscribe(t, ctx, b, topic, rec.handle)

	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	payloads := []struct {
		name string
		p    []byte
	}{
		{"text", []byte("hello")},
		{"binary with zero bytes", []byte{0, 1, 0, 0xff, '\r', '\n', 0, '$', '*', 0}},
		{"empty", []byte{}},
		{"only zeros", make([]byte, 64)},
		{"large", big},
	}
	for _, tt := range payloads {
		if n := publish(t, ctx, b, topic, tt.p); n < 1 {
			t.Fatalf("%s: Publish = %d receivers, want at least 1", tt.name, n)
		}
		if got := rec.next(t); !bytes.Equal(got, tt.p) {
			t.Fatalf("%s: got %d bytes %q, want %d bytes", tt.name, len(got), truncate(got), len(tt.p))
		}
	}
	// Exactly once: a duplicate of anything above would arrive before this
	// marker, since one publisher's messages stay in order.
	publish(t, ctx, b, topic, []byte("marker"))
	if got := rec.next(t); string(got) != "marker" {
		t.Fatalf("duplicate delivery: got %q before the marker", truncate(got))
	}
	rec.empty(t, "after marker")
}

func truncate(p []byte) []byte {
	if len(p) > 32 {
		return p[:32]
	}
	return p
}

func testTwoSubscribers(t *testing.T, b bus.Bus, _ bus.Registry) {
	ctx := testCtx(t)
	topic := unique(t, "topic")
	r1, r2 := newRecorder(4), newRecorder(4)
	subscribe(t, ctx, b, topic, r1.handle)
	subscribe(t, ctx, b, topic, r2.handle)
	if n := publish(t, ctx, b, topic, []byte("both")); n < 1 {
		t.Fatalf("Publish = %d receivers, want at least 1", n)
	}
	for i, r := range []*recorder{r1, r2} {
		if got := r.next(t); string(got) != "both" {
			t.Fatalf("subscriber %d got %q", i+1, got)
		}
	}
	publish(t, ctx, b, topic, []byte("marker"))
	for i, r := range []*recorder{r1, r2} {
		if got := r.next(t); string(got) != "marker" {
			t.Fatalf("subscriber %d got %q, want the marker (duplicate?)", i+1, got)
		}
		r.empty(t, "after marker")
	}
}

func testOrder(t *testing.T, b bus.Bus, _ bus.Registry) {
	const n = 1000
	ctx := testCtx(t)
	topic := unique(t, "topic")
	rec := newRecorder(n)
	subscribe(t, ctx, b, topic, rec.handle)
	for i := range n {
		publish(t, ctx, b, topic, binary.BigEndian.AppendUint32(nil, uint32(i)))
	}
	for i := range n {
		got := rec.next(t)
		if len(got) != 4 || binary.BigEndian.Uint32(got) != uint32(i) {
			t.Fatalf("message %d: got %x", i, got)
		}
	}
	rec.empty(t, "after all messages")
}

func testUnsubscribe(t *testing.T, b bus.Bus, _ bus.Registry) {
	ctx := testCtx(t)
	topic := unique(t, "topic")
	ra, rb := newRecorder(4), newRecorder(4)
	sa := subscribe(t, ctx, b, topic, ra.handle)
	sb := subscribe(t, ctx, b, topic, rb.handle)

	publish(t, ctx, b, topic, []byte("m1"))
	for _, r := range []*recorder{ra, rb} {
		if got := r.next(t); string(got) != "m1" {
			t.Fatalf("got %q, want m1", got)
		}
	}

	if err := sa.Unsubscribe(ctx); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	if err := sa.Unsubscribe(ctx); err != nil {
		t.Fatalf("second Unsubscribe: %v", err)
	}
	if n := publish(t, ctx, b, topic, []byte("m2")); n < 1 {
		t.Fatalf("Publish with one subscriber left = %d", n)
	}
	if got := rb.next(t); string(got) != "m2" {
		t.Fatalf("remaining subscriber got %q, want m2", got)
	}
	// m2 reached b, so it would have reached a by now too.
	ra.empty(t, "unsubscribed handler")

	if err := sb.Unsubscribe(ctx); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	if n := publish(t, ctx, b, topic, []byte("m3")); n != 0 {
		t.Fatalf("Publish after the last Unsubscribe = %d receivers, want 0", n)
	}

	// A new subscription proves the topic still works, and anything
	// wrongly delivered to the old handlers would have arrived before m4.
	rc := newRecorder(4)
	subscribe(t, ctx, b, topic, rc.handle)
	publish(t, ctx, b, topic, []byte("m4"))
	if got := rc.next(t); string(got) != "m4" {
		t.Fatalf("new subscriber got %q, want m4", got)
	}
	ra.empty(t, "first unsubscribed handler")
	rb.empty(t, "second unsubscribed handler")
}

func testSubscribeThenPublish(t *testing.T, b bus.Bus, _ bus.Registry) {
	ctx := testCtx(t)
	for i := range 100 {
		topic := unique(t, fmt.Sprintf("topic%d", i))
		rec := newRecorder(1)
		s := subscribe(t, ctx, b, topic, rec.handle)
		if n := publish(t, ctx, b, topic, []byte("first")); n < 1 {
			t.Fatalf("iteration %d: Publish right after Subscribe reached %d receivers", i, n)
		}
		if got := rec.next(t); string(got) != "first" {
			t.Fatalf("iteration %d: got %q", i, got)
		}
		if err := s.Unsubscribe(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func testConcurrentPublishers(t *testing.T, b bus.Bus, _ bus.Registry) {
	const publishers, each = 4, 200
	ctx := testCtx(t)
	topic := unique(t, "topic")
	recs := []*recorder{newRecorder(publishers * each), newRecorder(publishers * each)}
	for _, r := range recs {
		subscribe(t, ctx, b, topic, r.handle)
	}

	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				msg := binary.BigEndian.AppendUint32([]byte{byte(p)}, uint32(i))
				if _, err := b.Publish(ctx, topic, msg); err != nil {
					errs <- fmt.Errorf("publisher %d: %w", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	for ri, r := range recs {
		next := make([]uint32, publishers)
		for range publishers * each {
			got := r.next(t)
			if len(got) != 5 || int(got[0]) >= publishers {
				t.Fatalf("subscriber %d: malformed message %x", ri, got)
			}
			p, seq := got[0], binary.BigEndian.Uint32(got[1:])
			if seq != next[p] {
				t.Fatalf("subscriber %d: publisher %d message %d arrived when %d was due", ri, p, seq, next[p])
			}
			next[p]++
		}
		r.empty(t, "after all messages")
	}
}

// testSubscribeChurn subscribes and unsubscribes one topic from several
// goroutines at once, so that the backend sees subscribe and unsubscribe
// requests for the same topic interleave. Each subscriber must still receive
// a message published right after its Subscribe returned.
func testSubscribeChurn(t *testing.T, b bus.Bus, _ bus.Registry) {
	const workers, rounds = 4, 25
	ctx := testCtx(t)
	topic := unique(t, "topic")

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				want := fmt.Sprintf("w%d-%d", w, i)
				got := make(chan struct{}, 1)
				s, err := b.Subscribe(ctx, topic, func(p []byte) {
					if string(p) == want {
						select {
						case got <- struct{}{}:
						default:
						}
					}
				})
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: Subscribe: %w", w, i, err)
					return
				}
				if _, err := b.Publish(ctx, topic, []byte(want)); err != nil {
					errs <- fmt.Errorf("worker %d round %d: Publish: %w", w, i, err)
					return
				}
				timer := time.NewTimer(waitTimeout)
				select {
				case <-got:
					timer.Stop()
				case <-timer.C:
					errs <- fmt.Errorf("worker %d round %d: own message not delivered", w, i)
					return
				}
				if err := s.Unsubscribe(ctx); err != nil {
					errs <- fmt.Errorf("worker %d round %d: Unsubscribe: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := publish(t, ctx, b, topic, []byte("after")); n != 0 {
		t.Fatalf("Publish after every subscriber left = %d receivers, want 0", n)
	}
}

func lookup(t *testing.T, ctx context.Context, r bus.Registry, name string) string {
	t.Helper()
	h, err := r.Lookup(ctx, name)
	if errors.Is(err, bus.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("Lookup(%q): %v", name, err)
	}
	return h
}

func refresh(t *testing.T, ctx context.Context, r bus.Registry, name, holder string, ttl time.Duration) bool {
	t.Helper()
	ok, err := r.Refresh(ctx, name, holder, ttl)
	if err != nil {
		t.Fatalf("Refresh(%q, %q): %v", name, holder, err)
	}
	return ok
}

func testRegistryClaim(t *testing.T, _ bus.Bus, r bus.Registry) {
	ctx := testCtx(t)
	name := unique(t, "host")
	const ttl = time.Minute

	if _, err := r.Lookup(ctx, name); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("Lookup of an unknown name: err = %v, want ErrNotFound", err)
	}
	if refresh(t, ctx, r, name, "a", ttl) {
		t.Fatal("Refresh of an unknown name reported true")
	}
	if err := r.Release(ctx, name, "a"); err != nil {
		t.Fatalf("Release of an unknown name: %v", err)
	}

	// claim claims name for holder and checks the previous holder it
	// reports.
	claim := func(holder, wantPrev string) func() error {
		return func() error {
			prev, err := r.Claim(ctx, name, holder, ttl)
			if err == nil && prev != wantPrev {
				err = fmt.Errorf("claim %s reported previous holder %q, want %q", holder, prev, wantPrev)
			}
			return err
		}
	}
	steps := []struct {
		desc string
		do   func() error
		want string // holder afterwards, "" for none
	}{
		{"a claims", claim("a", ""), "a"},
		{"b claims: newest wins", claim("b", "a"), "b"},
		{"a refreshes: not the holder", func() error {
			if refresh(t, ctx, r, name, "a", ttl) {
				return errors.New("refresh by a non-holder reported true")
			}
			return nil
		}, "b"},
		{"b refreshes", func() error {
			if !refresh(t, ctx, r, name, "b", ttl) {
				return errors.New("refresh by the holder reported false")
			}
			return nil
		}, "b"},
		{"a releases: no-op", func() error { return r.Release(ctx, name, "a") }, "b"},
		{"b releases", func() error { return r.Release(ctx, name, "b") }, ""},
		{"b refreshes after release", func() error {
			if refresh(t, ctx, r, name, "b", ttl) {
				return errors.New("refresh after release reported true")
			}
			return nil
		}, ""},
		{"a claims again", claim("a", ""), "a"},
		{"a claims once more", claim("a", "a"), "a"},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.desc, err)
		}
		if got := lookup(t, ctx, r, name); got != s.want {
			t.Fatalf("%s: holder %q, want %q", s.desc, got, s.want)
		}
	}

	// Names are independent.
	other := unique(t, "host")
	if _, err := r.Claim(ctx, other, "c", ttl); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, ctx, r, name); got != "a" {
		t.Fatalf("claiming another name changed this one to %q", got)
	}
}

func testRegistryClaimOrdered(t *testing.T, _ bus.Bus, r bus.Registry) {
	ctx := testCtx(t)
	name := unique(t, "name")
	const ttl = time.Minute
	for _, s := range []struct {
		holder, wantCur string
		wantWon         bool
		want            string // holder afterwards
	}{
		{"0002|b", "", true, "0002|b"},
		{"0001|z", "0002|b", false, "0002|b"}, // older: refused, whatever follows
		{"0002|a", "0002|b", false, "0002|b"},
		{"0002|b", "0002|b", true, "0002|b"}, // the holder again
		{"0002|c", "0002|b", true, "0002|c"},
		{"0010|a", "0002|c", true, "0010|a"},
		// Byte order: "~" (0x7e) sorts after "a" in bytes, before it in
		// many locales' collation.
		{"0010|~", "0010|a", true, "0010|~"},
		{"0010|a", "0010|~", false, "0010|~"},
		// A longer value that shares the shorter's prefix sorts after it.
		{"0010|~x", "0010|~", true, "0010|~x"},
		{"0010|~", "0010|~x", false, "0010|~x"},
	} {
		cur, won, err := r.ClaimOrdered(ctx, name, s.holder, ttl)
		if err != nil {
			t.Fatalf("ClaimOrdered %q: %v", s.holder, err)
		}
		if cur != s.wantCur || won != s.wantWon {
			t.Fatalf("ClaimOrdered %q = (%q, %v), want (%q, %v)", s.holder, cur, won, s.wantCur, s.wantWon)
		}
		if got := lookup(t, ctx, r, name); got != s.want {
			t.Fatalf("after ClaimOrdered %q: holder %q, want %q", s.holder, got, s.want)
		}
	}
	// Once released, any claim wins.
	if err := r.Release(ctx, name, "0010|~x"); err != nil {
		t.Fatal(err)
	}
	if cur, won, err := r.ClaimOrdered(ctx, name, "0000|a", ttl); err != nil || !won || cur != "" {
		t.Fatalf("ClaimOrdered after release = (%q, %v, %v)", cur, won, err)
	}
}

func testSets(t *testing.T, _ bus.Bus, r bus.Registry) {
	ctx := testCtx(t)
	set := unique(t, "pool")
	members := func() []string {
		t.Helper()
		m, err := r.Members(ctx, set)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(m)
		return m
	}
	if m := members(); len(m) != 0 {
		t.Fatalf("members of an unknown set: %q", m)
	}
	for _, m := range []string{"a", "b", "a"} {
		if err := r.Join(ctx, set, m, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if m := members(); !slices.Equal(m, []string{"a", "b"}) {
		t.Fatalf("after joining a, b and a again: %q", m)
	}
	// Stays expire one by one: a short stay for c goes, a and b stay.
	if err := r.Join(ctx, set, "c", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if m := members(); !slices.Equal(m, []string{"a", "b", "c"}) {
		t.Fatalf("after c joined: %q", m)
	}
	deadline := time.Now().Add(10 * time.Second)
	for slices.Contains(members(), "c") {
		if time.Now().After(deadline) {
			t.Fatal("c's stay did not expire")
		}
		pollPause(ctx)
	}
	if m := members(); !slices.Equal(m, []string{"a", "b"}) {
		t.Fatalf("after c's stay expired: %q", m)
	}
	// A shorter stay joined later does not cut the others short.
	if err := r.Join(ctx, set, "d", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for slices.Contains(members(), "d") {
		pollPause(ctx)
	}
	if m := members(); !slices.Equal(m, []string{"a", "b"}) {
		t.Fatalf("after d's short stay: %q", m)
	}
	if err := r.Leave(ctx, set, "a"); err != nil {
		t.Fatal(err)
	}
	if err := r.Leave(ctx, set, "nobody"); err != nil {
		t.Fatal(err)
	}
	if m := members(); !slices.Equal(m, []string{"b"}) {
		t.Fatalf("after a left: %q", m)
	}
	// Sets are independent of each other and of names.
	if m, err := r.Members(ctx, unique(t, "pool")); err != nil || len(m) != 0 {
		t.Fatalf("another set: %q, %v", m, err)
	}
	if _, err := r.Lookup(ctx, set); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("a set's name as a registry name: %v, want ErrNotFound", err)
	}
}

// waitGone polls until name has no holder.
func waitGone(t *testing.T, ctx context.Context, r bus.Registry, name string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for lookup(t, ctx, r, name) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("%q still has a holder %s after its TTL", name, waitTimeout)
		}
		pollPause(ctx)
	}
}

// pollPause spaces out polls; it is not a wait for state.
func pollPause(ctx context.Context) {
	timer := time.NewTimer(10 * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

func testRegistryExpiry(t *testing.T, _ bus.Bus, r bus.Registry) {
	ctx := testCtx(t)
	name := unique(t, "host")
	if _, err := r.Claim(ctx, name, "a", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitGone(t, ctx, r, name)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("entry with a 200ms TTL lived %s", d)
	}
	if _, err := r.Lookup(ctx, name); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("Lookup after expiry: err = %v, want ErrNotFound", err)
	}
	if refresh(t, ctx, r, name, "a", time.Minute) {
		t.Fatal("Refresh after expiry reported true")
	}
}

func testRegistryRefreshExtends(t *testing.T, _ bus.Bus, r bus.Registry) {
	ctx := testCtx(t)
	kept, clock := unique(t, "kept"), unique(t, "clock")
	const short = 200 * time.Millisecond
	if _, err := r.Claim(ctx, kept, "a", short); err != nil {
		t.Fatal(err)
	}
	if !refresh(t, ctx, r, kept, "a", time.Minute) {
		t.Fatal("Refresh by the holder reported false")
	}
	// The clock entry is claimed after kept with the same short TTL, so once
	// it has expired, kept's original TTL has passed too.
	if _, err := r.Claim(ctx, clock, "a", short); err != nil {
		t.Fatal(err)
	}
	waitGone(t, ctx, r, clock)
	if got := lookup(t, ctx, r, kept); got != "a" {
		t.Fatalf("refreshed entry: holder %q, want a", got)
	}
}

func testClose(t *testing.T, b bus.Bus, _ bus.Registry) {
	ctx := testCtx(t)
	topic := unique(t, "topic")
	rec := newRecorder(4)
	subscribe(t, ctx, b, topic, rec.handle)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := b.Publish(ctx, topic, []byte("late")); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Publish after Close: err = %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctx, topic, rec.handle); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Subscribe after Close: err = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	rec.empty(t, "after Close")
}

func testInstances(t *testing.T, _ bus.Bus, r bus.Registry) {
	ctx := testCtx(t)
	long, short := unique(t, "inst"), unique(t, "inst")
	if err := r.Heartbeat(ctx, long, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Heartbeat(ctx, short, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	has := func(ids []string, id string) bool {
		for _, x := range ids {
			if x == id {
				return true
			}
		}
		return false
	}
	ids, err := r.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !has(ids, long) || !has(ids, short) {
		t.Fatalf("Instances = %q, want both %q and %q", ids, long, short)
	}
	// The short-lived one leaves once its heartbeat expires; the other
	// stays, and a heartbeat brings one back.
	deadline := time.Now().Add(waitTimeout)
	for {
		ids, err = r.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !has(ids, short) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q still listed after its heartbeat expired", short)
		}
		pollPause(ctx)
	}
	if !has(ids, long) {
		t.Fatalf("%q left with the other", long)
	}
	if err := r.Heartbeat(ctx, short, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ids, _ = r.Instances(ctx); !has(ids, short) {
		t.Fatalf("%q not back after a heartbeat", short)
	}
}

func testPublishBatch(t *testing.T, b bus.Bus, _ bus.Registry) {
	bb, ok := b.(bus.Batcher)
	if !ok {
		t.Skip("the bus does not batch")
	}
	ctx := testCtx(t)
	a, c := unique(t, "topic"), unique(t, "topic")
	ra, rc := newRecorder(64), newRecorder(64)
	subscribe(t, ctx, b, a, ra.handle)
	subscribe(t, ctx, b, c, rc.handle)
	var msgs []bus.Message
	for i := range 20 {
		topic := a
		if i%3 == 0 {
			topic = c
		}
		msgs = append(msgs, bus.Message{Topic: topic, Payload: []byte(fmt.Sprintf("%s %d", topic, i))})
	}
	nobody := unique(t, "topic")
	msgs = append(msgs, bus.Message{Topic: nobody, Payload: []byte("lost")})
	n, err := bb.PublishBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		want := 1
		if m.Topic == nobody {
			want = 0
		}
		if n[i] != want {
			t.Fatalf("message %d to %s: %d receivers, want %d", i, m.Topic, n[i], want)
		}
	}
	// Each topic's messages arrive in the order they were given.
	for _, m := range msgs {
		var got []byte
		switch m.Topic {
		case a:
			got = ra.next(t)
		case c:
			got = rc.next(t)
		default:
			continue
		}
		if !bytes.Equal(got, m.Payload) {
			t.Fatalf("got %q, want %q", got, m.Payload)
		}
	}
}
