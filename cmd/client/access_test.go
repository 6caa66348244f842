package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// A key added to the proxy's --deny-file while its client is connected is
// cut off on SIGHUP: the client is refused when it reconnects, exits 1 and
// says why.
func TestDenyFileCutsOffConnectedClient(t *testing.T) {
	local := origin(t)
	deny := filepath.Join(t.TempDir(), "deny.txt")
	if err := os.WriteFile(deny, []byte("# no one yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	px := cmdtest.StartProxy(t, 0, "--deny-file", deny)
	c := cmdtest.StartClient(t, px.Addr, filepath.Join(t.TempDir(), "client.jwk"), local.URL)
	url := cmdtest.WaitURL(t, c, px.Port, 1, 20*time.Second)
	if status, _ := cmdtest.Do(t, px.Addr, "GET", url, "/", ""); status != 200 {
		t.Fatalf("before the deny: %d", status)
	}
	host := strings.TrimPrefix(url, "http://")
	if err := os.WriteFile(deny, []byte(host+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := px.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if code := cmdtest.Exit(t, c, 20*time.Second); code != 1 {
		t.Fatalf("client exit code %d, want 1", code)
	}
	lines := cmdtest.StderrLines(c)
	if last := lines[len(lines)-1]; !strings.Contains(last, "not allowed") {
		t.Errorf("last stderr line %q should say the key is not allowed", last)
	}
	if status, _ := cmdtest.Do(t, px.Addr, "GET", url, "/", ""); status != 502 {
		t.Errorf("denied tunnel answered %d, want 502", status)
	}
}

// Bad visitor protection flags stop the client at start: exit 2, one line
// that names the flag, and never the password.
func TestVisitorFlagErrors(t *testing.T) {
	many := func(flag, format string, n int) []string {
		var a []string
		for i := range n {
			a = append(a, flag, fmt.Sprintf(format, i))
		}
		return a
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no colon", []string{"--basic-auth", "hunter2secret"}, nil, "invalid --basic-auth: want USER:PASSWORD"},
		{"empty user", []string{"--basic-auth", ":hunter2secret"}, nil, "invalid --basic-auth: empty user name"},
		{"empty password", []string{"--basic-auth", "alice:"}, nil, `invalid --basic-auth: user "alice": empty password`},
		{"password over 72 bytes", []string{"--basic-auth", "alice:hunter2secret" + strings.Repeat("x", 60)}, nil, "password longer than 72 bytes"},
		{"user with a quote", []string{"--basic-auth", `a"b:hunter2secret`}, nil, "invalid --basic-auth: user name"},
		{"user twice", []string{"--basic-auth", "alice:one", "--basic-auth", "alice:hunter2secret"}, nil, `user "alice" given twice`},
		{"17 users", many("--basic-auth", "u%d:hunter2secret", 17), nil, "invalid --basic-auth: 17 users, more than 16"},
		{"bad one in the environment", nil, []string{"KEYHOLE_BASIC_AUTH=alice:ok\nhunter2secret"}, "invalid --basic-auth: want USER:PASSWORD"},
		{"prefix too long", []string{"--allow-ip", "10.0.0.0/33"}, nil, `invalid --allow-ip "10.0.0.0/33"`},
		{"not an address", []string{"--deny-ip", "example.com"}, nil, `invalid --deny-ip "example.com": want an IP address or a CIDR prefix`},
		{"address with a zone", []string{"--allow-ip", "fe80::1%eth0"}, nil, `invalid --allow-ip "fe80::1%eth0"`},
		{"bad one of several", []string{"--deny-ip", "192.0.2.1,192.0.2.300"}, nil, `invalid --deny-ip "192.0.2.300"`},
		{"65 allow prefixes", many("--allow-ip", "10.%d.0.0/16", 65), nil, "invalid --allow-ip: 65 prefixes, more than 64"},
		{"bad one in the environment, IP", nil, []string{"KEYHOLE_DENY_IP=192.0.2.0/24,nope"}, `invalid --deny-ip "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cmdtest.Run(t, cmdtest.ClientPkg, append(tc.args, "3000"), tc.env)
			if code != 2 || stdout != "" {
				t.Errorf("exit code %d, stdout %q; want 2 and nothing", code, stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want one reason:\n%s", len(lines), stderr)
			}
			if !strings.HasPrefix(lines[0], "client: ") || !strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "--help") {
				t.Errorf("stderr %q, want %q and a pointer to --help", lines[0], tc.want)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Errorf("the password is on stderr: %q", stderr)
			}
		})
	}
}

func TestVisitorFlagsHelp(t *testing.T) {
	code, out, _ := cmdtest.Run(t, cmdtest.ClientPkg, []string{"--help"}, nil)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"--basic-auth USER:PASSWORD", "may hold ':' and ','", "bcrypt hash, never the password", "[KEYHOLE_BASIC_AUTH]",
		"--allow-ip CIDR", "203.0.113.0/24", "others get 403", "[KEYHOLE_ALLOW_IP]",
		"--deny-ip CIDR", "even when\n    \t--allow-ip covers it", "[KEYHOLE_DENY_IP]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// visitAs sends a GET to the tunnel at publicURL through the proxy at
// proxyAddr, with an Authorization header unless user is "".
func visitAs(t *testing.T, proxyAddr, publicURL, user, password string) (int, http.Header) {
	t.Helper()
	u, err := url.Parse(publicURL)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("GET", "http://"+proxyAddr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = u.Host
	req.Close = true
	if user != "" {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header
}

// The flags reach the proxy: users from the flag and the environment
// (a password with ':' and ','), and the IP lists.
func TestVisitorFlagsEnforced(t *testing.T) {
	local := origin(t)
	px := cmdtest.StartProxy(t, 0)
	bin := testenv.Build(t, cmdtest.ClientPkg)
	start := func(env []string, args ...string) string {
		a := append([]string{"--proxy", "ws://" + px.Addr, "--key", filepath.Join(t.TempDir(), "client.jwk"), "--inspect", "off"}, args...)
		c := testenv.StartProcess(t, bin, append(a, local.URL), cmdtest.Env(env...))
		return cmdtest.WaitURL(t, c, px.Port, 1, 30*time.Second)
	}
	t.Run("basic auth", func(t *testing.T) {
		u := start([]string{"KEYHOLE_BASIC_AUTH=bob:b,u:i,l\td"}, "--basic-auth", "alice:pa:ss,word", "--allow-ip", "127.0.0.1", "--deny-ip", "10.0.0.0/8")
		status, h := visitAs(t, px.Addr, u, "", "")
		if status != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), `Basic realm="`) {
			t.Errorf("no credentials: %d %q, want 401 and a Basic challenge", status, h.Get("WWW-Authenticate"))
		}
		if status, _ := visitAs(t, px.Addr, u, "alice", "pa:ss,word"); status != 200 {
			t.Errorf("alice, from the flag: %d, want 200", status)
		}
		if status, _ := visitAs(t, px.Addr, u, "bob", "b,u:i,l\td"); status != 200 {
			t.Errorf("bob, from the environment: %d, want 200", status)
		}
	})
	t.Run("deny", func(t *testing.T) {
		u := start(nil, "--deny-ip", "127.0.0.1")
		if status, _ := visitAs(t, px.Addr, u, "", ""); status != 403 {
			t.Errorf("a denied visitor: %d, want 403", status)
		}
	})
	t.Run("allow elsewhere", func(t *testing.T) {
		u := start(nil, "--allow-ip", "192.0.2.0/24,2001:db8::/32")
		if status, _ := visitAs(t, px.Addr, u, "", ""); status != 403 {
			t.Errorf("a visitor outside the allow list: %d, want 403", status)
		}
	})
}
