package main

import (
	"math"
	"math/bits"
	"time"
)

// histogram records durations in fixed memory with under 1% error, the way
// an HDR histogram does: exact below 256 ns, then 128 linear sub-buckets
// per power of two. It is not safe for concurrent use; give each worker
// its own and merge them.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	// histMax is the largest value kept apart; longer durations (over
	// 18 minutes) share the last bucket.
	histMax     = 1<<40 - 1
	histBuckets = (40-histSubBits)*histSub + histSub
)

func histIndex(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	v = min(v, histMax)
	shift := bits.Len64(v) - (histSubBits + 1)
	return shift*histSub + int(v>>shift)
}

// histValue is the middle of bucket i.
func histValue(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	m := uint64(i - shift*histSub)
	return m<<shift + (1<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	h.counts[histIndex(uint64(max(d, 0)))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q ≤ 1), or 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(histValue(i))
		}
	}
	return time.Duration(histValue(histBuckets - 1))
}
