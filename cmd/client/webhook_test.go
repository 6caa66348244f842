package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyhole-tunnel/keyhole/cmd/internal/cmdtest"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
)

// A --webhook the client cannot use stops it at start, exit 2 with one
// line that names the problem and never the secret.
func TestWebhookFlagErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no secret source", []string{"--webhook", "github", "3000"}, nil, "no '='"},
		{"unknown provider", []string{"--webhook", "gitlab=env:X", "3000"}, []string{"X=s"}, `unknown provider "gitlab": want github, stripe or slack`},
		{"relative path", []string{"--webhook", "stripe:hooks=env:X", "3000"}, []string{"X=s"}, "the path must start with /"},
		{"missing environment variable", []string{"--webhook", "github=env:KEYHOLE_TEST_UNSET_SECRET", "3000"}, nil, "environment variable KEYHOLE_TEST_UNSET_SECRET is not set or empty"},
		{"unreadable file", []string{"--webhook", "slack:/slack=file:" + missing, "3000"}, nil, "cannot read secret file " + missing},
		{"a directory for a file", []string{"--webhook", "slack=file:" + dir, "3000"}, nil, "is a directory"},
		{"empty file", []string{"--webhook", "stripe=file:" + empty, "3000"}, nil, "secret file " + empty + " is empty"},
		{"the secret itself", []string{"--webhook", "github=hunter2-in-the-process-list", "3000"}, nil, "env:NAME or file:FILE"},
		{"the secret alone", []string{"--webhook", "hunter2-in-the-process-list", "3000"}, nil, "no '='"},
		{"second of two bad", []string{"--webhook", "github=env:X", "--webhook", "slack=env:NOPE", "3000"}, []string{"X=s"}, "environment variable NOPE"},
		{"bad one in the environment", []string{"3000"}, []string{"KEYHOLE_WEBHOOK=stripe=env:NOPE"}, "environment variable NOPE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cmdtest.Run(t, cmdtest.ClientPkg, tc.args, tc.env)
			if code != 2 || stdout != "" {
				t.Errorf("exit code %d, stdout %q; want 2 and nothing", code, stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want one reason:\n%s", len(lines), stderr)
			}
			if !strings.HasPrefix(lines[0], "client: invalid --webhook: ") || !strings.Contains(lines[0], tc.want) || !strings.Contains(lines[0], "--help") {
				t.Errorf("stderr %q, want \"client: invalid --webhook: \", %q and a pointer to --help", lines[0], tc.want)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Errorf("the secret is on stderr: %q", stderr)
			}
		})
	}
}

// The help explains the syntax, with the examples people copy.
func TestWebhookHelp(t *testing.T) {
	code, out, _ := cmdtest.Run(t, cmdtest.ClientPkg, []string{"--help"}, nil)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--webhook SPEC", "PROVIDER[:PATH]=SECRET", "github, stripe or slack", "env:NAME", "file:FILE", "--webhook stripe:/hooks/stripe=file:/run/secrets/stripe", "[KEYHOLE_WEBHOOK]"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// KEYHOLE_WEBHOOK adds to the command line's rules, as every list flag's
// variable does; the client says at start which rules it checks.
func TestWebhookFlagAndEnvironment(t *testing.T) {
	env := map[string]string{
		"KEYHOLE_WEBHOOK": "github=env:G, slack:/slack=env:L",
		"G":               "g-secret-value",
		"L":               "l-secret-value",
		"S":               "s-secret-value",
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run returns at once: only the start is of interest
	var stdout, stderr bytes.Buffer
	args := []string{"--inspect", "off", "--key", filepath.Join(t.TempDir(), "k.jwk"), "--webhook", "stripe:/pay=env:S", "3000"}
	if err := run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var rules []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "checking webhook signatures") {
			rules = append(rules, l[strings.Index(l, "rule."):])
		}
	}
	want := []string{"rule.provider=github", "rule.provider=slack rule.path=/slack", "rule.provider=stripe rule.path=/pay"}
	if strings.Join(rules, "|") != strings.Join(want, "|") {
		t.Errorf("rules %q, want %q", rules, want)
	}
	if strings.Contains(stderr.String(), "secret-value") {
		t.Errorf("a secret is in the log:\n%s", stderr.String())
	}
}

// Through a real proxy, the built client checks GitHub's signature on
// /hooks before the local service sees the request, and logs refusals.
func TestWebhookClientCommand(t *testing.T) {
	const secret = "gh-secret-for-the-command-test"
	var mu sync.Mutex
	var seen []string
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.URL.Path+" "+string(b))
		mu.Unlock()
		io.WriteString(w, "ok "+r.Header.Get("X-Hub-Signature-256"))
	}))
	t.Cleanup(local.Close)
	px := cmdtest.StartProxy(t, 0)
	c := testenv.StartProcess(t, testenv.Build(t, cmdtest.ClientPkg),
		[]string{"--proxy", "ws://" + px.Addr, "--key", filepath.Join(t.TempDir(), "client.jwk"), "--inspect", "off",
			"--webhook", "github:/hooks=env:GH_HOOK_SECRET", local.URL},
		cmdtest.Env("GH_HOOK_SECRET="+secret))
	public := cmdtest.WaitURL(t, c, px.Port, 1, 20*time.Second)
	cmdtest.WaitStderr(t, c, 5*time.Second, "checking webhook signatures", "rule.provider=github", "rule.path=/hooks")

	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(`{"zen":"hi"}`))
	sig := "sha256=" + hex.EncodeToString(m.Sum(nil))
	for _, tc := range []struct {
		name, path, sig, body string
		status                int
		answer                string
	}{
		{"signed", "/hooks/push", sig, `{"zen":"hi"}`, 200, "ok " + sig},
		{"replayed", "/hooks/push", sig, `{"zen":"hi"}`, 401, "webhook: replayed signature\n"},
		{"unsigned", "/hooks/push", "", `{"zen":"hi"}`, 401, "webhook: missing signature\n"},
		{"tampered", "/hooks/push", sig, `{"zen":"ho"}`, 401, "webhook: signature mismatch\n"},
		{"elsewhere", "/page", "", "free", 200, "ok "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := doSigned(t, px.Addr, public, tc.path, tc.sig, tc.body)
			if status != tc.status || body != tc.answer {
				t.Errorf("got %d %q, want %d %q", status, body, tc.status, tc.answer)
			}
		})
	}
	mu.Lock()
	got := strings.Join(seen, "|")
	mu.Unlock()
	if want := `/hooks/push {"zen":"hi"}|/page free`; got != want {
		t.Errorf("the local service saw %q, want %q", got, want)
	}
	line := cmdtest.WaitStderr(t, c, 5*time.Second, "level=WARN", `msg="webhook refused"`, "req=", "provider=github", `reason="missing signature"`, "path=/hooks/push")
	t.Logf("refusal line: %s", line)
	if strings.Contains(c.Stderr(), secret) {
		t.Errorf("the secret is in the client's log:\n%s", c.Stderr())
	}
}

// doSigned POSTs body to the tunnel at publicURL+path through the proxy,
// with an X-Hub-Signature-256 if sig is set.
func doSigned(t *testing.T, proxyAddr, publicURL, path, sig, body string) (int, string) {
	t.Helper()
	u, err := url.Parse(publicURL)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", "http://"+proxyAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = u.Host
	req.Close = true
	if sig != "" {
		req.Header.Set("X-Hub-Signature-256", sig)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
