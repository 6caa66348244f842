package limiter

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		err  bool
	}{
		{"500KB", 500000, false},
		{"500kb", 500000, false},
		{"2MiB", 2 << 20, false},
		{"1024", 1024, false},
		{"10B", 10, false},
		{"1 KiB", 1024, false},
		{"3G", 3e9, false},
		{"", 0, true},
		{"-1", 0, true},
		{"1.5MB", 0, true},
		{"12XB", 0, true},
		{"99999999999999999GiB", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParseSize(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	for in, want := range map[Size]string{500000: "500KB", 2 << 20: "2MiB", 1023: "1023B", 0: "0B", 1 << 30: "1GiB"} {
		if got := in.String(); got != want {
			t.Errorf("%d: got %q want %q", in, got, want)
		}
		if back, err := ParseSize(in.String()); err != nil || back != in {
			t.Errorf("%d: round trip gave %v, %v", in, back, err)
		}
	}
}

func TestRateEdge(t *testing.T) {
	// A rate so slow that no token refills during the test: the burst is
	// the edge. burst passes, burst+1 is refused with a Retry-After.
	const burst = 5
	r := NewRate(0.001, burst)
	for i := range burst {
		if ok, _ := r.Allow(); !ok {
			t.Fatalf("event %d refused within burst", i+1)
		}
	}
	ok, retry := r.Allow()
	if ok {
		t.Fatal("event burst+1 allowed")
	}
	if retry < time.Second {
		t.Fatalf("retry after %v, want at least 1s", retry)
	}
	// A refused event must not consume a token: still refused, same wait.
	if ok, _ := r.Allow(); ok {
		t.Fatal("allowed after refusal")
	}
}

func TestRateNilAllows(t *testing.T) {
	var r *Rate = NewRate(0, 0)
	if r != nil {
		t.Fatal("NewRate(0) should be nil")
	}
	for range 1000 {
		if ok, _ := r.Allow(); !ok {
			t.Fatal("nil rate refused")
		}
	}
}
