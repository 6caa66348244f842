package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/internal/testcert"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// testEnv is the environment the configuration tests' webhook specs read.
func testEnv(name string) string {
	if name == "HOOK_SECRET" {
		return "whsec-test"
	}
	return ""
}

// want is a mistake a test file expects: its line and a part of its
// message.
type want struct {
	line int
	part string
}

// marked returns the mistakes a file's "#!" comments expect: each "#!"
// on a line expects one mistake reported on that line, with the text
// after it (up to the next "#!") in its message. Expectations live next
// to the line they are about, so the line numbers are never written down
// by hand.
func marked(text string) []want {
	var out []want
	for i, line := range strings.Split(text, "\n") {
		parts := strings.Split(strings.TrimRight(line, "\r"), "#!")
		for _, p := range parts[1:] {
			out = append(out, want{i + 1, strings.TrimSpace(p)})
		}
	}
	return out
}

// lineOf returns the number of the first line of text holding s.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("no line holds %q", s)
	return 0
}

// writeFiles writes files (name → content) into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// checkMistakes compares the mistakes reported with those text's markers
// expect (plus unlocated ones, expected without a line): each expected
// one must be reported exactly once, and nothing else.
func checkMistakes(t *testing.T, got []configError, text string, unlocated []string) {
	t.Helper()
	wants := marked(text)
	for _, u := range unlocated {
		wants = append(wants, want{0, u})
	}
	used := make([]bool, len(got))
	for _, w := range wants {
		found := false
		for i, e := range got {
			if !used[i] && e.line == w.line && strings.Contains(e.msg, w.part) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("no mistake at line %d with %q", w.line, w.part)
		}
	}
	for i, e := range got {
		if !used[i] {
			t.Errorf("unexpected mistake: %s", e.format("FILE"))
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].line < got[i-1].line {
			t.Errorf("mistakes out of line order: %d after %d", got[i].line, got[i-1].line)
		}
	}
}

func TestConfigMistakes(t *testing.T) {
	tooManyUsers := make([]string, messages.MaxBasicAuthUsers+1)
	for i := range tooManyUsers {
		tooManyUsers[i] = fmt.Sprintf("%q", "u"+strconv.Itoa(i)+":pw")
	}
	for _, tc := range []struct {
		name      string
		text      string
		files     map[string]string // written beside the file
		unlocated []string          // mistakes reported without a line
		never     []string          // must appear in no message
	}{
		{name: "unknown keys", text: `
prxy = "ws://h:1" #! unknown key "prxy" (did you mean "proxy"?)
colour = "red" #! unknown key "colour"

[[tunnel]]
target = 3000
key = "k.jwk"
targt = 3001 #! tunnel 1: unknown key "targt" (did you mean "target"?)
[tunnel.extra] #! tunnel 1: unknown key "extra"
x = 1
`},
		{name: "keys in the wrong place", text: `
target = 3000 #! target is a tunnel's setting: put it in a [[tunnel]] table

[[tunnel]]
target = 3000
key = "k.jwk"
log_level = "debug" #! tunnel 1: log_level is a global setting
`},
		{name: "wrong types", text: `
proxy = 8080 #! proxy: want a string, not an integer
log_level = ["debug"] #! log_level: want a string, not an array
inspect_buffer = true #! inspect_buffer: want a string, not a boolean

[[tunnel]]
target = true #! tunnel 1: target: want a port, host:port or URL, not a boolean
key = 5 #! tunnel 1: key: want a string, not an integer
name = [1, 2] #! tunnel 1: name: want a string or an array of strings, not an array holding an integer
pool = "yes" #! tunnel 1: pool: want true or false, not a string
max_concurrent = "10" #! tunnel 1: max_concurrent: want a number, not a string
host_header = 1.5 #! tunnel 1: host_header: want a string, not a float
webhook = { github = "x" } #! tunnel 1: webhook: want a string or an array of strings, not a table
token = 1979-05-27 #! tunnel 1: token: want a string, not a date or time
`},
		{name: "missing target and key", text: `
[[tunnel]] #! tunnel 1: no target #! tunnel 1: no key
host_header = "rewrite"

[[tunnel]]
target = 3000
key = "k.jwk"

[[tunnel]] #! tunnel 3: no key
target = 3001
`},
		{name: "bad values", text: `
proxy = "ftp://h" #! proxy "ftp://h": want ws://host:port or wss://host
log_level = "loud" #! log_level: invalid log level "loud"
inspect = "4040" #! inspect "4040": want host:port
inspect_buffer = "lots" #! inspect_buffer "lots"
ca = "missing.pem" #! ca: read CA file

[[tunnel]]
target = "ftp://h:21" #! tunnel 1: invalid TARGET "ftp://h:21"
key = "" #! tunnel 1: key: empty
max_concurrent = 0 #! tunnel 1: max_concurrent 0: want at least 1

[[tunnel]]
target = 99999 #! tunnel 2: invalid TARGET port 99999
key = "k2.jwk"
name = ["Docs", "bad_name", "-x", "DOCS"] #! name entry 2: name "bad_name" has '_' #! name entry 3: name "-x" starts or ends with a hyphen #! name entry 4: "docs" is listed twice
`},
		{name: "a name too long", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
name = "` + strings.Repeat("a", 64) + `" #! longer than 63 characters
`},
		{name: "no tunnels", text: `
proxy = "ws://h:1"
`, unlocated: []string{"no [[tunnel]] table"}},
		{name: "an empty list of tunnels", text: `
tunnel = [] #! the list of tunnels is empty
`},
		{name: "one bracket", text: `
[tunnel] #! want [[tunnel]] tables (two brackets), not a table
target = 3000
`},
		{name: "not tables", text: `
tunnel = [1, 2] #! want [[tunnel]] tables, not an array of an integer
`},
		{name: "one key for two tunnels", text: `
[[tunnel]]
target = 3000
key = "k.jwk"

[[tunnel]]
target = 3001
key = "./sub/../k.jwk" #! tunnel 2: key file
`},
		{name: "one key, only one pooled", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
pool = true

[[tunnel]]
target = 3001
key = "k.jwk" #! only one of them sets pool
`},
		{name: "one key, both pooled", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
pool = true

[[tunnel]]
target = 3001
key = "k.jwk"
pool = true
`},
		{name: "one name for two tunnels", text: `
[[tunnel]]
target = 3000
key = "a.jwk"
name = "docs"

[[tunnel]]
target = 3001
key = "b.jwk"
name = ["app", "docs"] #! tunnel 2: name "docs" is tunnel 1's too
`},
		{name: "key files", text: `
[[tunnel]]
target = 3000
key = "plain/k.jwk" #! is not a directory

[[tunnel]]
target = 3001
key = "junk.jwk" #! is not a JWK

[[tunnel]]
target = 3002
key = "adir" #! is a directory, not a key file
`, files: map[string]string{"plain": "a file", "junk.jwk": "not a key", "adir/x": ""}},
		{name: "webhooks", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
webhook = [ #! entry 1: webhook spec has no '=' #! entry 2: webhook spec: unknown provider "gitlab" #! entry 3: webhook "github": environment variable UNSET_SECRET is not set #! entry 4: webhook "slack": cannot read secret file
  "github",
  "gitlab=env:HOOK_SECRET",
  "github=env:UNSET_SECRET",
  "slack=file:missing.txt",
  "stripe:/hooks=env:HOOK_SECRET",
]
x = 1 #! unknown key "x"
`, never: []string{"whsec-test"}},
		{name: "basic auth", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
basic_auth = [ #! entry 1: want USER:PASSWORD #! entry 2: user "a": empty password #! entry 4: user "b" is listed twice #! entry 5: user "c": empty password #! entry 6: user "d": set a password or a hash, not both #! entry 7: unknown key "pw" #! entry 8: password: want a string, not an integer #! entry 9: want "user:password" or { user = ..., password = ... }, not an integer #! entry 10:
  "nocolon-s3cretpw",
  "a:",
  "b:x",
  "b:y",
  { user = "c" },
  { user = "d", password = "p", hash = "$2a$10$x" },
  { user = "e", pw = "x" },
  { user = "f", password = 1 },
  3,
  "bad<user:x",
  { user = "g", hash = "$2a$10$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01" },
]
basic_auth2 = 1 #! unknown key "basic_auth2" (did you mean "basic_auth"?)
`, never: []string{"s3cretpw"}},
		{name: "too many users", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
basic_auth = [` + strings.Join(tooManyUsers, ", ") + `] #! more than ` + strconv.Itoa(messages.MaxBasicAuthUsers) + `
`},
		{name: "IP rules", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
allow_ip = ["10.0.0.0/8", "nope", "192.0.2.1", "2001:db8::/32"] #! invalid allow_ip entry 2 "nope"
deny_ip = "fe80::1%eth0" #! invalid deny_ip "fe80::1%eth0"
`},
		{name: "lines after multi-line values", text: `
[[tunnel]]
target = 3000
key = "k.jwk"
host_header = """
colour = 1
pool = "not this one"
"""
x = 1 #! unknown key "x"
webhook = [ #! UNSET_SECRET
  "github=env:UNSET_SECRET",
  '''slack=env:HOOK_SECRET''',
]
y = ''' #! unknown key "y"
z = 2
'''
basic_auth = [{ user = "u", password = "p" }, { user = "v", pw = "p" }] #! unknown key "pw"
w = 3 #! unknown key "w"
`},
		{name: "inline array of tunnels", text: `
tunnel = [ { target = 3000 }, { key = "k.jwk" } ] #! tunnel 1: no key #! tunnel 2: no target
`},
	} {
		for _, crlf := range []bool{false, true} {
			name := tc.name
			text := tc.text
			if crlf {
				if tc.name != "lines after multi-line values" && tc.name != "wrong types" {
					continue
				}
				name += " (CRLF)"
				text = strings.ReplaceAll(text, "\n", "\r\n")
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				writeFiles(t, dir, tc.files)
				path := filepath.Join(dir, "tunnels.toml")
				writeFiles(t, dir, map[string]string{"tunnels.toml": text})
				cfg, got, err := loadConfig(path, testEnv)
				if err != nil {
					t.Fatal(err)
				}
				checkMistakes(t, got, text, tc.unlocated)
				for _, e := range got {
					for _, s := range tc.never {
						if strings.Contains(e.msg, s) {
							t.Errorf("message repeats a secret: %s", e.msg)
						}
					}
				}
				if len(marked(text))+len(tc.unlocated) == 0 && len(cfg.tunnels) != 2 {
					t.Errorf("%d tunnels, want 2", len(cfg.tunnels))
				}
				// Checking creates no key file.
				for _, k := range []string{"k.jwk", "k2.jwk", "a.jwk", "b.jwk"} {
					if _, err := os.Stat(filepath.Join(dir, k)); err == nil {
						t.Errorf("checking created %s", k)
					}
				}
			})
		}
	}
}

func TestConfigSyntaxErrorHasLineAndColumn(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		part       string
	}{
		{"no value", "proxy = \"ws://h:1\"\n[[tunnel]]\ntarget = \n", 3, "expected value"},
		{"key defined twice", "[[tunnel]]\ntarget = 1\ntarget = 2\n", 3, "already been defined"},
		{"unterminated string", "[[tunnel]]\nkey = \"k.jwk\ntarget = 1\n", 2, "strings cannot contain newlines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.toml")
			writeFiles(t, filepath.Dir(path), map[string]string{"c.toml": tc.text})
			_, got, err := loadConfig(path, testEnv)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("%d mistakes, want 1: %v", len(got), got)
			}
			// The column is the library's: it is passed on as it is.
			var doc map[string]any
			var pe toml.ParseError
			if _, err := toml.Decode(tc.text, &doc); !errors.As(err, &pe) || pe.Position.Col < 1 {
				t.Fatalf("the library says %v", err)
			}
			e := got[0]
			if e.line != tc.line || e.col != pe.Position.Col || !strings.Contains(e.msg, tc.part) {
				t.Errorf("got %s, want line %d column %d with %q", e.format("c.toml"), tc.line, pe.Position.Col, tc.part)
			}
			if f := e.format("c.toml"); !strings.HasPrefix(f, fmt.Sprintf("c.toml:%d:%d: TOML syntax: ", tc.line, pe.Position.Col)) {
				t.Errorf("formatted as %q", f)
			}
		})
	}
}

func TestConfigFormat(t *testing.T) {
	for _, tc := range []struct {
		e    configError
		want string
	}{
		{configError{msg: "m"}, "f.toml: m"},
		{configError{line: 3, msg: "m"}, "f.toml:3: m"},
		{configError{line: 3, col: 7, msg: "m"}, "f.toml:3:7: m"},
	} {
		if got := tc.e.format("f.toml"); got != tc.want {
			t.Errorf("format(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}

// A complete, valid file: every key is read into what the tunnel will
// run with.
func TestConfigValues(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	writeFiles(t, dir, map[string]string{"ca.pem": string(ca.PEM)})
	text := `
proxy = "wss://tunnels.example.com"
token = "global-token"
log_level = "debug"
ca = "ca.pem"
inspect = "127.0.0.1:4050"
inspect_token = "itok"
inspect_buffer = 1000000

[[tunnel]]
target = 3000
key = "keys/app.jwk"
name = ["App", "www2"]
basic_auth = ["alice:pa:ss,word", { user = "bob", password = "hunter2" }]
allow_ip = ["10.0.0.0/8", "192.0.2.7"]
deny_ip = "10.1.0.0/16"
host_header = "rewrite"
pool = true
max_concurrent = 50
webhook = "github=env:HOOK_SECRET"
token = "own-token"

[[tunnel]]
target = "h2c://127.0.0.1:50051"
key = "/abs/grpc.jwk"
`
	path := filepath.Join(dir, "tunnels.toml")
	writeFiles(t, dir, map[string]string{"tunnels.toml": text})
	cfg, mistakes, err := loadConfig(path, testEnv)
	if err != nil || len(mistakes) > 0 {
		t.Fatalf("mistakes %v, err %v", mistakes, err)
	}
	wantGlobals := map[string]string{
		"proxy": "wss://tunnels.example.com", "token": "global-token", "log-level": "debug",
		"ca": filepath.Join(dir, "ca.pem"), "inspect": "127.0.0.1:4050", "inspect-token": "itok",
		"inspect-buffer": "1000000",
	}
	for k, w := range wantGlobals {
		if g := cfg.globals[k]; g != w {
			t.Errorf("global %s = %q, want %q", k, g, w)
		}
	}
	if len(cfg.globals) != len(wantGlobals) {
		t.Errorf("globals %v, want %v", cfg.globals, wantGlobals)
	}
	if len(cfg.tunnels) != 2 {
		t.Fatalf("%d tunnels", len(cfg.tunnels))
	}
	a, b := cfg.tunnels[0], cfg.tunnels[1]
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("target", a.target, "http://127.0.0.1:3000")
	check("key", a.keyPath, filepath.Join(dir, "keys", "app.jwk"))
	check("names", a.names, []string{"app", "www2"})
	check("basic auth", a.basicAuth, []client.Credential{{User: "alice", Password: "pa:ss,word"}, {User: "bob", Password: "hunter2"}})
	check("allow", a.allowIP, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")})
	check("deny", a.denyIP, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")})
	check("host header", a.hostHeader, "rewrite")
	check("pool", a.pool, true)
	check("max concurrent", a.maxConcurrent, 50)
	check("webhooks", len(a.webhooks), 1)
	check("token", a.tokenOr("global-token"), "own-token")
	check("n", b.n, 2)
	check("target 2", b.target, "h2c://127.0.0.1:50051")
	check("key 2", b.keyPath, "/abs/grpc.jwk")
	check("token 2", b.tokenOr("global-token"), "global-token")
	check("pool 2", b.pool, false)
	check("label", cfg.label(b), fmt.Sprintf("tunnel 2 (%s:%d, h2c://127.0.0.1:50051)", path, lineOf(t, text, `target = "h2c`)-1))
}

func TestConfigTunnelToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    tunnelConfig
		want string
	}{
		{"none: the global one", tunnelConfig{}, "global"},
		{"its own", tunnelConfig{token: "own", hasToken: true}, "own"},
		{"an empty one: none", tunnelConfig{hasToken: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.tokenOr("global"); got != tc.want {
				t.Errorf("token %q, want %q", got, tc.want)
			}
		})
	}
}

// Relative paths in the file are relative to the file's directory, not to
// the directory the client runs in.
func TestConfigRelativePaths(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	writeFiles(t, dir, map[string]string{
		"sub/ca.pem":   string(ca.PEM),
		"sub/hook.txt": "secret-from-file\n",
		"sub/c.toml": `ca = "ca.pem"
[[tunnel]]
target = 3000
key = "k.jwk"
webhook = "github=file:hook.txt"
[[tunnel]]
target = 3001
key = "../up.jwk"
[[tunnel]]
target = 3002
key = "` + filepath.Join(dir, "abs.jwk") + `"
`,
	})
	t.Chdir(dir) // the file is given relative to here
	cfg, mistakes, err := loadConfig(filepath.Join("sub", "c.toml"), testEnv)
	if err != nil || len(mistakes) > 0 {
		t.Fatalf("mistakes %v, err %v", mistakes, err)
	}
	if got, want := cfg.globals["ca"], filepath.Join(dir, "sub", "ca.pem"); got != want {
		t.Errorf("ca %s, want %s", got, want)
	}
	for i, want := range []string{filepath.Join(dir, "sub", "k.jwk"), filepath.Join(dir, "up.jwk"), filepath.Join(dir, "abs.jwk")} {
		if got := cfg.tunnels[i].keyPath; got != want {
			t.Errorf("tunnel %d key %s, want %s", i+1, got, want)
		}
	}
	if len(cfg.tunnels[0].webhooks) != 1 {
		t.Errorf("webhook from a file beside the config not read")
	}
}

// The precedence rule for global settings: the command line beats the
// environment, which beats the file, which beats the default. Every
// combination of sources, for settings of several kinds.
func TestConfigPrecedence(t *testing.T) {
	type source struct{ flag, env, file string }
	settings := []struct {
		flag, key string
		values    source
	}{
		{"proxy", "proxy", source{"ws://flag.example:1", "ws://env.example:1", "ws://file.example:1"}},
		{"token", "token", source{"flag-token", "env-token", "file-token"}},
		{"log-level", "log_level", source{"debug", "warn", "error"}},
		{"inspect", "inspect", source{"127.0.0.1:4101", "127.0.0.1:4102", "127.0.0.1:4103"}},
		{"inspect-buffer", "inspect_buffer", source{"1MB", "2MB", "3MB"}},
	}
	for _, s := range settings {
		for mask := 0; mask < 8; mask++ {
			useFlag, useEnv, useFile := mask&1 != 0, mask&2 != 0, mask&4 != 0
			name := fmt.Sprintf("%s flag=%v env=%v file=%v", s.flag, useFlag, useEnv, useFile)
			t.Run(name, func(t *testing.T) {
				fs, _ := newFlags()
				want := fs.Lookup(s.flag).DefValue
				switch {
				case useFlag:
					want = s.values.flag
				case useEnv:
					want = s.values.env
				case useFile:
					want = s.values.file
				}
				// Compare as the flag prints its value (a size as 1MB).
				norm, _ := newFlags()
				if err := norm.Set(s.flag, want); err != nil {
					t.Fatal(err)
				}
				want = norm.Lookup(s.flag).Value.String()

				var args []string
				if useFlag {
					args = append(args, "--"+s.flag, s.values.flag)
				}
				env := map[string]string{}
				if useEnv {
					env[cli.EnvName(s.flag)] = s.values.env
				}
				text := "[[tunnel]]\ntarget = 3000\nkey = \"k.jwk\"\n"
				if useFile {
					text = fmt.Sprintf("%s = %q\n", s.key, s.values.file) + text
				}
				path := filepath.Join(t.TempDir(), "c.toml")
				writeFiles(t, filepath.Dir(path), map[string]string{"c.toml": text})
				args = append(args, "--config", path)
				if err := cli.Parse(fs, args, func(k string) string { return env[k] }); err != nil {
					t.Fatal(err)
				}
				cfg, mistakes, err := loadConfig(path, testEnv)
				if err != nil || len(mistakes) > 0 {
					t.Fatalf("mistakes %v, err %v", mistakes, err)
				}
				fromFile, err := applyConfig(fs, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if got := fs.Lookup(s.flag).Value.String(); got != want {
					t.Errorf("%s = %q, want %q", s.flag, got, want)
				}
				if fromFile[s.flag] != (useFile && !useFlag && !useEnv) {
					t.Errorf("fromFile[%s] = %v", s.flag, fromFile[s.flag])
				}
			})
		}
	}
}

// The locator finds each key's line by parsing prefixes: check it against
// a file whose every statement is on a known line, multi-line ones
// included.
func TestConfigLocator(t *testing.T) {
	text := "a = 1\n\n# comment\nb = \"\"\"\nc = 2\n\"\"\"\nd = [\n  1,\n]\n[t]\ne = { f = 1, g = 2 }\n[[u]]\nh = 1\n[[u]]\ni = '''x'''"
	// The keys in the order MetaData.Keys lists them, and the lines their
	// statements start on.
	wantLines := []int{1, 4, 7, 10, 11, 11, 11, 12, 13, 14, 15}
	l := newLocator(text)
	for k, w := range wantLines {
		if got := l.line(k); got != w {
			t.Errorf("key %d on line %d, want %d", k, got, w)
		}
	}
	if got := l.line(len(wantLines)); got != 0 {
		t.Errorf("a key past the last on line %d, want 0", got)
	}
	if got := l.line(-1); got != 0 {
		t.Errorf("key -1 on line %d, want 0", got)
	}
}

func TestSuggest(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"targt", ` (did you mean "target"?)`},
		{"basicauth", ` (did you mean "basic_auth"?)`},
		{"hostheader", ` (did you mean "host_header"?)`},
		{"colour", ""},
	} {
		if got := suggest(tc.in, tunnelKeys); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// tagged is a local web service that answers with its tag and the path, so
// a test can tell which tunnel reached which service.
func tagged(t *testing.T, tag string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, tag+" "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// waitLines waits for n lines of p's stdout and returns them.
func waitLines(t *testing.T, p *testenv.Process, n int, within time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var lines []string
	if _, err := p.WaitLine(ctx, func(l string) bool { lines = append(lines, l); return len(lines) == n }); err != nil {
		t.Fatalf("%d stdout lines of %d: %v; stderr:\n%s", len(lines), n, err, p.Stderr())
	}
	return lines
}

// tunnelURLs reads the "URL TARGET" lines of a client with --config and
// returns the URL for each target, checking that each target has one.
func tunnelURLs(t *testing.T, lines []string, port int, targets ...string) map[string]string {
	t.Helper()
	urls := map[string]string{}
	for _, l := range lines {
		u, target, ok := strings.Cut(l, " ")
		if !ok || !cmdtest.URLPattern(port).MatchString(u) || !slices.Contains(targets, target) {
			t.Fatalf("stdout line %q, want \"URL TARGET\" with one of %v", l, targets)
		}
		if _, dup := urls[target]; dup {
			t.Fatalf("two lines for %s: %v", target, lines)
		}
		urls[target] = u
	}
	return urls
}

// Two tunnels from one file, in one process, each with its own
// connection, hostname and inspector; the precedence rule seen from
// outside: a proxy given by the file, by the environment over the file,
// and by the command line over both.
func TestConfigTwoTunnelsThroughAProxy(t *testing.T) {
	a, b := tagged(t, "A"), tagged(t, "B")
	px := cmdtest.StartProxy(t, 0)
	nowhere := "ws://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) // nothing listens there
	real := "ws://" + px.Addr
	dir := t.TempDir()
	write := func(proxy string) string {
		path := filepath.Join(dir, "tunnels.toml")
		writeFiles(t, dir, map[string]string{"tunnels.toml": fmt.Sprintf(`proxy = %q
inspect = "127.0.0.1:0"

[[tunnel]]
target = %q
key = "a.jwk"

[[tunnel]]
target = %q
key = "b.jwk"
`, proxy, a.URL, b.URL)})
		return path
	}
	var first map[string]string
	for _, tc := range []struct {
		name      string
		fileProxy string
		env       []string
		args      []string
	}{
		{"proxy from the file", real, nil, nil},
		{"environment over the file", nowhere, []string{"KEYHOLE_PROXY=" + real}, nil},
		{"command line over the environment and the file", nowhere, []string{"KEYHOLE_PROXY=" + nowhere}, []string{"--proxy", real}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(tc.fileProxy)
			c := testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg), append([]string{"--config", path}, tc.args...), cmdtest.Env(tc.env...))
			urls := tunnelURLs(t, waitLines(t, c, 2, 30*time.Second), px.Port, a.URL, b.URL)
			if urls[a.URL] == urls[b.URL] {
				t.Fatalf("both tunnels at %s", urls[a.URL])
			}
			for target, tag := range map[string]string{a.URL: "A", b.URL: "B"} {
				if status, body := cmdtest.Do(t, px.Addr, "GET", urls[target], "/x", ""); status != 200 || body != tag+" /x" {
					t.Errorf("GET %s/x: %d %q, want %s's answer", urls[target], status, body, tag)
				}
			}
			// The keys are created beside the file, and the same keys
			// give the same hostnames on the next run.
			for _, k := range []string{"a.jwk", "b.jwk"} {
				if _, err := os.Stat(filepath.Join(dir, k)); err != nil {
					t.Errorf("key file: %v", err)
				}
			}
			if first == nil {
				first = urls
				checkInspectors(t, c, urls, a.URL, b.URL)
			} else if fmt.Sprint(urls) != fmt.Sprint(first) {
				t.Errorf("URLs %v, first run %v", urls, first)
			}
			// Ctrl-C stops every tunnel, and the process exits 0.
			if err := c.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if code := cmdtest.Exit(t, c, 10*time.Second); code != 0 {
				t.Fatalf("exit %d after SIGINT; stderr:\n%s", code, c.Stderr())
			}
			if n := len(strings.Split(c.Stdout(), "\n")); n != 2 {
				t.Errorf("%d stdout lines, want 2:\n%s", n, c.Stdout())
			}
		})
	}
}

// checkInspectors finds each tunnel's inspector from its log line and
// checks that its API lists that tunnel, and only it.
func checkInspectors(t *testing.T, c *testenv.Process, urls map[string]string, targets ...string) {
	t.Helper()
	for i, target := range targets {
		n := strconv.Itoa(i + 1)
		line := cmdtest.WaitStderr(t, c, 10*time.Second, "msg=inspector", "tunnel="+n+" ")
		m := regexp.MustCompile(`url=(http://\S+)`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("no URL in %q", line)
		}
		u := m[1]
		var tunnels struct {
			Tunnels []struct {
				Name      string `json:"name"`
				PublicURL string `json:"public_url"`
			} `json:"tunnels"`
		}
		apiGet(t, u+"/api/tunnels", &tunnels)
		if len(tunnels.Tunnels) != 1 || tunnels.Tunnels[0].PublicURL != urls[target] || tunnels.Tunnels[0].Name != "tunnel"+n {
			t.Errorf("inspector of tunnel %s lists %+v, want tunnel%s at %s", n, tunnels.Tunnels, n, urls[target])
		}
	}
}

// A tunnel's own token beats the global one; a tunnel the proxy refuses
// stops the whole process with exit 1 and a message naming it.
func TestConfigRefusedTunnelStopsAll(t *testing.T) {
	local := tagged(t, "L")
	px := cmdtest.StartProxy(t, 0, "--token", "s3cret")
	dir := t.TempDir()
	one := fmt.Sprintf(`proxy = "ws://%s"
token = "wrong"
inspect = "off"

[[tunnel]]
target = %q
key = "a.jwk"
token = "s3cret"
`, px.Addr, local.URL)
	two := one + fmt.Sprintf(`
[[tunnel]]
target = %q
key = "b.jwk"
`, local.URL)
	bin := testenv.Build(t, cmdtest.ClientPkg)

	writeFiles(t, dir, map[string]string{"one.toml": one, "two.toml": two})
	c := testenv.StartProcess(t, bin, []string{"--config", filepath.Join(dir, "one.toml")}, cmdtest.Env())
	urls := tunnelURLs(t, waitLines(t, c, 1, 30*time.Second), px.Port, local.URL)
	if status, body := cmdtest.Do(t, px.Addr, "GET", urls[local.URL], "/", ""); status != 200 || body != "L /" {
		t.Errorf("GET: %d %q", status, body)
	}
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := cmdtest.Exit(t, c, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}

	path := filepath.Join(dir, "two.toml")
	c = testenv.StartProcess(t, bin, []string{"--config", path}, cmdtest.Env())
	if code := cmdtest.Exit(t, c, 30*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, c.Stderr())
	}
	lines := cmdtest.StderrLines(c)
	last := lines[len(lines)-1]
	want := fmt.Sprintf("client: tunnel 2 (%s:%d, %s): proxy refused registration: ", path, strings.Count(one, "\n")+2, local.URL)
	if !strings.HasPrefix(last, want) || !strings.Contains(last, "token") {
		t.Errorf("last stderr line %q, want it to start %q and give the reason", last, want)
	}
}

// --check through the command: exit codes, and what it prints where.
func TestConfigCheckCommand(t *testing.T) {
	good := `proxy = "ws://127.0.0.1:1"
[[tunnel]]
target = 3000
key = "a.jwk"
[[tunnel]]
target = "h2c://127.0.0.1:50051"
key = "b.jwk"
name = "grpc"
`
	bad := `proxy = "ftp://h" #! proxy "ftp://h"
colour = 1 #! unknown key "colour"
[[tunnel]] #! tunnel 1: no key
target = 3000
pool = "yes" #! tunnel 1: pool: want true or false
`
	for _, tc := range []struct {
		name  string
		text  string
		args  []string
		code  int
		check bool
	}{
		{"valid", good, []string{"--check"}, 0, true},
		{"mistakes", bad, []string{"--check"}, 1, true},
		{"mistakes without --check", bad, nil, 1, false},
		{"syntax", "[[tunnel]]\ntarget = \n", []string{"--check"}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "c.toml")
			writeFiles(t, dir, map[string]string{"c.toml": tc.text})
			code, stdout, stderr := cmdtest.Run(t, cmdtest.ClientPkg, append([]string{"--config", path}, tc.args...), nil)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr:\n%s", code, tc.code, stdout, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			switch {
			case tc.code == 0:
				if want := path + ": 2 tunnels, no mistakes"; stdout != want || stderr != "" {
					t.Errorf("stdout %q, stderr %q; want %q and nothing", stdout, stderr, want)
				}
			case tc.name == "syntax":
				if want := []string{path + ":2:10: TOML syntax: expected value but found '\\n' instead", "client: " + path + ": 1 mistake"}; !slices.Equal(lines, want) {
					t.Errorf("stderr %q, want %q", lines, want)
				}
			default:
				wants := marked(tc.text)
				if len(lines) != len(wants)+1 || stdout != "" {
					t.Fatalf("stdout %q; stderr has %d lines, want %d mistakes and a summary:\n%s", stdout, len(lines), len(wants), stderr)
				}
				for i, w := range wants {
					if prefix := fmt.Sprintf("%s:%d: ", path, w.line); !strings.HasPrefix(lines[i], prefix) || !strings.Contains(lines[i], w.part) {
						t.Errorf("stderr line %q, want %q and %q", lines[i], prefix, w.part)
					}
				}
				if want := fmt.Sprintf("client: %s: %d mistakes", path, len(wants)); lines[len(lines)-1] != want {
					t.Errorf("last line %q, want %q", lines[len(lines)-1], want)
				}
			}
			for _, k := range []string{"a.jwk", "b.jwk"} {
				if _, err := os.Stat(filepath.Join(dir, k)); err == nil {
					t.Errorf("--check created %s", k)
				}
			}
		})
	}
}

// With --config, a TARGET and the per-tunnel flags are usage errors
// (exit 2, one line), whether given on the command line or in the
// environment: they would otherwise be ignored without a word.
func TestConfigUsageErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	writeFiles(t, filepath.Dir(path), map[string]string{"c.toml": "[[tunnel]]\ntarget = 3000\nkey = \"k.jwk\"\n"})
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"a target", []string{"--config", path, "3000"}, nil, `TARGET "3000" given with --config`},
		{"--key", []string{"--config", path, "--key", "x.jwk"}, nil, "--key (or KEYHOLE_KEY) is a tunnel's setting: with --config, set key in each [[tunnel]]"},
		{"--name", []string{"--config", path, "--name", "docs"}, nil, "--name (or KEYHOLE_NAME)"},
		{"--host-header", []string{"--config", path, "--host-header", "rewrite"}, nil, "set host_header in each"},
		{"--max-concurrent", []string{"--config", path, "--max-concurrent", "5"}, nil, "set max_concurrent in each"},
		{"--webhook", []string{"--config", path, "--webhook", "github=env:X"}, nil, "--webhook"},
		{"--basic-auth", []string{"--config", path, "--basic-auth", "a:b"}, nil, "set basic_auth in each"},
		{"--allow-ip", []string{"--config", path, "--allow-ip", "10.0.0.0/8"}, nil, "set allow_ip in each"},
		{"--pool", []string{"--config", path, "--pool"}, nil, "set pool in each"},
		{"a tunnel's setting in the environment", []string{"--config", path}, []string{"KEYHOLE_KEY=x.jwk"}, "--key (or KEYHOLE_KEY)"},
		{"--check alone", []string{"--check"}, nil, "--check checks a configuration file: give --config FILE too"},
		{"inspector beyond loopback", []string{"--config", path, "--inspect", "0.0.0.0:4040"}, nil, "--inspect-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cmdtest.Run(t, cmdtest.ClientPkg, tc.args, tc.env)
			if code != 2 || stdout != "" {
				t.Errorf("exit %d, stdout %q; want 2 and nothing", code, stdout)
			}
			if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 1 || !strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "--help") {
				t.Errorf("stderr %q, want one line with %q and a pointer to --help", stderr, tc.want)
			}
		})
	}
	t.Run("no such file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "missing.toml")
		code, _, stderr := cmdtest.Run(t, cmdtest.ClientPkg, []string{"--config", missing, "--check"}, nil)
		if code != 1 || !strings.Contains(stderr, "client: config file: open "+missing+": no such file") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("inspector beyond loopback from the file", func(t *testing.T) {
		text := "inspect = \"0.0.0.0:4040\" #! reachable beyond this machine: set inspect_token\n[[tunnel]]\ntarget = 3000\nkey = \"k.jwk\"\n"
		p := filepath.Join(t.TempDir(), "c.toml")
		writeFiles(t, filepath.Dir(p), map[string]string{"c.toml": text})
		code, _, stderr := cmdtest.Run(t, cmdtest.ClientPkg, []string{"--config", p, "--check"}, nil)
		if want := p + ":1: inspect 0.0.0.0:4040 is reachable beyond this machine: set inspect_token"; code != 1 || !strings.HasPrefix(stderr, want) {
			t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, want)
		}
		// The token from the environment makes it valid.
		code, stdout, _ := cmdtest.Run(t, cmdtest.ClientPkg, []string{"--config", p, "--check"}, []string{"KEYHOLE_INSPECT_TOKEN=t"})
		if code != 0 || !strings.HasSuffix(stdout, "1 tunnel, no mistakes") {
			t.Errorf("with a token: exit %d, stdout %q", code, stdout)
		}
	})
}

// --help names every key of the file and states the precedence rule, so
// the text cannot fall behind a key added to the code.
func TestConfigHelpNamesEveryKey(t *testing.T) {
	fs, _ := newFlags()
	var b strings.Builder
	cli.PrintUsage(&b, fs, synopsis, "")
	help := strings.Join(strings.Fields(b.String()), " ") // the wrapping aside
	for _, k := range append(slices.Clone(globalKeys), tunnelKeys...) {
		if !regexp.MustCompile(`[ (]` + k + `[ ,.)]`).MatchString(help) {
			t.Errorf("help does not name the key %s", k)
		}
	}
	for _, s := range []string{
		"the command line beats the environment, which beats the file, which beats the default",
		"a tunnel's own token beats the global one",
		`"URL TARGET"`,
		"client --config FILE [--check] [flags]",
	} {
		if !strings.Contains(help, s) {
			t.Errorf("help does not say %q", s)
		}
	}
	// Every flag that still applies with --config is a global key of the
	// file, or about the run itself.
	for _, f := range globalFlags {
		if fs.Lookup(f) == nil {
			t.Errorf("globalFlags names --%s, which does not exist", f)
		}
		if k := strings.ReplaceAll(f, "-", "_"); !slices.Contains(globalKeys, k) && !slices.Contains([]string{"cpuprofile", "config", "check"}, f) {
			t.Errorf("--%s applies with --config but the file has no key %s", f, k)
		}
	}
}

// A tunnel's basic_auth and deny_ip reach the proxy, which enforces them
// for that tunnel only. (Wrong passwords are the proxy's tests' concern:
// bcrypt is slow under -race.)
func TestConfigVisitorProtection(t *testing.T) {
	open, locked, denied := tagged(t, "open"), tagged(t, "locked"), tagged(t, "denied")
	px := cmdtest.StartProxy(t, 0)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"c.toml": fmt.Sprintf(`proxy = "ws://%s"
inspect = "off"

[[tunnel]]
target = %q
key = "open.jwk"

[[tunnel]]
target = %q
key = "locked.jwk"
basic_auth = ["alice:pa:ss", { user = "bob", password = "hunter2" }]

[[tunnel]]
target = %q
key = "denied.jwk"
deny_ip = ["127.0.0.0/8", "::1"]
`, px.Addr, open.URL, locked.URL, denied.URL)})
	c := testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg), []string{"--config", filepath.Join(dir, "c.toml")}, cmdtest.Env())
	urls := tunnelURLs(t, waitLines(t, c, 3, 30*time.Second), px.Port, open.URL, locked.URL, denied.URL)
	get := func(target, user, password string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+px.Addr+"/p", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = strings.TrimPrefix(urls[target], "http://")
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, target, user, password string
		status                       int
	}{
		{"no protection", open.URL, "", "", 200},
		{"no credentials", locked.URL, "", "", 401},
		{"right password with a colon", locked.URL, "alice", "pa:ss", 200},
		{"a user from a table", locked.URL, "bob", "hunter2", 200},
		{"denied address", denied.URL, "", "", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(tc.target, tc.user, tc.password)
			if status != tc.status {
				t.Errorf("status %d, want %d (%q)", status, tc.status, body)
			}
			if status == 200 && !strings.HasPrefix(body, "open ") && !strings.HasPrefix(body, "locked ") {
				t.Errorf("body %q", body)
			}
		})
	}
}

// Two tunnels of one key that both set pool serve one hostname together:
// both print it, and requests reach both services.
func TestConfigPooledTunnels(t *testing.T) {
	a, b := tagged(t, "A"), tagged(t, "B")
	px := cmdtest.StartProxy(t, 0)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"c.toml": fmt.Sprintf(`proxy = "ws://%s"
inspect = "off"

[[tunnel]]
target = %q
key = "api.jwk"
pool = true

[[tunnel]]
target = %q
key = "api.jwk"
pool = true
`, px.Addr, a.URL, b.URL)})
	c := testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg), []string{"--config", filepath.Join(dir, "c.toml")}, cmdtest.Env())
	urls := tunnelURLs(t, waitLines(t, c, 2, 30*time.Second), px.Port, a.URL, b.URL)
	if urls[a.URL] != urls[b.URL] {
		t.Fatalf("pooled tunnels at %s and %s, want one hostname", urls[a.URL], urls[b.URL])
	}
	// Both members get requests; 40 requests all on one member would
	// happen by chance with probability 2^-39 under any fair spreading.
	seen := map[string]int{}
	for range 40 {
		status, body := cmdtest.Do(t, px.Addr, "GET", urls[a.URL], "/", "")
		if status != 200 {
			t.Fatalf("GET: %d %q", status, body)
		}
		tag, _, _ := strings.Cut(body, " ")
		seen[tag]++
	}
	if seen["A"] == 0 || seen["B"] == 0 || seen["A"]+seen["B"] != 40 {
		t.Errorf("answers by service: %v, want both", seen)
	}
	if out := c.Stderr(); strings.Contains(out, "replaced") {
		t.Errorf("a member was replaced:\n%s", out)
	}
}

// A file of maxConfigSize bytes is read; one byte more is refused before
// it is parsed.
func TestConfigSizeLimit(t *testing.T) {
	head := "[[tunnel]]\ntarget = 3000\nkey = \"k.jwk\"\n"
	for _, tc := range []struct {
		size int
		ok   bool
	}{{maxConfigSize, true}, {maxConfigSize + 1, false}} {
		t.Run(strconv.Itoa(tc.size), func(t *testing.T) {
			pad := tc.size - len(head) - 2
			text := head + "#" + strings.Repeat("x", pad) + "\n"
			if len(text) != tc.size {
				t.Fatalf("built %d bytes", len(text))
			}
			path := filepath.Join(t.TempDir(), "c.toml")
			writeFiles(t, filepath.Dir(path), map[string]string{"c.toml": text})
			cfg, mistakes, err := loadConfig(path, testEnv)
			switch {
			case tc.ok && (err != nil || len(mistakes) > 0 || len(cfg.tunnels) != 1):
				t.Errorf("err %v, mistakes %v", err, mistakes)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "larger than "+strconv.Itoa(maxConfigSize)+" bytes")):
				t.Errorf("err %v, want the size limit", err)
			}
		})
	}
}
