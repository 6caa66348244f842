package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers the providers sign with.
const (
	githubHeader         = "X-Hub-Signature-256"
	stripeHeader         = "Stripe-Signature"
	slackHeader          = "X-Slack-Signature"
	slackTimestampHeader = "X-Slack-Request-Timestamp"
)

// claim is what a request's headers say under one rule: the signatures it
// carries and, for Stripe and Slack, the timestamp they cover.
type claim struct {
	rule  *rule
	ts    string   // the timestamp as sent: it is signed verbatim
	sigs  [][]byte // candidate MACs; any may match
	until time.Time
}

// claim reads r's signature headers as of now. A timestamp outside the
// tolerance is refused here, before the body is read.
func (r *rule) claim(h http.Header, now time.Time) (claim, *Error) {
	c := claim{rule: r, until: now.Add(r.Tolerance)}
	refuse := func(err error) (claim, *Error) {
		return claim{}, &Error{Provider: r.Provider, Status: http.StatusUnauthorized, Err: err}
	}
	switch r.Provider {
	case GitHub:
		v, err := single(h, githubHeader)
		if err != nil {
			return refuse(err)
		}
		sig, ok := strings.CutPrefix(v, "sha256=")
		if !ok {
			return refuse(ErrMalformed)
		}
		mac, ok := decodeMAC(sig)
		if !ok {
			return refuse(ErrMalformed)
		}
		c.sigs = [][]byte{mac}
		return c, nil
	case Stripe:
		v, err := single(h, stripeHeader)
		if err != nil {
			return refuse(err)
		}
		for item := range strings.SplitSeq(v, ",") {
			k, val, _ := strings.Cut(strings.TrimSpace(item), "=")
			switch k {
			case "t":
				if c.ts != "" {
					return refuse(ErrMalformed)
				}
				c.ts = val
			case "v1":
				// One that is not even hex cannot match; the others may.
				if mac, ok := decodeMAC(val); ok {
					c.sigs = append(c.sigs, mac)
				}
			}
			// Other schemes (v0 marks test-mode events) are not ours.
		}
		if c.ts == "" || len(c.sigs) == 0 {
			return refuse(ErrMalformed)
		}
	case Slack:
		v, err := single(h, slackHeader)
		if err != nil {
			return refuse(err)
		}
		sig, ok := strings.CutPrefix(v, "v0=")
		if !ok {
			return refuse(ErrMalformed)
		}
		mac, ok := decodeMAC(sig)
		if !ok {
			return refuse(ErrMalformed)
		}
		c.sigs = [][]byte{mac}
		if c.ts, err = single(h, slackTimestampHeader); err != nil {
			if err == ErrNoSignature {
				err = ErrNoTimestamp
			}
			return refuse(err)
		}
	}
	at, ok := parseUnix(c.ts)
	if !ok {
		return refuse(ErrMalformed)
	}
	if d := now.Sub(at); d > r.Tolerance || d < -r.Tolerance {
		return refuse(ErrStale)
	}
	// Past this, the timestamp check refuses the request anyway.
	c.until = at.Add(r.Tolerance)
	return c, nil
}

// verify reports whether one of c's signatures is right for body, and the
// right MAC, which names the delivery in the seen-set.
func (c claim) verify(body []byte) ([sha256.Size]byte, bool) {
	m := hmac.New(sha256.New, c.rule.Secret)
	switch c.rule.Provider {
	case Stripe:
		m.Write([]byte(c.ts + "."))
	case Slack:
		m.Write([]byte("v0:" + c.ts + ":"))
	}
	m.Write(body)
	var want [sha256.Size]byte
	m.Sum(want[:0])
	ok := false
	for _, s := range c.sigs {
		// Every candidate is compared, in constant time, so the time
		// taken says nothing about which one came close.
		if hmac.Equal(s, want[:]) {
			ok = true
		}
	}
	return want, ok
}

// single returns the one value of header k. Two values are refused: the
// service behind might read the other one.
func single(h http.Header, k string) (string, error) {
	switch v := h.Values(k); len(v) {
	case 0:
		return "", ErrNoSignature
	case 1:
		if v[0] == "" {
			return "", ErrNoSignature
		}
		return v[0], nil
	default:
		return "", ErrMalformed
	}
}

func decodeMAC(s string) ([]byte, bool) {
	if len(s) != 2*sha256.Size {
		return nil, false
	}
	b, err := hex.DecodeString(s)
	return b, err == nil
}

// parseUnix reads a timestamp in seconds: digits only, no sign.
func parseUnix(s string) (time.Time, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}
