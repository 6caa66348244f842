package proxy

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// Access decides which client keys may hold a tunnel, by hostname label
// (the base32 thumbprint of the key, the first part of the tunnel's
// hostname). A nil *Access admits every key.
type Access struct {
	allow map[string]bool // nil: every key not denied
	deny  map[string]bool
}

// NewAccess builds an Access. With a non-empty allow list only those keys
// may register; a key on the deny list never may. Entries are hostname
// labels or full tunnel hostnames, in any case.
func NewAccess(allow, deny []string) (*Access, error) {
	a := &Access{deny: make(map[string]bool)}
	if len(allow) > 0 {
		a.allow = make(map[string]bool)
	}
	for _, list := range []struct {
		entries []string
		set     map[string]bool
	}{{allow, a.allow}, {deny, a.deny}} {
		for _, e := range list.entries {
			label, err := parseLabel(e)
			if err != nil {
				return nil, err
			}
			list.set[label] = true
		}
	}
	return a, nil
}

func parseLabel(entry string) (string, error) {
	label, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(entry)), ".")
	if !messages.IsHostnameLabel(label) {
		return "", fmt.Errorf("%q is not a tunnel hostname or its 52-character label", entry)
	}
	return label, nil
}

// ReadAccessList reads one hostname label (or tunnel hostname) per line.
// Blank lines and text after "#" are ignored. An error names the line.
func ReadAccessList(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		if _, err := parseLabel(line); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

// Permits reports whether the key with this hostname label may register.
func (a *Access) Permits(label string) bool {
	if a == nil {
		return true
	}
	if a.deny[label] {
		return false
	}
	return a.allow == nil || a.allow[label]
}

// SetAccess replaces the access rules. Connections this instance holds for
// keys no longer permitted are closed at once with a policy violation; when
// their clients reconnect, registration refuses them. Each instance applies
// its own rules, so give every instance the same lists.
func (p *Proxy) SetAccess(a *Access) {
	p.mu.Lock()
	p.access = a
	conns := p.localConns()
	p.mu.Unlock()
	for _, c := range conns {
		if !a.Permits(c.label) {
			c.log.Info("key no longer permitted; closing")
			c.requestClose(websocket.StatusPolicyViolation, refusedByAccess)
		}
	}
}

func (p *Proxy) permits(label string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.access.Permits(label)
}

const refusedByAccess = "this key is not allowed on this proxy"
