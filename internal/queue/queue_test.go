package queue

import (
	"sync"
	"testing"
)

func TestOrderAndItemBound(t *testing.T) {
	q := New[int](3, 0)
	for i := range 3 {
		if !q.Push(i, 1) {
			t.Fatalf("push %d refused within the bound", i)
		}
	}
	if q.Push(3, 1) {
		t.Fatal("push past maxItems accepted")
	}
	for want := range 3 {
		if v, ok := q.Pop(); !ok || v != want {
			t.Fatalf("pop: %d %v, want %d", v, ok, want)
		}
	}
	if _, ok := q.Pop(); ok {
		t.Fatal("pop from an empty queue")
	}
	if !q.Push(9, 1) {
		t.Fatal("push after draining refused")
	}
}

func TestByteBound(t *testing.T) {
	q := New[string](100, 10)
	if !q.Push("big", 50) {
		t.Fatal("an item larger than maxBytes must fit into an empty queue")
	}
	if q.Push("x", 1) {
		t.Fatal("push past maxBytes accepted")
	}
	q.Pop()
	// Exactly maxBytes passes; one byte more does not.
	if !q.Push("a", 6) || !q.Push("b", 4) {
		t.Fatal("pushes up to maxBytes refused")
	}
	if q.Push("c", 1) {
		t.Fatal("maxBytes+1 accepted")
	}
	if got := q.TakeAll(nil); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("TakeAll = %q", got)
	}
	if q.Len() != 0 || !q.Push("d", 10) {
		t.Fatal("queue not empty after TakeAll")
	}
}

func TestBurstReleasesBackingArray(t *testing.T) {
	q := New[int](1000, 0)
	for i := range 1000 {
		q.Push(i, 1)
	}
	for range 1000 {
		q.Pop()
	}
	if cap(q.items) != 0 {
		t.Fatalf("backing array of %d kept after a burst", cap(q.items))
	}
}

func TestConcurrentProducers(t *testing.T) {
	q := New[int](1<<20, 0)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				q.Push(p*1000+i, 1)
			}
		})
	}
	seen := make(map[int]bool)
	last := map[int]int{0: -1, 1: -1, 2: -1, 3: -1}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for len(seen) < 4000 {
		select {
		case <-q.Ready():
		case <-done:
		}
		for {
			v, ok := q.Pop()
			if !ok {
				break
			}
			if seen[v] {
				t.Fatalf("%d popped twice", v)
			}
			seen[v] = true
			// Each producer's items come out in its order.
			if p, i := v/1000, v%1000; i <= last[p] {
				t.Fatalf("producer %d: %d after %d", p, i, last[p])
			} else {
				last[p] = i
			}
		}
	}
}

// A consumer that pops one item and goes back to waiting is woken for the
// rest, even when all were pushed before it first woke.
func TestReadyAfterPartialPop(t *testing.T) {
	q := New[int](10, 0)
	q.Push(1, 1)
	q.Push(2, 1)
	<-q.Ready()
	if v, _ := q.Pop(); v != 1 {
		t.Fatalf("first pop %d", v)
	}
	select {
	case <-q.Ready():
	default:
		t.Fatal("no wake-up for the item left behind")
	}
	if v, ok := q.Pop(); !ok || v != 2 {
		t.Fatalf("second pop %d %v", v, ok)
	}
}
