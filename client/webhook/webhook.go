package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Provider names a webhook sender whose signatures a [Rule] checks.
type Provider string

// The providers this package knows.
const (
	GitHub Provider = "github"
	Stripe Provider = "stripe"
	Slack  Provider = "slack"
)

// Providers lists every provider, in the order help texts show them.
var Providers = []Provider{GitHub, Stripe, Slack}

// Defaults for the zero values of [Rule] and [Config].
const (
	// DefaultTolerance is how far a Stripe or Slack timestamp may be
	// from now, and how long a signature is remembered: 5 minutes, what
	// both providers recommend.
	DefaultTolerance = 5 * time.Minute
	// DefaultMaxBody is the largest body read to verify it: 25 MiB,
	// above GitHub's cap of 25 MB on what it sends.
	DefaultMaxBody = 25 << 20
	// DefaultMaxSeen bounds the signatures remembered at once: 100,000,
	// about 15 MB when full (150 bytes each, measured; forgotten ones
	// can hold up to 6 MB more until their time is up), reached only by
	// more than 330 genuine deliveries a second for 5 minutes.
	DefaultMaxSeen = 100_000
)

// Rule says which requests must carry a valid signature, from which
// provider, under which secret.
type Rule struct {
	// Provider is GitHub, Stripe or Slack. Required.
	Provider Provider
	// Secret is the webhook's signing secret exactly as the provider
	// shows it (for Stripe, the whole "whsec_..." string). Required.
	// String and LogValue leave it out, so a Rule can be printed and
	// logged.
	Secret []byte
	// Path limits the rule to requests whose path is Path or lies below
	// it ("/hooks/github" covers "/hooks/github" and "/hooks/github/x",
	// not "/hooks/githubx"). "" or "/" covers every request. Paths are
	// compared after decoding and cleaning and without regard to case,
	// so that a service that routes loosely cannot be reached around the
	// check. Where several rules cover a request, those with the longest
	// Path apply and a request passes if any of them accepts it: several
	// rules on one path serve a rolled secret, or several senders.
	Path string
	// Tolerance is how far a Stripe or Slack timestamp may be from now,
	// and how long a signature is remembered to refuse its replay.
	// Default DefaultTolerance.
	Tolerance time.Duration
}

// String describes r without its secret.
func (r Rule) String() string {
	s := string(r.Provider)
	if r.Path != "" {
		s += ":" + r.Path
	}
	return s
}

// GoString describes r without its secret, for %#v.
func (r Rule) GoString() string { return "webhook.Rule{" + r.String() + "}" }

// LogValue describes r without its secret, for log/slog.
func (r Rule) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("provider", string(r.Provider))}
	if r.Path != "" {
		attrs = append(attrs, slog.String("path", r.Path))
	}
	return slog.GroupValue(attrs...)
}

// Config configures a [Verifier]. The zero value of every field but Rules
// is its documented default.
type Config struct {
	// Rules are the checks to make. A request no rule covers passes.
	Rules []Rule
	// MaxBody is the largest body read to verify it; a larger one gets
	// 413 without reaching the service. Default DefaultMaxBody.
	MaxBody int64
	// MaxSeen bounds the signatures remembered to refuse replays.
	// Default DefaultMaxSeen. When it is reached, a new delivery that
	// verifies is refused with 503 and a Retry-After for when the oldest
	// one expires, rather than forgetting a signature early: forgetting
	// would quietly reopen the replay window at the moment someone is
	// pushing the most traffic, while a 503 makes the providers retry
	// later (Stripe and Slack do by themselves). Only signatures that
	// verified are remembered, so nobody without a secret can fill it.
	MaxSeen int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives a Warn line for every refusal by [Verifier.Handler]
	// (Check itself logs nothing). Default: discard.
	Logger *slog.Logger
}

// Verifier checks requests against its rules and remembers the signatures
// it has accepted. It is safe for concurrent use.
type Verifier struct {
	rules   []rule // longest Path first
	maxBody int64
	now     func() time.Time
	log     *slog.Logger
	seen    *seenSet
}

type rule struct {
	Rule
	prefix string // lower case, no trailing slash; "" covers everything
}

// New checks c and returns its Verifier.
func New(c Config) (*Verifier, error) {
	v := &Verifier{maxBody: c.MaxBody, now: c.Now, log: c.Logger}
	if v.maxBody == 0 {
		v.maxBody = DefaultMaxBody
	}
	if v.maxBody < 0 {
		return nil, fmt.Errorf("webhook: MaxBody %d is negative", c.MaxBody)
	}
	maxSeen := c.MaxSeen
	if maxSeen == 0 {
		maxSeen = DefaultMaxSeen
	}
	if maxSeen < 0 {
		return nil, fmt.Errorf("webhook: MaxSeen %d is negative", c.MaxSeen)
	}
	v.seen = newSeenSet(maxSeen)
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range c.Rules {
		if !slices.Contains(Providers, r.Provider) {
			return nil, fmt.Errorf("webhook: unknown provider %q: want %s", r.Provider, providerList())
		}
		if len(r.Secret) == 0 {
			return nil, fmt.Errorf("webhook: rule %s has no secret", r)
		}
		if r.Path != "" && (!strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "?#")) {
			return nil, fmt.Errorf("webhook: rule %s: path must start with / and hold no query", r)
		}
		if r.Tolerance < 0 {
			return nil, fmt.Errorf("webhook: rule %s: negative tolerance", r)
		}
		if r.Tolerance == 0 {
			r.Tolerance = DefaultTolerance
		}
		r.Secret = slices.Clone(r.Secret) // the caller may reuse its slice
		v.rules = append(v.rules, rule{Rule: r, prefix: strings.ToLower(strings.TrimSuffix(r.Path, "/"))})
	}
	slices.SortStableFunc(v.rules, func(a, b rule) int { return len(b.prefix) - len(a.prefix) })
	return v, nil
}

// Verify returns next behind a Verifier with rules and the defaults: the
// plain middleware. Use New and [Verifier.Handler] for the options.
func Verify(next http.Handler, rules ...Rule) (http.Handler, error) {
	v, err := New(Config{Rules: rules})
	if err != nil {
		return nil, err
	}
	return v.Handler(next), nil
}

func providerList() string {
	s := make([]string, len(Providers))
	for i, p := range Providers {
		s[i] = string(p)
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// The reasons for a refusal, in [Error.Err]; classify them with
// errors.Is.
var (
	ErrNoSignature  = errors.New("missing signature")
	ErrNoTimestamp  = errors.New("missing timestamp")
	ErrMalformed    = errors.New("malformed signature")
	ErrBadSignature = errors.New("signature mismatch")
	ErrStale        = errors.New("timestamp outside tolerance")
	ErrReplayed     = errors.New("replayed signature")
	ErrTooLarge     = errors.New("body too large")
	ErrBody         = errors.New("incomplete body")
	ErrBusy         = errors.New("too many recent deliveries")
)

// Error is a refusal: the request must not reach the service.
type Error struct {
	// Provider is the provider of the rule that refused the request.
	Provider Provider
	// Status is the HTTP status to answer with: 401 for a signature
	// refused, 413 for a body over MaxBody, 400 for a body that could not
	// be read whole, 503 when the seen-set is full.
	Status int
	// Err is the reason, one of the Err values of this package.
	Err error
	// RetryAfter, for a 503, is when a retry may succeed.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return "webhook: " + string(e.Provider) + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *Error) Unwrap() error { return e.Err }

func (e *Error) text() string { return "webhook: " + e.Err.Error() + "\n" }

func (e *Error) header() http.Header {
	h := http.Header{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"X-Content-Type-Options": {"nosniff"},
	}
	if e.RetryAfter > 0 {
		h["Retry-After"] = []string{strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10)}
	}
	return h
}

// ServeHTTP answers with the refusal: its Status and a one-line plain-text
// body naming the reason, never the secret or the expected signature.
func (e *Error) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	for k, v := range e.header() {
		w.Header()[k] = v
	}
	w.WriteHeader(e.Status)
	io.WriteString(w, e.text())
}

// Response returns the refusal as the response to req, for code that
// stands where a RoundTripper would answer (the keyhole client does).
func (e *Error) Response(req *http.Request) *http.Response {
	body := e.text()
	return &http.Response{
		Status:        strconv.Itoa(e.Status) + " " + http.StatusText(e.Status),
		StatusCode:    e.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        e.header(),
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// Check decides whether r may reach the service. A request no rule
// covers passes at once, its body unread. For one a rule covers, Check
// reads the body whole (up to MaxBody), verifies it and leaves r.Body
// reading the same bytes, so that the service gets them unchanged (r's
// headers and ContentLength are not touched). r.URL.Path is the path the
// rules' Paths are matched against.
//
// A refusal is an [*Error]. On success, call done with the status the
// service answered, or 0 if it gave none: a delivery it did not take (0
// or a 5xx) is forgotten, so that the provider's retry gets through.
func (v *Verifier) Check(r *http.Request) (done func(status int), err error) {
	rules := v.covering(r.URL.Path)
	if len(rules) == 0 {
		return func(int) {}, nil
	}
	now := v.now()
	var claims []claim
	var first *Error
	for _, ru := range rules {
		c, err := ru.claim(r.Header, now)
		if err != nil {
			// The reason to give is that of a rule whose header came
			// (a signature that is wrong), before a mere absence.
			if first == nil || errors.Is(first.Err, ErrNoSignature) && !errors.Is(err.Err, ErrNoSignature) {
				first = err
			}
			continue
		}
		claims = append(claims, c)
	}
	if len(claims) == 0 {
		return nil, first
	}
	body, err := v.readBody(r)
	if err != nil {
		e := err.(*Error)
		e.Provider = claims[0].rule.Provider
		return nil, e
	}
	for _, c := range claims {
		mac, ok := c.verify(body)
		if !ok {
			continue
		}
		if err := v.seen.add(mac, c.until, now); err != nil {
			err.Provider = c.rule.Provider
			return nil, err
		}
		return func(status int) {
			if status == 0 || status >= 500 {
				v.seen.forget(mac, c.until)
			}
		}, nil
	}
	return nil, &Error{Provider: claims[0].rule.Provider, Status: http.StatusUnauthorized, Err: ErrBadSignature}
}

// covering returns the rules with the longest Path that covers p.
func (v *Verifier) covering(p string) []rule {
	if p == "" {
		p = "/"
	}
	p = strings.ToLower(p)
	clean := path.Clean(p)
	for i, r := range v.rules {
		if under(r.prefix, p) || under(r.prefix, clean) {
			j := i + 1
			for j < len(v.rules) && v.rules[j].prefix == r.prefix {
				j++
			}
			return v.rules[i:j]
		}
	}
	return nil
}

// under reports whether p is prefix or below it; ';' ends a segment as
// '/' does, for servers that take path parameters.
func under(prefix, p string) bool {
	if prefix == "" {
		return true
	}
	if !strings.HasPrefix(p, prefix) {
		return false
	}
	rest := p[len(prefix):]
	return rest == "" || rest[0] == '/' || rest[0] == ';'
}

// readBody reads r's body whole, within MaxBody, and puts the same bytes
// back for whoever reads it next.
func (v *Verifier) readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > v.maxBody {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Err: ErrTooLarge}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, v.maxBody+1))
	switch {
	case int64(buf.Len()) > v.maxBody:
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Err: ErrTooLarge}
	case err != nil:
		return nil, &Error{Status: http.StatusBadRequest, Err: ErrBody}
	}
	b := buf.Bytes()
	r.Body = readCloser{bytes.NewReader(b), r.Body}
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return b, nil
}

// readCloser reads the bytes already read and closes the original body.
type readCloser struct {
	io.Reader
	io.Closer
}

// Handler returns next behind v: a request v refuses gets its answer
// (see [Error.ServeHTTP]) and a Warn log line with the provider and the
// reason, and never reaches next.
func (v *Verifier) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done, err := v.Check(r)
		if err != nil {
			e := err.(*Error)
			attrs := []any{"provider", e.Provider, "reason", e.Err.Error(), "path", r.URL.Path, "remote", r.RemoteAddr}
			if id := r.Header.Get("X-Request-Id"); id != "" {
				attrs = append(attrs, "req", id)
			}
			v.log.Warn("webhook refused", attrs...)
			e.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() { done(sw.status) }()
		next.ServeHTTP(sw, r)
	})
}

// statusWriter notes the status next answered with. Unwrap lets
// http.ResponseController reach the writer's Flush and Hijack.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
