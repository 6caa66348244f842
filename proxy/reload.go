package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// ReloadFiles describes files a [FileReloader] keeps in force.
type ReloadFiles struct {
	// Name says what the files hold, for logs and errors: "token keys",
	// "access lists".
	Name string
	// Paths are read together, in order. An empty path is skipped: Apply
	// gets nil in its place.
	Paths []string
	// Apply parses the files' contents and puts them in force. When it
	// returns an error, what was in force must stay so; the reloader logs
	// the error and tries again when the contents change. Calls never
	// overlap.
	Apply func(contents [][]byte) error
	// Keeping says what stays in force when the files cannot be used, for
	// the warning. Default: "the ones in force".
	Keeping string
	// Logger receives a line for every reload and a warning for files that
	// cannot be used. Default: discard.
	Logger *slog.Logger
}

// FileReloader keeps the contents of some files in force while a program
// runs: it applies them once when it is made, again when [FileReloader.Reload]
// is called (on SIGHUP, say), and when their contents change while
// [FileReloader.Watch] runs. It compares content hashes, so touching a file
// without changing it does nothing, and a rewrite within the clock's
// granularity is not missed. A file that cannot be used (missing, or that
// Apply refuses) keeps the old value in force and is logged once, not on
// every poll.
//
// [TokenKeys.Reloader] and [AccessReloader] make the ones the proxy
// command uses, and a [CertReloader] runs on one.
type FileReloader struct {
	cfg ReloadFiles
	log *slog.Logger

	// mu serializes reads and applies, and guards the sums.
	mu sync.Mutex
	// loaded is the content hash of the files in force; refused is that of
	// the last contents (or read error) that could not be used.
	loaded, refused [sha256.Size]byte
}

// NewFileReloader reads the files and applies them, returning the error if
// that fails: a program should not start with files it cannot use.
func NewFileReloader(cfg ReloadFiles) (*FileReloader, error) {
	if cfg.Apply == nil {
		return nil, errors.New("reload: no Apply function")
	}
	if cfg.Name == "" {
		cfg.Name = "files"
	}
	if cfg.Keeping == "" {
		cfg.Keeping = "the ones in force"
	}
	r := &FileReloader{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	contents, sum, err := r.read()
	if err == nil {
		err = cfg.Apply(contents)
	}
	if err != nil {
		return nil, r.wrap(err)
	}
	r.loaded = sum
	return r, nil
}

// Reload reads the files again and applies them if their contents changed
// since they were last applied, even to contents refused before (the
// operator may have fixed what Apply depends on). It logs the reload, or
// a warning; the error, if any, says why the old value stays in force.
func (r *FileReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	contents, sum, err := r.read()
	if err == nil && sum == r.loaded {
		r.log.Debug(r.cfg.Name+" unchanged", "files", r.files())
		return nil
	}
	if err == nil {
		err = r.apply(contents, sum)
	}
	if err != nil {
		err = r.wrap(err)
		r.log.Warn(r.cfg.Name+" not reloaded; keeping "+r.cfg.Keeping, "files", r.files(), "err", err)
	}
	return err
}

// Watch checks the files every interval (DefaultReloadInterval when zero
// or less) until ctx ends, and applies them when their contents changed.
func (r *FileReloader) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.reloadIfChanged()
		}
	}
}

func (r *FileReloader) reloadIfChanged() {
	r.mu.Lock()
	defer r.mu.Unlock()
	contents, sum, err := r.read()
	if err != nil {
		// A file missing for a moment during a rename is normal; one that
		// stays missing is reported once per distinct error.
		sum = sha256.Sum256([]byte(err.Error()))
	}
	if sum == r.loaded || sum == r.refused {
		return
	}
	if err == nil {
		err = r.apply(contents, sum)
	}
	if err != nil {
		r.refused = sum
		r.log.Warn(r.cfg.Name+" changed but cannot be used; keeping "+r.cfg.Keeping, "files", r.files(), "err", r.wrap(err))
	}
}

// apply puts contents in force; r.mu is held.
func (r *FileReloader) apply(contents [][]byte, sum [sha256.Size]byte) error {
	if err := r.cfg.Apply(contents); err != nil {
		return err
	}
	r.loaded = sum
	r.refused = [sha256.Size]byte{}
	r.log.Info(r.cfg.Name+" reloaded", "files", r.files())
	return nil
}

// read returns the files' contents and one hash over all of them.
func (r *FileReloader) read() ([][]byte, [sha256.Size]byte, error) {
	contents := make([][]byte, len(r.cfg.Paths))
	h := sha256.New()
	for i, path := range r.cfg.Paths {
		if path == "" {
			h.Write([]byte{1}) // an absent file differs from an empty one
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, [sha256.Size]byte{}, err
		}
		contents[i] = b
		h.Write([]byte{0})
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return contents, sum, nil
}

func (r *FileReloader) files() string {
	var names []string
	for _, p := range r.cfg.Paths {
		if p != "" {
			names = append(names, p)
		}
	}
	return strings.Join(names, ",")
}

// wrap names what failed, unless the error already says it.
func (r *FileReloader) wrap(err error) error {
	if strings.HasPrefix(err.Error(), r.cfg.Name) {
		return err
	}
	return fmt.Errorf("%s: %w", r.cfg.Name, err)
}

// Reloader loads the JWK set file at path into k now, and returns a
// [FileReloader] that loads it again on [FileReloader.Reload] and, while
// [FileReloader.Watch] runs, when it changes. A file that cannot be used
// leaves the set in force.
func (k *TokenKeys) Reloader(path string, logger *slog.Logger) (*FileReloader, error) {
	if path == "" {
		return nil, errors.New("token keys: no file")
	}
	return NewFileReloader(ReloadFiles{
		Name:   "token keys",
		Paths:  []string{path},
		Logger: logger,
		Apply: func(c [][]byte) error {
			return k.setFile(path, c[0])
		},
	})
}

// LoadAccess reads access list files in the format of [ReadAccessList]
// (either path may be empty) into an Access for Config.Access.
func LoadAccess(allowFile, denyFile string) (*Access, error) {
	var a *Access
	_, err := AccessReloader(allowFile, denyFile, func(x *Access) { a = x }, nil)
	return a, err
}

// AccessReloader reads an allow list and a deny list (either path may be
// empty; see [ReadAccessList] for the format) and calls apply with the
// [Access] they make, now and whenever they change: give it
// [Proxy.SetAccess], which also cuts off connected keys no longer
// permitted. Files that cannot be used leave the rules in force.
func AccessReloader(allowFile, denyFile string, apply func(*Access), logger *slog.Logger) (*FileReloader, error) {
	if allowFile == "" && denyFile == "" {
		return nil, errors.New("access lists: no file")
	}
	paths := []string{allowFile, denyFile}
	return NewFileReloader(ReloadFiles{
		Name:   "access lists",
		Paths:  paths,
		Logger: logger,
		Apply: func(c [][]byte) error {
			var lists [2][]string
			for i := range lists {
				if paths[i] == "" {
					continue
				}
				var err error
				if lists[i], err = ReadAccessList(bytes.NewReader(c[i])); err != nil {
					return fmt.Errorf("%s: %w", paths[i], err)
				}
			}
			a, err := NewAccess(lists[0], lists[1])
			if err != nil {
				return err
			}
			apply(a)
			return nil
		},
	})
}
