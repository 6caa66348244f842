package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fleet is a set of "clients" helper processes and what they reported.
type fleet struct {
	procs []*proc
	mu    sync.Mutex
	hosts []string
	seen  map[string]bool
	first time.Time // the first "start" line
	last  time.Time // the newest first registration
	errs  []string
}

// helperParallel bounds the registrations in flight in one helper.
const helperParallel = 32

// startFleet starts n in-process clients against proxyAddr, split over
// helpers processes. With capture, each client records its exchanges as
// the client command's inspector does, in a store of the command's default
// size, with no inspector page.
func (h *harness) startFleet(name, proxyAddr string, n, helpers int, capture bool) (*fleet, error) {
	f := &fleet{seen: map[string]bool{}}
	helpers = max(1, min(helpers, n))
	for i := range helpers {
		share := n / helpers
		if i < n%helpers {
			share++
		}
		args := []string{"clients",
			"--n", strconv.Itoa(share), "--proxy", "ws://" + proxyAddr, "--target", "http://" + h.origin,
			"--parallel", strconv.Itoa(helperParallel), "--log-level", h.o.logLevel}
		if capture {
			args = append(args, "--capture")
		}
		p, err := h.procs.start(fmt.Sprintf("%s helper %d", name, i+1), h.selfBin, args, f.onLine)
		if err != nil {
			f.stop(h.procs)
			return nil, err
		}
		f.procs = append(f.procs, p)
	}
	return f, nil
}

func (f *fleet) onLine(line string) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case strings.HasPrefix(line, "start "):
		if f.first.IsZero() {
			f.first = now
		}
	case strings.HasPrefix(line, "registered "):
		host, err := hostOf(strings.TrimPrefix(line, "registered "))
		if err == nil && !f.seen[host] {
			f.seen[host] = true
			f.hosts = append(f.hosts, host)
			f.last = now
		}
	case strings.HasPrefix(line, "error "):
		if len(f.errs) < 5 {
			f.errs = append(f.errs, line)
		}
	}
}

func (f *fleet) registered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.hosts)
}

// wait waits until n clients have registered.
func (f *fleet) wait(ctx context.Context, n int, timeout time.Duration) error {
	err := waitFor(ctx, timeout, fmt.Sprintf("%d clients to register", n), f.procs, func() bool { return f.registered() >= n })
	if err != nil {
		f.mu.Lock()
		defer f.mu.Unlock()
		err = fmt.Errorf("%w (%d registered; helper errors: %s)", err, len(f.hosts), strings.Join(f.errs, "; "))
	}
	return err
}

func (f *fleet) stop(ps *procSet) {
	var wg sync.WaitGroup
	for _, p := range f.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop()
		}()
	}
	wg.Wait()
	ps.forget(f.procs...)
}
