package webhook

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// SpecSyntax describes the syntax ParseRule reads, for help texts.
const SpecSyntax = "PROVIDER[:PATH]=SECRET. PROVIDER is github, stripe or slack;\n" +
	"PATH limits the check to requests at or below it (default: all);\n" +
	"SECRET is env:NAME (the environment variable NAME holds it) or\n" +
	"file:FILE (the file holds it; surrounding white space is ignored),\n" +
	"never the secret itself, which would show in the process list"

// ParseRule reads a rule in the syntax of [SpecSyntax], such as
// "github=env:GITHUB_WEBHOOK_SECRET" or
// "stripe:/hooks/stripe=file:/run/secrets/stripe", reading the secret from
// the environment through getenv, or from the file. The secret is read
// once, now. Errors name the provider and path, never what follows the
// '=': a secret pasted there by mistake is not echoed.
func ParseRule(spec string, getenv func(string) string) (Rule, error) {
	scope, source, ok := strings.Cut(spec, "=")
	if !ok {
		// Without '=', the whole of it could be a secret.
		return Rule{}, errors.New("webhook spec has no '=': want PROVIDER[:PATH]=env:NAME or PROVIDER[:PATH]=file:FILE")
	}
	provider, path, _ := strings.Cut(scope, ":")
	r := Rule{Provider: Provider(strings.ToLower(provider)), Path: path}
	if !slices.Contains(Providers, r.Provider) {
		if !plainWord(provider) {
			return Rule{}, fmt.Errorf("webhook spec: unknown provider: want %s", providerList())
		}
		return Rule{}, fmt.Errorf("webhook spec: unknown provider %q: want %s", provider, providerList())
	}
	if path != "" && (!strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#")) {
		return Rule{}, fmt.Errorf("webhook %s: the path must start with / and hold no query", r.Provider)
	}
	name := fmt.Sprintf("%q", r.String())
	kind, ref, _ := strings.Cut(source, ":")
	var secret string
	switch kind {
	case "env":
		if ref == "" {
			return Rule{}, fmt.Errorf("webhook %s: env: needs a variable name", name)
		}
		if secret = strings.TrimSpace(getenv(ref)); secret == "" {
			return Rule{}, fmt.Errorf("webhook %s: environment variable %s is not set or empty", name, ref)
		}
	case "file":
		if ref == "" {
			return Rule{}, fmt.Errorf("webhook %s: file: needs a file name", name)
		}
		b, err := os.ReadFile(ref)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is in the message already
			}
			return Rule{}, fmt.Errorf("webhook %s: cannot read secret file %s: %v", name, ref, err)
		}
		if secret = strings.TrimSpace(string(b)); secret == "" {
			return Rule{}, fmt.Errorf("webhook %s: secret file %s is empty", name, ref)
		}
	default:
		return Rule{}, fmt.Errorf("webhook %s: the secret must be given as env:NAME or file:FILE, not on the command line", name)
	}
	r.Secret = []byte(secret)
	return r, nil
}

// plainWord reports whether s looks like a provider's name rather than
// something that could be a secret, to decide whether an error may show it.
func plainWord(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && c != '-' {
			return false
		}
	}
	return true
}
