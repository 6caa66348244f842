package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyhole-tunnel/keyhole/proxy"
)

// accessFiles are the --allow-file and --deny-file lists, and how often
// they and --token-keys are checked for changes.
type accessFiles struct {
	allow, deny string
	interval    time.Duration // --reload-interval
	log         *slog.Logger

	reloader *proxy.FileReloader
	// initial is the first Access, for Config.Access; p receives the later
	// ones, once the proxy exists.
	initial *proxy.Access
	p       atomic.Pointer[proxy.Proxy]
}

func (a *accessFiles) register(fs *flag.FlagSet) {
	fs.StringVar(&a.allow, "allow-file", "", "`file` of tunnel hostnames (or their 52-character labels), one per line:\nonly these keys may register (default: any key). Reloaded on SIGHUP\nand when the file changes (see --reload-interval)")
	fs.StringVar(&a.deny, "deny-file", "", "`file` of tunnel hostnames (or labels) that may not register; a key\nadded while connected is cut off. Reloaded like --allow-file")
	fs.DurationVar(&a.interval, "reload-interval", proxy.DefaultReloadInterval, "how often --allow-file, --deny-file and --token-keys are checked for\nchanges; 0 = only on SIGHUP, which reloads them whatever this says")
}

func (a *accessFiles) on() bool { return a.allow != "" || a.deny != "" }

// load reads both files into the Access the proxy starts with.
func (a *accessFiles) load() (*proxy.Access, error) {
	var err error
	a.reloader, err = proxy.AccessReloader(a.allow, a.deny, func(acc *proxy.Access) {
		if p := a.p.Load(); p != nil {
			p.SetAccess(acc)
		} else {
			a.initial = acc
		}
	}, a.log)
	if err != nil {
		return nil, err
	}
	return a.initial, nil
}

// watch reapplies the lists on SIGHUP and when they change, until the
// returned stop function is called. A list that fails to load keeps the
// rules in force and is logged.
func (a *accessFiles) watch(ctx context.Context, p *proxy.Proxy) (stop func()) {
	if a.reloader == nil {
		return func() {}
	}
	a.p.Store(p)
	return watchFiles(ctx, a.reloader, a.interval)
}

// reloadable is a set of files kept in force: a [proxy.FileReloader] or a
// [proxy.CertReloader], which log what they do.
type reloadable interface {
	Reload() error
	Watch(ctx context.Context, interval time.Duration)
}

// watchFiles reloads r on SIGHUP and, unless interval is 0, polls it every
// interval, until the returned stop function is called; stop returns when
// the goroutines have ended.
func watchFiles(ctx context.Context, r reloadable, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var wg sync.WaitGroup
	if interval > 0 {
		wg.Go(func() { r.Watch(ctx, interval) })
	}
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				r.Reload() // logs the reload, or why the old files stay
			}
		}
	})
	return func() {
		signal.Stop(hup)
		cancel()
		wg.Wait()
	}
}
