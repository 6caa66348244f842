package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/keyhole-tunnel/keyhole/client/webhook"
)

// Verify puts the check in front of any handler. Here GitHub's webhooks
// arrive at /hooks/github and the rest of the site is left alone. With
// the keyhole client, set client.Client.Webhooks to the same rules
// instead: the client checks before the local service sees anything.
func ExampleVerify() {
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s got %q", r.URL.Path, b)
	})
	h, err := webhook.Verify(app, webhook.Rule{
		Provider: webhook.GitHub,
		Secret:   []byte("It's a Secret to Everybody"), // in real use, from a file or the environment
		Path:     "/hooks/github",
	})
	if err != nil {
		log.Fatal(err)
	}
	post := func(path, body, signature string) {
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		if signature != "" {
			req.Header.Set("X-Hub-Signature-256", signature)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		fmt.Printf("%s: %d %s\n", path, w.Code, strings.TrimSpace(w.Body.String()))
	}
	// What GitHub sends: the hex HMAC-SHA256 of the body.
	m := hmac.New(sha256.New, []byte("It's a Secret to Everybody"))
	m.Write([]byte("Hello, World!"))
	signature := "sha256=" + hex.EncodeToString(m.Sum(nil))

	post("/hooks/github", "Hello, World!", signature)
	post("/hooks/github", "Hello, World!", signature) // the same delivery again
	post("/hooks/github", "Hello, World?", signature)
	post("/hooks/github", "Hello, World!", "")
	post("/about", "no signature needed here", "")
	// Output:
	// /hooks/github: 200 /hooks/github got "Hello, World!"
	// /hooks/github: 401 webhook: replayed signature
	// /hooks/github: 401 webhook: signature mismatch
	// /hooks/github: 401 webhook: missing signature
	// /about: 200 /about got "no signature needed here"
}

// ParseRule reads a rule as the client's --webhook flag takes it, the
// secret from the environment (or from a file, with file:PATH).
func ExampleParseRule() {
	getenv := func(name string) string { // os.Getenv in real use
		return map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_example"}[name]
	}
	r, err := webhook.ParseRule("stripe:/hooks/stripe=env:STRIPE_WEBHOOK_SECRET", getenv)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r) // printing a rule never shows its secret
	_, err = webhook.ParseRule("stripe=env:UNSET", getenv)
	fmt.Println(err)
	// Output:
	// stripe:/hooks/stripe
	// webhook "stripe": environment variable UNSET is not set or empty
}

// Check is the check without the middleware, for code that passes
// requests on by itself, as the keyhole client does.
func ExampleVerifier_Check() {
	v, err := webhook.New(webhook.Config{Rules: []webhook.Rule{{Provider: webhook.GitHub, Secret: []byte("s3cret")}}})
	if err != nil {
		log.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/", strings.NewReader("{}"))
	if _, err := v.Check(req); err != nil {
		e := err.(*webhook.Error)
		fmt.Println(e.Status, e.Provider, e.Err)
	}
	// Output:
	// 401 github missing signature
}
