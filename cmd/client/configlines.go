package main

import (
	"sort"
	"sync"

	"github.com/BurntSushi/toml"
)

// keyIndex finds a key's index in MetaData.Keys, which lists every key in
// file order, a [[tunnel]] header as the key "tunnel" each time.
type keyIndex struct {
	top     map[string]int   // first key under each top-level name
	headers []int            // each [[tunnel]] header
	tunnel  []map[string]int // per [[tunnel]]: first key under each name
	inline  bool             // tunnel = [ {...}, ... ]: one statement for all
}

func indexKeys(keys []toml.Key, inline bool) keyIndex {
	x := keyIndex{top: map[string]int{}, inline: inline}
	for i, k := range keys {
		if _, ok := x.top[k[0]]; !ok {
			x.top[k[0]] = i
		}
		if k[0] != "tunnel" || inline {
			continue
		}
		if len(k) == 1 {
			x.headers = append(x.headers, i)
			x.tunnel = append(x.tunnel, map[string]int{})
			continue
		}
		if n := len(x.tunnel); n > 0 {
			if _, ok := x.tunnel[n-1][k[1]]; !ok {
				x.tunnel[n-1][k[1]] = i
			}
		}
	}
	return x
}

// header returns the key of the i-th tunnel's table, or of the statement
// holding them all when they are inline; -1 if unknown.
func (x keyIndex) header(i int) int {
	if x.inline {
		if k, ok := x.top["tunnel"]; ok {
			return k
		}
		return -1
	}
	if i < len(x.headers) {
		return x.headers[i]
	}
	return -1
}

// in returns the key name of the i-th tunnel, or else fallback.
func (x keyIndex) in(i int, name string, fallback int) int {
	if !x.inline && i < len(x.tunnel) {
		if k, ok := x.tunnel[i][name]; ok {
			return k
		}
	}
	return fallback
}

// locator finds the line of a key. The TOML library reports positions in
// its syntax errors only, so the locator asks the same library: a prefix
// of a valid file that ends at the end of a statement parses, and its
// MetaData.Keys are the first keys of the whole file's, while a prefix
// that ends inside a statement (a multi-line string or array) does not
// parse. So the statement holding the k-th key ends on the first line L
// whose prefix parses with more than k keys, and starts just after the
// last line before L whose prefix parses. Each lookup costs a few parses
// (a binary search over lines); it runs only when there is a mistake to
// report or a failing tunnel to name.
type locator struct {
	mu     sync.Mutex // tunnels that fail name themselves from their goroutines
	data   string
	ends   []int       // ends[n] is the offset after line n (1-based); ends[0] = 0
	counts map[int]int // prefix of n lines → number of keys, -1 if it does not parse
}

func newLocator(data string) *locator {
	l := &locator{data: data, ends: []int{0}, counts: map[int]int{0: 0}}
	for i := 0; i < len(data); i++ {
		if data[i] == '\n' {
			l.ends = append(l.ends, i+1)
		}
	}
	if l.ends[len(l.ends)-1] != len(data) {
		l.ends = append(l.ends, len(data))
	}
	return l
}

func (l *locator) lines() int { return len(l.ends) - 1 }

func (l *locator) count(n int) int {
	if c, ok := l.counts[n]; ok {
		return c
	}
	var doc map[string]any
	md, err := toml.Decode(l.data[:l.ends[n]], &doc)
	c := -1
	if err == nil {
		c = len(md.Keys())
	}
	l.counts[n] = c
	return c
}

// before returns the number of keys of the longest prefix of at most n
// lines that parses, and its length.
func (l *locator) before(n int) (lines, keys int) {
	for ; n > 0; n-- {
		if c := l.count(n); c >= 0 {
			return n, c
		}
	}
	return 0, 0
}

// line returns the line (from 1) on which the statement holding the k-th
// key starts, or 0 if it cannot tell.
func (l *locator) line(k int) int {
	if l == nil || k < 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	end := sort.Search(l.lines()+1, func(n int) bool {
		_, c := l.before(n)
		return c > k
	})
	if end > l.lines() {
		return 0
	}
	start, _ := l.before(end - 1)
	return start + 1
}
