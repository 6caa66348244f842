package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/client/webhook"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// maxConfigSize bounds a configuration file: a client's list of tunnels is
// a few kilobytes, and a mistaken path (a log, a disk image) should fail
// at once rather than be read whole.
const maxConfigSize = 1 << 20

// globalKeys are the configuration file's top-level keys besides
// [[tunnel]], each the name of the flag it sets with '-' written '_'.
// They follow the precedence rule: command line, then environment, then
// the file, then the flag's default.
var globalKeys = []string{"proxy", "token", "log_level", "ca", "inspect", "inspect_token", "inspect_buffer"}

// tunnelKeys are the keys of a [[tunnel]] table. target and key are
// required; each of the others has the meaning of the flag of the same
// name (with '_' for '-') for that tunnel alone. token, when set, is used
// instead of the global one.
var tunnelKeys = []string{"target", "key", "name", "basic_auth", "allow_ip", "deny_ip", "host_header", "pool", "max_concurrent", "webhook", "token"}

// globalFlags are the flags that still apply with --config: the global
// settings, and the flags about the run itself. Every other flag is a
// tunnel's setting, which only the file gives with --config: setting one
// is a usage error rather than silently ignored.
var globalFlags = []string{"proxy", "token", "log-level", "ca", "inspect", "inspect-token", "inspect-buffer", "cpuprofile", "config", "check"}

// configError is one mistake in a configuration file, at a line (and a
// column, when the TOML library knows it); 0 means unknown.
type configError struct {
	line, col int
	msg       string
}

// format writes the mistake as compilers do, FILE:LINE[:COL]: message, so
// that editors can jump to it.
func (e configError) format(file string) string {
	switch {
	case e.line == 0:
		return file + ": " + e.msg
	case e.col == 0:
		return fmt.Sprintf("%s:%d: %s", file, e.line, e.msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", file, e.line, e.col, e.msg)
}

// tunnelConfig is one [[tunnel]] of a configuration file, validated.
type tunnelConfig struct {
	n             int // from 1, in file order
	target        *url.URL
	keyPath       string // absolute
	names         []string
	basicAuth     []client.Credential
	allowIP       []netip.Prefix
	denyIP        []netip.Prefix
	hostHeader    string
	pool          bool
	maxConcurrent int
	webhooks      []webhook.Rule
	token         string
	hasToken      bool
}

// tokenOr returns the token the tunnel registers with: its own when its
// table sets one (an empty one meaning none), else the global one.
func (t *tunnelConfig) tokenOr(global string) string {
	if t.hasToken {
		return t.token
	}
	return global
}

// fileConfig is a configuration file, validated.
type fileConfig struct {
	path    string            // as the user gave it, for messages
	globals map[string]string // flag name → value, relative paths resolved
	keys    map[string]int    // flag name → index of its key, for line
	tunnels []*tunnelConfig
	idx     keyIndex
	loc     *locator
}

// label names a tunnel in messages: its place in the file and its target.
func (c *fileConfig) label(t *tunnelConfig) string {
	if line := c.loc.line(c.idx.header(t.n - 1)); line > 0 {
		return fmt.Sprintf("tunnel %d (%s:%d, %s)", t.n, c.path, line, t.target)
	}
	return fmt.Sprintf("tunnel %d (%s)", t.n, t.target)
}

// line returns the line of the global setting of the flag name.
func (c *fileConfig) line(name string) int {
	if k, ok := c.keys[name]; ok {
		return c.loc.line(k)
	}
	return 0
}

// loadConfig reads and validates the configuration file at path. It
// returns every mistake it finds rather than the first, each with its
// line; an error is for a file that cannot be read at all. getenv
// supplies the environment for webhook secrets (env:NAME). Nothing is
// created: a key file that does not exist yet is only checked to be
// creatable, which is what --check needs.
func loadConfig(path string, getenv func(string) string) (*fileConfig, []configError, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("config file: %w", err)
	}
	if len(data) > maxConfigSize {
		return nil, nil, fmt.Errorf("config file %s is larger than %d bytes", path, maxConfigSize)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config file: %w", err)
	}
	v := &validator{
		cfg:    &fileConfig{path: path, globals: map[string]string{}, keys: map[string]int{}},
		dir:    filepath.Dir(abs),
		getenv: getenv,
	}
	v.run(string(data))
	return v.cfg, v.errs, nil
}

// validator checks a file's values and collects the mistakes. A mistake
// is first tied to the index of its key in MetaData.Keys; lines are found
// only once there is something to report (see locator).
type validator struct {
	cfg    *fileConfig
	dir    string
	getenv func(string) string
	errs   []configError

	pending []pendingError
	idx     keyIndex
	loc     *locator
}

type pendingError struct {
	key int // index into keys; -1 for no line
	msg string
}

func (v *validator) run(data string) {
	var doc map[string]any
	md, err := toml.Decode(data, &doc)
	var pe toml.ParseError
	if errors.As(err, &pe) {
		v.errs = append(v.errs, configError{line: pe.Position.Line, col: pe.Position.Col, msg: "TOML syntax: " + pe.Message})
		return
	}
	if err != nil {
		v.errs = append(v.errs, configError{msg: err.Error()})
		return
	}
	v.loc = newLocator(data)
	_, inline := doc["tunnel"].([]any)
	v.idx = indexKeys(md.Keys(), inline)
	v.cfg.idx, v.cfg.loc = v.idx, v.loc

	for _, name := range sortedKeys(doc) {
		val := doc[name]
		at := v.idx.top[name]
		switch {
		case name == "tunnel":
			v.tunnels(val, at)
		case slices.Contains(globalKeys, name):
			v.global(name, val, at)
		case slices.Contains(tunnelKeys, name):
			v.fail(at, "%s is a tunnel's setting: put it in a [[tunnel]] table", name)
		default:
			v.fail(at, "unknown key %s%s", strconv.Quote(name), suggest(name, append(slices.Clone(globalKeys), "tunnel")))
		}
	}
	if _, ok := doc["tunnel"]; !ok {
		v.fail(-1, "no [[tunnel]] table: a configuration lists its tunnels, each in a [[tunnel]] table with a target and a key")
	}
	v.duplicates()
	v.resolve()
}

// sortedKeys returns a table's keys in a fixed order, so that the mistakes
// come out the same each time (they are sorted by line in the end).
func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (v *validator) fail(key int, format string, args ...any) {
	v.pending = append(v.pending, pendingError{key: key, msg: fmt.Sprintf(format, args...)})
}

// resolve turns the pending mistakes into lines, sorted by line.
func (v *validator) resolve() {
	for _, p := range v.pending {
		e := configError{msg: p.msg}
		if p.key >= 0 {
			e.line = v.loc.line(p.key)
		}
		v.errs = append(v.errs, e)
	}
	sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].line < v.errs[j].line })
}

func (v *validator) global(name string, val any, at int) {
	s, ok := v.str(name, val, at, name == "inspect_buffer")
	if !ok {
		return
	}
	flagName := strings.ReplaceAll(name, "_", "-")
	switch name {
	case "proxy":
		if _, err := client.ControlURL(s); err != nil {
			v.fail(at, "proxy %q: want ws://host:port or wss://host", s)
			return
		}
	case "log_level":
		if _, err := cli.Logger(io.Discard, s); err != nil {
			v.fail(at, "log_level: %v", err)
			return
		}
	case "ca":
		s = v.abs(s)
		if _, err := loadCA(s); err != nil {
			v.fail(at, "ca: %v", err)
			return
		}
	case "inspect":
		if err := checkInspectSyntax(s); err != nil {
			v.fail(at, "inspect %q: %v", s, err)
			return
		}
	case "inspect_buffer":
		var size limiter.Size
		if err := size.Set(s); err != nil {
			v.fail(at, "inspect_buffer %q: %v", s, err)
			return
		}
	}
	v.cfg.globals[flagName] = s
	v.cfg.keys[flagName] = at
}

// checkInspectSyntax checks an inspect address as the flag's own check
// does, but for the token, which may come from elsewhere (see runConfig).
func checkInspectSyntax(addr string) error {
	if addr == "off" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return errors.New(`want host:port, like 127.0.0.1:4040, or "off"`)
	}
	return nil
}

// abs resolves a path of the file relative to the file's directory, so a
// configuration works from whatever directory the client starts in.
func (v *validator) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(v.dir, p)
}

func (v *validator) tunnels(val any, at int) {
	var list []map[string]any
	switch t := val.(type) {
	case []map[string]any:
		list = t
	case []any:
		for _, e := range t {
			m, ok := e.(map[string]any)
			if !ok {
				v.fail(at, "tunnel: want [[tunnel]] tables, not an array of %s", typeName(e))
				return
			}
			list = append(list, m)
		}
	default:
		v.fail(at, "tunnel: want [[tunnel]] tables (two brackets), not %s", typeName(val))
		return
	}
	if len(list) == 0 {
		v.fail(at, "tunnel: the list of tunnels is empty")
	}
	for i, m := range list {
		v.tunnel(i, m)
	}
}

func (v *validator) tunnel(i int, m map[string]any) {
	t := &tunnelConfig{n: i + 1}
	where := "tunnel " + strconv.Itoa(t.n)
	header := v.idx.header(i)
	at := func(name string) int { return v.idx.in(i, name, header) }
	for _, name := range sortedKeys(m) {
		val := m[name]
		k := at(name)
		switch name {
		case "target":
			s, ok := val.(string)
			if n, isInt := val.(int64); isInt {
				s, ok = strconv.FormatInt(n, 10), true
			}
			if !ok {
				v.fail(k, "%s: target: want a port, host:port or URL, not %s", where, typeName(val))
				continue
			}
			u, err := parseTarget(s)
			if err != nil {
				v.fail(k, "%s: %v", where, err)
				continue
			}
			t.target = u
		case "key":
			s, ok := v.str(where+": key", val, k, false)
			if !ok {
				continue
			}
			if s == "" {
				v.fail(k, "%s: key: empty: want the path of the tunnel's key file", where)
				continue
			}
			t.keyPath = v.abs(s)
			if err := checkKeyFile(t.keyPath); err != nil {
				v.fail(k, "%s: %v", where, err)
			}
		case "name":
			names, _ := v.strs(where+": name", val, k)
			for j, n := range names {
				// Hostnames are case-insensitive, and the proxy checks
				// names in lower case, as --name does.
				n = strings.ToLower(n)
				if err := messages.CheckName(n); err != nil {
					v.fail(k, "%s: name%s: %v", where, entry(j, len(names)), err)
				} else if slices.Contains(t.names, n) {
					v.fail(k, "%s: name%s: %q is listed twice", where, entry(j, len(names)), n)
				} else {
					t.names = append(t.names, n)
				}
			}
		case "basic_auth":
			t.basicAuth = v.basicAuth(where, val, k)
		case "allow_ip", "deny_ip":
			list, _ := v.strs(where+": "+name, val, k)
			var prefixes []netip.Prefix
			for j, s := range list {
				// One at a time, so that every bad one is reported.
				p, err := parsePrefixes(name+entry(j, len(list)), []string{s})
				if err != nil {
					v.fail(k, "%s: %v", where, err)
					continue
				}
				prefixes = append(prefixes, p...)
			}
			if len(prefixes) > messages.MaxIPRules {
				v.fail(k, "%s: %s: %d prefixes, more than %d", where, name, len(prefixes), messages.MaxIPRules)
			}
			if name == "allow_ip" {
				t.allowIP = prefixes
			} else {
				t.denyIP = prefixes
			}
		case "host_header":
			t.hostHeader, _ = v.str(where+": host_header", val, k, false)
		case "token":
			t.token, t.hasToken = v.str(where+": token", val, k, false)
		case "pool":
			b, ok := val.(bool)
			if !ok {
				v.fail(k, "%s: pool: want true or false, not %s", where, typeName(val))
			}
			t.pool = b
		case "max_concurrent":
			n, ok := val.(int64)
			switch {
			case !ok:
				v.fail(k, "%s: max_concurrent: want a number, not %s", where, typeName(val))
			case n < 1 || n > 1<<31-1:
				v.fail(k, "%s: max_concurrent %d: want at least 1", where, n)
			default:
				t.maxConcurrent = int(n)
			}
		case "webhook":
			specs, _ := v.strs(where+": webhook", val, k)
			for j, spec := range specs {
				// The error names the provider and path, never the secret.
				r, err := webhook.ParseRule(v.webhookSpec(spec), v.getenv)
				if err != nil {
					if e := entry(j, len(specs)); e != "" {
						v.fail(k, "%s: webhook%s: %v", where, e, err)
					} else {
						v.fail(k, "%s: %v", where, err)
					}
					continue
				}
				t.webhooks = append(t.webhooks, r)
			}
		default:
			if slices.Contains(globalKeys, name) {
				v.fail(k, "%s: %s is a global setting: put it above the first [[tunnel]]", where, name)
				continue
			}
			v.fail(k, "%s: unknown key %s%s", where, strconv.Quote(name), suggest(name, tunnelKeys))
		}
	}
	if _, ok := m["target"]; !ok {
		v.fail(header, "%s: no target: want target = a port, host:port or URL", where)
	}
	if _, ok := m["key"]; !ok {
		v.fail(header, "%s: no key: want key = the path of the tunnel's key file (created on first use; each tunnel's own key gives it its own hostname)", where)
	}
	if t.target == nil {
		t.target = &url.URL{} // for labels; the configuration is refused anyway
	}
	v.cfg.tunnels = append(v.cfg.tunnels, t)
}

// webhookSpec resolves a relative file: secret of a webhook spec against
// the file's directory, as for every other path in the file.
func (v *validator) webhookSpec(spec string) string {
	scope, source, ok := strings.Cut(spec, "=")
	if p, isFile := strings.CutPrefix(source, "file:"); ok && isFile && p != "" {
		return scope + "=file:" + v.abs(p)
	}
	return spec
}

// duplicates finds tunnels that would fight over a hostname: two with one
// key replace each other at the proxy (the newest connection wins) unless
// both are pool members, and a pooled and an unpooled one for one key are
// refused. Two tunnels claiming one friendly name would take it from each
// other too.
func (v *validator) duplicates() {
	byKey := map[string]*tunnelConfig{}
	byName := map[string]*tunnelConfig{}
	for i, t := range v.cfg.tunnels {
		if t.keyPath == "" {
			continue
		}
		clean := filepath.Clean(t.keyPath)
		if o, ok := byKey[clean]; ok {
			switch {
			case o.pool && t.pool:
				// Replicas of one service behind one hostname.
			case o.pool != t.pool:
				v.fail(v.idx.in(i, "key", v.idx.header(i)), "tunnel %d: key file %s is tunnel %d's too, and only one of them sets pool: the proxy refuses to mix pooled and unpooled connections of one key; set pool = true on both, or give each its own key", t.n, t.keyPath, o.n)
			default:
				v.fail(v.idx.in(i, "key", v.idx.header(i)), "tunnel %d: key file %s is tunnel %d's too: two tunnels with one key take the hostname from each other; give each its own key file, or set pool = true on both to serve one hostname together", t.n, t.keyPath, o.n)
			}
		} else {
			byKey[clean] = t
		}
		for _, n := range t.names {
			if o, ok := byName[n]; ok && filepath.Clean(o.keyPath) != clean {
				v.fail(v.idx.in(i, "name", v.idx.header(i)), "tunnel %d: name %q is tunnel %d's too: two tunnels cannot share a name", t.n, n, o.n)
			} else if !ok {
				byName[n] = t
			}
		}
	}
}

// str reads a string; num also accepts an integer (a size in bytes).
func (v *validator) str(what string, val any, at int, num bool) (string, bool) {
	switch s := val.(type) {
	case string:
		return s, true
	case int64:
		if num {
			return strconv.FormatInt(s, 10), true
		}
	}
	v.fail(at, "%s: want a string, not %s", what, typeName(val))
	return "", false
}

// strs reads a string or an array of strings.
func (v *validator) strs(what string, val any, at int) ([]string, bool) {
	switch s := val.(type) {
	case string:
		return []string{s}, true
	case []any:
		out := make([]string, 0, len(s))
		for _, e := range s {
			str, ok := e.(string)
			if !ok {
				v.fail(at, "%s: want a string or an array of strings, not an array holding %s", what, typeName(e))
				return nil, false
			}
			out = append(out, str)
		}
		return out, true
	}
	v.fail(at, "%s: want a string or an array of strings, not %s", what, typeName(val))
	return nil, false
}

// typeName names a TOML value's type for messages.
// entry names the i-th of n entries of an array, for messages: the TOML
// library gives no position inside a value, so a mistake in a multi-line
// array has the line of its key and the entry's number (from 1).
func entry(i, n int) string {
	if n < 2 {
		return ""
	}
	return fmt.Sprintf(" entry %d", i+1)
}

func typeName(val any) string {
	switch val.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	}
	return "a date or time"
}

// suggest returns " (did you mean "x"?)" for the known key closest to a
// misspelt one, if one is close.
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// basicAuth reads basic_auth: an array whose entries are each a string
// "user:password" (as --basic-auth takes) or a table { user = "u",
// password = "p" } or { user = "u", hash = "$2a$10$..." } (a bcrypt hash
// made beforehand, as htpasswd -B writes: the file then holds no
// password). A single entry may stand alone, without the array. Messages
// never repeat a password.
func (v *validator) basicAuth(where string, val any, at int) []client.Credential {
	entries, ok := val.([]any)
	if !ok {
		entries = []any{val}
	}
	var creds []client.Credential
	for i, e := range entries {
		where := where + ": basic_auth" + entry(i, len(entries))
		var c client.Credential
		switch e := e.(type) {
		case string:
			cs, err := parseBasicAuth([]string{e})
			if err != nil {
				v.fail(at, "%s: %v", where, err)
				continue
			}
			c = cs[0]
		case map[string]any:
			bad := false
			for _, k := range sortedKeys(e) {
				s, isStr := e[k].(string)
				switch {
				case !slices.Contains([]string{"user", "password", "hash"}, k):
					v.fail(at, "%s: unknown key %q: want user, and password or hash", where, k)
					bad = true
				case !isStr:
					v.fail(at, "%s: %s: want a string, not %s", where, k, typeName(e[k]))
					bad = true
				case k == "user":
					c.User = s
				case k == "password":
					c.Password = s
				default:
					c.Hash = s
				}
			}
			if bad {
				continue
			}
			if err := c.Check(); err != nil {
				v.fail(at, "%s: %v", where, err)
				continue
			}
		default:
			v.fail(at, "%s: want \"user:password\" or { user = ..., password = ... }, not %s", where, typeName(e))
			continue
		}
		if slices.ContainsFunc(creds, func(o client.Credential) bool { return o.User == c.User }) {
			v.fail(at, "%s: user %q is listed twice", where, c.User)
			continue
		}
		creds = append(creds, c)
	}
	if n := len(creds); n > messages.MaxBasicAuthUsers {
		v.fail(at, "%s: basic_auth: %d users, more than %d", where, n, messages.MaxBasicAuthUsers)
	}
	return creds
}

// checkKeyFile checks, without creating anything, that a key file can be
// used: an existing one must hold a key, and for a new one the nearest
// existing directory above it must be a directory.
func checkKeyFile(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("key %s is a directory, not a key file", path)
	case err == nil:
		if _, err := client.LoadOrCreateKey(path); err != nil { // exists: only read
			return err
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("key file %s: %v", path, unwrapPath(err))
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("key file %s cannot be created: %s is not a directory", path, dir)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("key file %s cannot be created: %v", path, err)
		}
		if filepath.Dir(dir) == dir {
			return nil
		}
	}
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
