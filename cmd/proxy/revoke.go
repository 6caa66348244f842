package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

const revokeSynopsis = `Usage: proxy revoke --admin URL --admin-token TOKEN (--key LABEL | --name NAME | --token-id JTI) [--until TIME | --for DURATION]

Revokes a client key, a friendly name or an access token through the
admin listener of any proxy instance (one started with --admin and
--admin-token). Every instance sharing the bus closes the connections it
covers, and refuses them until the revocation lapses: at --until, after
--for, or by default never, except for a token whose ID says when it
expires (the IDs "proxy token new" makes do), which lapses then.

The admin token may come from KEYHOLE_ADMIN_TOKEN instead of the flag, and
the admin address from KEYHOLE_ADMIN; the token is never printed.`

func runRevoke(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("revoke", flag.ContinueOnError)
	admin := fs.String("admin", "", "`URL` (or host:port) of a proxy's admin listener, as its --admin\n[KEYHOLE_ADMIN]")
	token := fs.String("admin-token", "", "the proxy's --admin-token `token` [KEYHOLE_ADMIN_TOKEN]")
	key := fs.String("key", "", "revoke the client key with this tunnel hostname or 52-character `label`")
	name := fs.String("name", "", "revoke this friendly `name`, whichever key holds a grant for it")
	tokenID := fs.String("token-id", "", "revoke the access token with this `ID` (jti; \"proxy token new\" prints it)")
	until := fs.String("until", "", "when the revocation lapses: an RFC 3339 `time`")
	forDur := fs.Duration("for", 0, "how long the revocation lasts, from now")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the admin listener's answer")
	if err := parseSub(fs, args, revokeSynopsis, stdout); err != nil {
		return err
	}
	if *admin == "" {
		*admin = getenv("KEYHOLE_ADMIN")
	}
	if *token == "" {
		*token = getenv("KEYHOLE_ADMIN_TOKEN")
	}
	if *admin == "" {
		return cli.Usage(errors.New("revoke: --admin is required"))
	}
	if *token == "" {
		return cli.Usage(errors.New("revoke: --admin-token (or KEYHOLE_ADMIN_TOKEN) is required"))
	}
	var req proxy.RevokeRequest
	n := 0
	for _, c := range []struct {
		kind  proxy.RevocationKind
		value string
	}{{proxy.RevokeKey, *key}, {proxy.RevokeName, *name}, {proxy.RevokeToken, *tokenID}} {
		if c.value != "" {
			req.Kind, req.Value = c.kind, c.value
			n++
		}
	}
	if n != 1 {
		return cli.Usage(errors.New("revoke: give exactly one of --key, --name and --token-id"))
	}
	switch {
	case *until != "" && *forDur != 0:
		return cli.Usage(errors.New("revoke: give --until or --for, not both"))
	case *forDur < 0:
		return cli.Usage(errors.New("revoke: --for must be positive"))
	case *forDur > 0:
		req.Until = time.Now().Add(*forDur).UTC().Format(time.RFC3339)
	case *until != "":
		req.Until = *until
	}
	// The proxy checks too; checking here makes a typo a usage error.
	if _, err := req.Revocation(time.Now()); err != nil {
		return cli.Usage(fmt.Errorf("revoke: %w", err))
	}
	endpoint, err := revokeURL(*admin)
	if err != nil {
		return cli.Usage(err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return cli.Usage(fmt.Errorf("revoke: --admin: %w", err))
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+*token)
	// No redirects: the token is for this listener only.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(hreq)
	if err != nil {
		// The error names the URL, never the header with the token.
		return fmt.Errorf("revoke: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		reason := strings.TrimSpace(string(b))
		switch resp.StatusCode {
		case http.StatusNotFound:
			reason = "no revoke endpoint: is the proxy running with --admin-token?"
		case http.StatusUnauthorized:
			reason = "the admin token was not accepted"
		}
		return fmt.Errorf("revoke: %s: %s", resp.Status, oneLine(reason))
	}
	var out proxy.RevokeRequest
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("revoke: unexpected answer: %v", err)
	}
	lapses := "for good"
	if out.Until != "" {
		lapses = "until " + out.Until
	}
	fmt.Fprintf(stdout, "revoked %s %s %s\n", out.Kind, out.Value, lapses)
	return nil
}

// revokeURL turns --admin into the endpoint's URL.
func revokeURL(admin string) (string, error) {
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("revoke: --admin %q: want a URL like http://127.0.0.1:9090 or host:port", admin)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/revoke"
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// oneLine keeps the first line of a server's answer.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
