package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/keyhole-tunnel/keyhole/proxy"
)

// accessFiles are the --allow-file and --deny-file lists.
type accessFiles struct {
	allow, deny string
	log         *slog.Logger
	sum         [sha256.Size]byte // of both files' contents, as last applied
}

func (a *accessFiles) register(fs *flag.FlagSet) {
	fs.StringVar(&a.allow, "allow-file", "", "`file` of tunnel hostnames (or their 52-character labels), one per line:\nonly these keys may register (default: any key). Reloaded on SIGHUP\nand when the file changes (checked every 2s)")
	fs.StringVar(&a.deny, "deny-file", "", "`file` of tunnel hostnames (or labels) that may not register; a key\nadded while connected is cut off. Reloaded like --allow-file")
}

func (a *accessFiles) on() bool { return a.allow != "" || a.deny != "" }

// load reads both files into an Access, and reports whether their
// contents changed since the last load.
func (a *accessFiles) load() (*proxy.Access, bool, error) {
	var lists [2][]string
	h := sha256.New()
	for i, path := range []string{a.allow, a.deny} {
		if path == "" {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, false, fmt.Errorf("access list: %w", err)
		}
		h.Write(b)
		h.Write([]byte{0})
		if lists[i], err = proxy.ReadAccessList(bytes.NewReader(b)); err != nil {
			return nil, false, fmt.Errorf("access list %s: %w", path, err)
		}
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	acc, err := proxy.NewAccess(lists[0], lists[1])
	if err != nil {
		return nil, false, err
	}
	changed := sum != a.sum
	a.sum = sum
	return acc, changed, nil
}

// watch reapplies the lists on SIGHUP and when they change, until the
// returned stop function is called. A list that fails to load keeps the
// rules in force and is logged.
func (a *accessFiles) watch(ctx context.Context, p *proxy.Proxy) (stop func()) {
	if !a.on() {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	tick := time.NewTicker(2 * time.Second)
	var wg sync.WaitGroup
	wg.Go(func() {
		var lastErr string
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			case <-tick.C:
			}
			acc, changed, err := a.load()
			if err != nil {
				if err.Error() != lastErr {
					a.log.Warn("access lists not reloaded; keeping the rules in force", "err", err)
					lastErr = err.Error()
				}
				continue
			}
			lastErr = ""
			if changed {
				p.SetAccess(acc)
				a.log.Info("access lists reloaded")
			}
		}
	})
	return func() {
		signal.Stop(hup)
		tick.Stop()
		cancel()
		wg.Wait()
	}
}
