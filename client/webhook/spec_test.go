package webhook_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyhole-tunnel/keyhole/client/webhook"
)

func TestParseRule(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GH": "from-env", "BLANK": "  "}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		spec string
		want webhook.Rule
	}{
		{"github=env:GH", webhook.Rule{Provider: webhook.GitHub, Secret: []byte("from-env")}},
		{"GitHub=env:GH", webhook.Rule{Provider: webhook.GitHub, Secret: []byte("from-env")}},
		{"stripe:/hooks/stripe=file:" + file, webhook.Rule{Provider: webhook.Stripe, Path: "/hooks/stripe", Secret: []byte("from-file")}},
		{"slack:/=env:GH", webhook.Rule{Provider: webhook.Slack, Path: "/", Secret: []byte("from-env")}},
	} {
		got, err := webhook.ParseRule(tc.spec, getenv)
		if err != nil || got.Provider != tc.want.Provider || got.Path != tc.want.Path || string(got.Secret) != string(tc.want.Secret) {
			t.Errorf("ParseRule(%q) = %v %q, %v; want %v %q", tc.spec, got, got.Secret, err, tc.want, tc.want.Secret)
		}
	}
	for _, tc := range []struct{ spec, want string }{
		{"github", "no '='"},
		{"whsec_abcdef0123", "no '='"},
		{"gitlab=env:GH", `unknown provider "gitlab"`},
		{"whsec_0123456789abcdef:/x=env:GH", "unknown provider: want github, stripe or slack"},
		{"github:hooks=env:GH", "the path must start with /"},
		{"github:/h?x=env:GH", "the path must start with /"},
		{"github=env:", "needs a variable name"},
		{"github=env:NOPE", "environment variable NOPE is not set or empty"},
		{"github=env:BLANK", "environment variable BLANK is not set or empty"},
		{"github=file:", "needs a file name"},
		{"github=file:" + filepath.Join(dir, "missing"), "cannot read secret file " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{"github=file:" + dir, "cannot read secret file " + dir + ": is a directory"},
		{"github=file:" + empty, "secret file " + empty + " is empty"},
		{"github=hunter2", "must be given as env:NAME or file:FILE"},
		{"github=literal:hunter2", "must be given as env:NAME or file:FILE"},
	} {
		_, err := webhook.ParseRule(tc.spec, getenv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRule(%q) = %v, want an error with %q", tc.spec, err, tc.want)
			continue
		}
		for _, s := range []string{"hunter2", "whsec_"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("ParseRule(%q) error %q shows what may be a secret", tc.spec, err)
			}
		}
	}
}
