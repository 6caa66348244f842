package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// runProxy runs the proxy binary to completion.
func runProxy(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return cmdtest.Run(t, cmdtest.ProxyPkg, args, env)
}

// runExact runs the proxy binary to completion and returns its output
// byte for byte (Process.Stdout gives lines, which hides a missing or
// extra newline).
func runExact(t *testing.T, env []string, args ...string) (code int, stdout []byte, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Build(t, cmdtest.ProxyPkg), args...)
	cmd.Env = append(os.Environ(), cmdtest.Env(env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run proxy %v: %v", args, err)
	}
	return code, out.Bytes(), errb.String()
}

// keygen runs "proxy token keygen" and returns the new key's kid.
func keygen(t *testing.T, priv, pub string, extra ...string) string {
	t.Helper()
	code, stdout, stderr := runProxy(t, nil, append([]string{"token", "keygen", "--signing-key", priv, "--public", pub}, extra...)...)
	if code != 0 || stdout != "" {
		t.Fatalf("keygen: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	m := regexp.MustCompile(`^kid (\S+): `).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("keygen stderr %q does not start with the kid", stderr)
	}
	return m[1]
}

func readSet(t *testing.T, path string) []jose.JSONWebKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return set.Keys
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestTokenKeygen(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "signing.jwk"), filepath.Join(dir, "keys.json")
	kid := keygen(t, priv, pub)

	t.Run("files and modes", func(t *testing.T) {
		if m := fileMode(t, priv); m != 0o600 {
			t.Errorf("signing key mode %v, want 0600", m)
		}
		if m := fileMode(t, pub); m != 0o644 {
			t.Errorf("public set mode %v, want 0644", m)
		}
		key, err := readSigningKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if key.KeyID != kid || key.Algorithm != "EdDSA" {
			t.Errorf("signing key kid %q alg %q; want %q, EdDSA", key.KeyID, key.Algorithm, kid)
		}
		keys := readSet(t, pub)
		if len(keys) != 1 || keys[0].KeyID != kid || !keys[0].IsPublic() {
			t.Fatalf("public set %+v: want the one public key %q", keys, kid)
		}
		if _, err := proxy.LoadTokenKeys(pub); err != nil {
			t.Errorf("the proxy would refuse the public set: %v", err)
		}
	})
	t.Run("refuses to overwrite", func(t *testing.T) {
		before, _ := os.ReadFile(priv)
		setBefore, _ := os.ReadFile(pub)
		code, _, stderr := runProxy(t, nil, "token", "keygen", "--signing-key", priv, "--public", pub)
		if code != 1 || !strings.Contains(stderr, "refusing to overwrite") {
			t.Errorf("exit %d, stderr %q; want 1 and a refusal", code, stderr)
		}
		after, _ := os.ReadFile(priv)
		setAfter, _ := os.ReadFile(pub)
		if !bytes.Equal(before, after) || !bytes.Equal(setBefore, setAfter) {
			t.Error("a refused keygen changed the files")
		}
	})
	t.Run("twice appends", func(t *testing.T) {
		// An operator's mode on the set file is kept.
		if err := os.Chmod(pub, 0o640); err != nil {
			t.Fatal(err)
		}
		kid2 := keygen(t, filepath.Join(dir, "signing2.jwk"), pub, "--alg", "ES256")
		keys := readSet(t, pub)
		if len(keys) != 2 || keys[0].KeyID != kid || keys[1].KeyID != kid2 || kid == kid2 {
			t.Fatalf("set after the second keygen: %+v; want %q then %q", keys, kid, kid2)
		}
		if keys[1].Algorithm != "ES256" {
			t.Errorf("second key alg %q, want ES256", keys[1].Algorithm)
		}
		if m := fileMode(t, pub); m != 0o640 {
			t.Errorf("set mode %v after the rewrite, want the operator's 0640", m)
		}
		if tk, err := proxy.LoadTokenKeys(pub); err != nil || len(tk.KeyIDs()) != 2 {
			t.Errorf("the proxy reads %v keys, err %v; want 2", tk.KeyIDs(), err)
		}
	})
	t.Run("broken set file", func(t *testing.T) {
		bad := filepath.Join(dir, "broken.json")
		if err := os.WriteFile(bad, []byte(`{"keys": [`), 0o644); err != nil {
			t.Fatal(err)
		}
		newPriv := filepath.Join(dir, "signing3.jwk")
		code, _, stderr := runProxy(t, nil, "token", "keygen", "--signing-key", newPriv, "--public", bad)
		if code != 1 || !strings.Contains(stderr, "broken.json") {
			t.Errorf("exit %d, stderr %q; want 1 naming the file", code, stderr)
		}
		if _, err := os.Stat(newPriv); err == nil {
			t.Error("a signing key was written although its public key could not be added")
		}
	})
}

// jwtLine is one compact JWS and a newline, nothing else.
var jwtLine = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$`)

func TestTokenNew(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "signing.jwk"), filepath.Join(dir, "keys.json")
	kid := keygen(t, priv, pub)
	keys, err := proxy.LoadTokenKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	clientPub, _, _ := ed25519.GenerateKey(rand.Reader)
	label, _ := messages.Hostname(clientPub)
	const domain = "tunnel.example.com"

	for _, tc := range []struct {
		name  string
		args  []string
		env   []string
		label string // the verifying client's key
		check func(t *testing.T, g *proxy.Grant, start time.Time)
	}{
		{
			name: "every flag",
			args: []string{"--name", "myapp", "--name", "docs", "--key", label + "." + domain, "--expires", "2h",
				"--not-before", "-1m", "--rate", "2.5", "--burst", "5", "--max-body", "2MiB", "--streams", "4", "--id", "ops-1"},
			label: label,
			check: func(t *testing.T, g *proxy.Grant, start time.Time) {
				want := proxy.Grant{ID: "ops-1", Key: label, Names: []string{"myapp", "docs"}, Rate: 2.5, Burst: 5, MaxBody: 2 << 20, Streams: 4}
				got := *g
				got.IssuedAt, got.NotBefore, got.Expires = time.Time{}, time.Time{}, time.Time{}
				if !equalGrant(got, want) {
					t.Errorf("grant %+v, want %+v", got, want)
				}
				if d := g.Expires.Sub(start); d < 2*time.Hour-2*time.Second || d > 2*time.Hour+time.Minute {
					t.Errorf("expires %v after the start, want 2h", d)
				}
				if d := start.Sub(g.NotBefore); d < time.Minute-2*time.Second || d > 2*time.Minute {
					t.Errorf("not before %v before the start, want 1m", d)
				}
			},
		},
		{
			name: "KB is 1000 bytes",
			args: []string{"--max-body", "500KB"},
			check: func(t *testing.T, g *proxy.Grant, _ time.Time) {
				if g.MaxBody != 500*1000 {
					t.Errorf("max body %d, want 500000", g.MaxBody)
				}
			},
		},
		{
			name: "default expiry 720h, and an ID that says so",
			check: func(t *testing.T, g *proxy.Grant, start time.Time) {
				if d := g.Expires.Sub(start); d < 720*time.Hour-2*time.Second || d > 720*time.Hour+time.Minute {
					t.Errorf("expires %v after the start, want 720h", d)
				}
				if lapse, ok := proxy.TokenIDExpiry(g.ID); !ok || !lapse.Equal(g.Expires.Add(proxy.TokenLeeway)) {
					t.Errorf("ID %q: expiry %v %v, want the token's", g.ID, lapse, ok)
				}
			},
		},
		{
			name: "--expires 0 never expires",
			args: []string{"--expires", "0"},
			check: func(t *testing.T, g *proxy.Grant, _ time.Time) {
				if !g.Expires.IsZero() {
					t.Errorf("expires %v, want never", g.Expires)
				}
			},
		},
		{
			// The proxy's own settings in the environment must not slip
			// into a token.
			name: "proxy environment ignored",
			env:  []string{"KEYHOLE_MAX_BODY=1MB", "KEYHOLE_RATE=9", "KEYHOLE_BURST=3", "KEYHOLE_NAME=envname", "KEYHOLE_KEY=" + label},
			check: func(t *testing.T, g *proxy.Grant, _ time.Time) {
				if g.MaxBody != 0 || g.Rate != 0 || g.Burst != 0 || g.Names != nil || g.Key != "" {
					t.Errorf("grant %+v took values from the environment", g)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			args := append([]string{"token", "new", "--signing-key", priv, "--audience", domain}, tc.args...)
			code, out, stderr := runExact(t, tc.env, args...)
			stdout := string(out)
			if code != 0 {
				t.Fatalf("exit %d; stderr: %s", code, stderr)
			}
			if !jwtLine.MatchString(stdout) {
				t.Fatalf("stdout %q: want exactly one JWT and a newline", stdout)
			}
			l := tc.label
			if l == "" {
				l = label
			}
			g, err := keys.Verify(strings.TrimSpace(stdout), domain, l, time.Now())
			if err != nil {
				t.Fatalf("Verify with the public set: %v", err)
			}
			if !strings.Contains(stderr, g.ID) || !strings.Contains(stderr, kid) {
				t.Errorf("stderr %q: want the token ID %q and the kid", stderr, g.ID)
			}
			tc.check(t, g, start)
		})
	}
	t.Run("bound token refused for another key", func(t *testing.T) {
		_, stdout, _ := runProxy(t, nil, "token", "new", "--signing-key", priv, "--audience", domain, "--key", label)
		other, _, _ := ed25519.GenerateKey(rand.Reader)
		otherLabel, _ := messages.Hostname(other)
		if _, err := keys.Verify(strings.TrimSpace(stdout), domain, otherLabel, time.Now()); err == nil {
			t.Error("a token bound to one key verified for another")
		}
	})
}

func equalGrant(a, b proxy.Grant) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestTokenUsageErrors(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "signing.jwk"), filepath.Join(dir, "keys.json")
	keygen(t, priv, pub)
	tokenNew := func(extra ...string) []string {
		return append([]string{"token", "new", "--signing-key", priv, "--audience", "tunnel.example.com"}, extra...)
	}
	revoke := func(extra ...string) []string {
		return append([]string{"revoke", "--admin", "127.0.0.1:1", "--admin-token", "0123456789abcdef"}, extra...)
	}
	label := strings.Repeat("a", 52)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"token alone", []string{"token"}, "keygen or new"},
		{"token unknown", []string{"token", "mint"}, `"mint"`},
		{"keygen without files", []string{"token", "keygen"}, "--signing-key and --public"},
		{"keygen bad alg", []string{"token", "keygen", "--signing-key", filepath.Join(dir, "x"), "--public", pub, "--alg", "RS256"}, `"RS256"`},
		{"keygen same file twice", []string{"token", "keygen", "--signing-key", pub, "--public", pub}, "different"},
		{"keygen unknown flag", []string{"token", "keygen", "--bogus"}, "bogus"},
		{"new without audience", []string{"token", "new", "--signing-key", priv}, "--audience"},
		{"new extra argument", tokenNew("extra"), `unexpected argument "extra"`},
		{"new bad name", tokenNew("--name", "bad_name"), "'_'"},
		{"new reserved name", tokenNew("--name", "www"), "reserved"},
		{"new the apex label", tokenNew("--name", "tunnel"), "reserved"},
		{"new key-shaped name", tokenNew("--name", label), "shape"},
		{"new negative expiry", tokenNew("--expires", "-1h"), "--expires"},
		{"new bad size", tokenNew("--max-body", "12XB"), `"12XB"`},
		{"new negative rate", tokenNew("--rate", "-1"), "negative"},
		{"new bad not-before", tokenNew("--not-before", "soon"), `"soon"`},
		{"new bad key", tokenNew("--key", "myapp"), "label"},
		{"new bad ID", tokenNew("--id", "a b"), "token ID"},
		{"revoke without admin", []string{"revoke", "--admin-token", "0123456789abcdef", "--key", label}, "--admin"},
		{"revoke without token", []string{"revoke", "--admin", "127.0.0.1:1", "--key", label}, "--admin-token"},
		{"revoke nothing", revoke(), "exactly one"},
		{"revoke two things", revoke("--key", label, "--name", "myapp"), "exactly one"},
		{"revoke until and for", revoke("--key", label, "--until", "2099-01-01T00:00:00Z", "--for", "1h"), "not both"},
		{"revoke bad until", revoke("--key", label, "--until", "tomorrow"), "RFC 3339"},
		{"revoke until in the past", revoke("--key", label, "--until", "2001-01-01T00:00:00Z"), "not in the future"},
		{"revoke negative for", revoke("--key", label, "--for", "-1h"), "positive"},
		{"revoke bad key", revoke("--key", "short"), "label"},
		{"revoke bad name", revoke("--name", "-x"), "hyphen"},
		{"revoke bad token ID", revoke("--token-id", "a b"), "token ID"},
		{"revoke bad admin URL", revoke("--key", label, "--admin", "ftp://x"), "--admin"},
		{"proxy short admin token", []string{"--admin-token", "short"}, "16 characters"},
		{"proxy missing token keys", []string{"--token-keys", filepath.Join(dir, "none.json")}, "none.json"},
		{"proxy private key as token keys", []string{"--token-keys", priv}, "single key"},
		{"proxy bad reserved name", []string{"--reserved-names", "ok,Bad_Name"}, "Bad_Name"},
		{"proxy negative reload interval", []string{"--reload-interval", "-1s"}, "--reload-interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runProxy(t, nil, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "proxy: ") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("stderr %q: want one line starting \"proxy: \" and mentioning %q", stderr, tc.want)
			}
		})
	}
}

func TestTokenHelp(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		flags []string
	}{
		{[]string{"token", "--help"}, nil},
		{[]string{"token", "keygen", "--help"}, []string{"signing-key", "public", "alg"}},
		{[]string{"token", "new", "-h"}, []string{"signing-key", "audience", "name", "key", "expires", "not-before", "rate", "burst", "max-body", "streams", "id"}},
		{[]string{"revoke", "--help"}, []string{"admin", "admin-token", "key", "name", "token-id", "until", "for", "timeout"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runProxy(t, nil, tc.args...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, stderr)
			}
			if !strings.HasPrefix(stdout, "Usage: proxy "+tc.args[0]) {
				t.Errorf("help starts %q", stdout[:min(len(stdout), 40)])
			}
			for _, f := range tc.flags {
				if !strings.Contains(stdout, "\n  --"+f+" ") && !strings.Contains(stdout, "\n  --"+f+"\n") {
					t.Errorf("help does not explain --%s:\n%s", f, stdout)
				}
			}
		})
	}
	t.Run("proxy --help names the subcommands", func(t *testing.T) {
		_, stdout, _ := runProxy(t, nil, "--help")
		for _, s := range []string{"proxy token keygen|new", "proxy revoke", "--token-keys", "--admin-token", "--reserved-names"} {
			if !strings.Contains(stdout, s) {
				t.Errorf("proxy --help does not mention %q", s)
			}
		}
	})
}

// postRevoke sends body to the admin listener's /revoke with token.
func postRevoke(t *testing.T, admin, token, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+admin+"/revoke", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRevokeCommand(t *testing.T) {
	const adminToken = "s3cret-admin-token-0123"
	admin := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	px := cmdtest.StartProxy(t, 0, "--admin", admin, "--admin-token", adminToken)
	label := strings.Repeat("c", 52)

	t.Run("accepted", func(t *testing.T) {
		for _, how := range []struct {
			name string
			args []string
			env  []string
		}{
			{"flag", []string{"--admin-token", adminToken}, nil},
			{"environment", nil, []string{"KEYHOLE_ADMIN_TOKEN=" + adminToken}},
		} {
			t.Run(how.name, func(t *testing.T) {
				args := append([]string{"revoke", "--admin", "http://" + admin, "--key", label + ".localhost", "--for", "1h"}, how.args...)
				code, stdout, stderr := runProxy(t, how.env, args...)
				// The lead implements Proxy.Revoke; until then it fails, and
				// the command must report the proxy's reason with exit 1.
				// Either way the request passed authentication and
				// validation, which is what this test is about.
				switch code {
				case 0:
					if !regexp.MustCompile(`^revoked key ` + label + ` until \d{4}-\d\d-\d\dT\S+Z$`).MatchString(stdout) {
						t.Errorf("stdout %q: want one confirmation line with the label", stdout)
					}
				case 1:
					if !strings.Contains(stderr, "503") || !strings.Contains(stderr, "revoke failed") {
						t.Errorf("stderr %q: want the proxy's reason", stderr)
					}
				default:
					t.Errorf("exit %d; stderr %s", code, stderr)
				}
				if strings.Contains(stdout+stderr, adminToken) {
					t.Error("the admin token was printed")
				}
			})
		}
	})
	t.Run("wrong or missing token", func(t *testing.T) {
		code, stdout, stderr := runProxy(t, nil, "revoke", "--admin", admin, "--admin-token", "not-the-admin-token", "--key", label)
		if code != 1 || !strings.Contains(stderr, "401") || stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 1 and 401", code, stdout, stderr)
		}
		if strings.Contains(stderr, "not-the-admin-token") {
			t.Error("the token was printed")
		}
		for _, tok := range []string{"", "not-the-admin-token", adminToken + "x", adminToken[:len(adminToken)-1]} {
			if code, _ := postRevoke(t, admin, tok, `{"kind":"key","value":"`+label+`"}`); code != http.StatusUnauthorized {
				t.Errorf("token %q: %d, want 401", tok, code)
			}
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, body := range []string{
			`{"kind":"user","value":"x"}`,
			`{"kind":"key","value":"short"}`,
			`{"kind":"key","value":""}`,
			`{"kind":"name","value":"Bad_Name"}`,
			`{"kind":"token","value":"a b"}`,
			`{"kind":"key","value":"` + label + `","until":"tomorrow"}`,
			`{"kind":"key","value":"` + label + `","until":"2001-01-01T00:00:00Z"}`,
			`{"kind":"key","value":"` + label + `","extra":1}`,
			`not json`,
		} {
			if code, reply := postRevoke(t, admin, adminToken, body); code != http.StatusBadRequest {
				t.Errorf("%s: %d %q, want 400", body, code, reply)
			}
		}
		if code, _ := postRevoke(t, admin, adminToken, `{"kind":"key","value":"`+strings.Repeat("x", 5000)+`"}`); code != http.StatusRequestEntityTooLarge {
			t.Errorf("a 5 KB body: %d, want 413", code)
		}
	})
	if strings.Contains(px.Stderr(), adminToken) {
		t.Error("the proxy logged the admin token")
	}

	t.Run("no admin token on the proxy", func(t *testing.T) {
		admin2 := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
		cmdtest.StartProxy(t, 0, "--admin", admin2)
		if code, _ := postRevoke(t, admin2, adminToken, `{"kind":"key","value":"`+label+`"}`); code != http.StatusNotFound {
			t.Errorf("POST /revoke: %d, want 404", code)
		}
		code, _, stderr := runProxy(t, nil, "revoke", "--admin", admin2, "--admin-token", adminToken, "--key", label)
		if code != 1 || !strings.Contains(stderr, "404") || !strings.Contains(stderr, "--admin-token") {
			t.Errorf("exit %d, stderr %q; want 1, 404 and a hint about --admin-token", code, stderr)
		}
	})
}

// The key set is reloaded on SIGHUP, and when the file changes; a bad file
// keeps the keys in force and the proxy serving.
func TestTokenKeysReload(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval string
		signal   bool
	}{
		// Polling off: only the signal can have reloaded the file.
		{"SIGHUP", "0", true},
		{"file change", "50ms", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pub := filepath.Join(dir, "keys.json")
			kidA := keygen(t, filepath.Join(dir, "a.jwk"), pub)
			px := cmdtest.StartProxy(t, 0, "--token-keys", pub, "--reload-interval", tc.interval)
			cmdtest.WaitStderr(t, px.Process, 10*time.Second, "token keys loaded", kidA)

			// Rotation, step one: a second key in the same file.
			kidB := keygen(t, filepath.Join(dir, "b.jwk"), pub)
			if tc.signal {
				if err := px.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
			}
			cmdtest.WaitStderr(t, px.Process, 10*time.Second, "token keys reloaded")
			if got := len(readSet(t, pub)); got != 2 || kidA == kidB {
				t.Fatalf("set has %d keys", got)
			}

			// A broken file: a warning, and the proxy goes on.
			if err := os.WriteFile(pub, []byte(`{"keys": [`), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.signal {
				if err := px.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				cmdtest.WaitStderr(t, px.Process, 10*time.Second, "token keys not reloaded", "level=WARN", pub)
			} else {
				cmdtest.WaitStderr(t, px.Process, 10*time.Second, "token keys changed but cannot be used", "level=WARN", pub)
			}
			if got := post(t, px.Addr, 1); got != http.StatusBadGateway {
				t.Errorf("after a bad key file the proxy answers %d, want 502 for an offline tunnel", got)
			}
		})
	}
}
