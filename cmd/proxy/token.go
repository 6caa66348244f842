package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/keyhole-tunnel/keyhole/internal/cli"
	"github.com/keyhole-tunnel/keyhole/limiter"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// tokenOptions are the proxy's flags for access tokens and revocation.
type tokenOptions struct {
	keysFile   string
	adminToken string
	reserved   nameList

	keys     *proxy.TokenKeys
	reloader *proxy.FileReloader
}

func (t *tokenOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&t.keysFile, "token-keys", "", "JWK set `file` of the operator's public keys (proxy token keygen --public):\nevery client then needs an access token signed by one of them (proxy\ntoken new). Several keys may be in force at once, for rotation.\nReloaded on SIGHUP and when the file changes (see --reload-interval)")
	fs.StringVar(&t.adminToken, "admin-token", "", "bearer `token` that turns on POST /revoke on the --admin listener, for\n\"proxy revoke\" (default off); at least 16 characters")
	fs.Var(&t.reserved, "reserved-names", "comma-separated friendly `names` no token can grant here, besides\nwww, api, admin and the other built-in ones")
}

// load reads --token-keys, if given.
func (t *tokenOptions) load(log *slog.Logger) error {
	if t.adminToken != "" && len(t.adminToken) < 16 {
		return cli.Usage(errors.New("--admin-token must be at least 16 characters"))
	}
	if t.keysFile == "" {
		return nil
	}
	t.keys = new(proxy.TokenKeys)
	var err error
	if t.reloader, err = t.keys.Reloader(t.keysFile, log); err != nil {
		return cli.Usage(err)
	}
	ids := t.keys.KeyIDs()
	if len(ids) == 0 {
		log.Warn("token keys: the set is empty; every client will be refused", "file", t.keysFile)
	}
	log.Info("token keys loaded", "file", t.keysFile, "kids", strings.Join(ids, ","))
	return nil
}

// watch reloads --token-keys on SIGHUP and when it changes.
func (t *tokenOptions) watch(ctx context.Context, interval time.Duration) (stop func()) {
	if t.reloader == nil {
		return func() {}
	}
	return watchFiles(ctx, t.reloader, interval)
}

// nameList is a flag of comma-separated friendly names.
type nameList []string

func (l *nameList) String() string { return strings.Join(*l, ",") }

func (l *nameList) Set(v string) error {
	*l = nil
	for _, n := range strings.Split(v, ",") {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		if err := messages.CheckName(n); err != nil {
			return err
		}
		*l = append(*l, n)
	}
	return nil
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string { return strings.Join(*r, ",") }

func (r *repeated) Set(v string) error {
	*r = append(*r, v)
	return nil
}

// parseSub parses a subcommand's flags. Subcommands read no environment
// variables besides the ones they name: the proxy's own (KEYHOLE_RATE,
// KEYHOLE_MAX_BODY, ...) must not slip into a token.
func parseSub(fs *flag.FlagSet, args []string, synopsis string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cli.PrintSubUsage(stdout, fs, synopsis)
			return err
		}
		return cli.Usage(fmt.Errorf("%s: %w", fs.Name(), err))
	}
	if fs.NArg() > 0 {
		return cli.Usage(fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0)))
	}
	return nil
}

const tokenSynopsis = `Usage: proxy token keygen|new [flags]

Makes the operator's signing keys and the access tokens they sign. A proxy
started with --token-keys PUBLIC-FILE accepts only clients that present a
token (client --token TOKEN) signed by one of the keys in that file.

  proxy token keygen --signing-key FILE --public FILE
      makes a signing key and adds its public key to the proxy's key set
  proxy token new --signing-key FILE --audience DOMAIN [--name NAME]...
      prints a token

Run "proxy token keygen --help" or "proxy token new --help" for their flags.`

// runToken runs "proxy token ...".
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.Usage(errors.New("token: want keygen or new"))
	}
	switch args[0] {
	case "keygen":
		return runKeygen(args[1:], stdout, stderr)
	case "new":
		return runTokenNew(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, tokenSynopsis)
		return flag.ErrHelp
	default:
		return cli.Usage(fmt.Errorf("token: unknown command %q: want keygen or new", args[0]))
	}
}

const keygenSynopsis = `Usage: proxy token keygen --signing-key FILE --public FILE [--alg EdDSA|ES256]

Writes a new private signing key to --signing-key (a JWK, mode 0600; an
existing file is never overwritten) and adds its public key to the JWK set
in --public (created if missing, mode 0644; the keys already there stay).
Give the proxy --token-keys with the --public file. The new key's ID (kid)
is printed on stderr.

To rotate: make a second key with keygen, issue new tokens with it, and
once the old tokens have expired remove the old key from the --public file;
the proxy reloads it on SIGHUP or when the file changes.`

func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token keygen", flag.ContinueOnError)
	priv := fs.String("signing-key", "", "`file` to write the new private signing key to; must not exist")
	pub := fs.String("public", "", "JWK set `file` to add the public key to; created if missing")
	alg := fs.String("alg", "EdDSA", "signature `algorithm`: EdDSA (Ed25519) or ES256 (P-256)")
	if err := parseSub(fs, args, keygenSynopsis, stdout); err != nil {
		return err
	}
	if *priv == "" || *pub == "" {
		return cli.Usage(errors.New("token keygen: --signing-key and --public are both required"))
	}
	if filepath.Clean(*priv) == filepath.Clean(*pub) {
		return cli.Usage(errors.New("token keygen: --signing-key and --public must be different files"))
	}
	a := jose.SignatureAlgorithm(*alg)
	if a != jose.EdDSA && a != jose.ES256 {
		return cli.Usage(fmt.Errorf("token keygen: --alg %q: want EdDSA or ES256", *alg))
	}
	// Read the set first, so that a broken set file stops everything before
	// a key is written.
	set, mode, err := readKeySet(*pub)
	if err != nil {
		return err
	}
	key, err := proxy.NewSigningKeyFor(a)
	if err != nil {
		return err
	}
	set.Keys = append(set.Keys, key.Public())
	if _, err := proxy.NewTokenKeys(set); err != nil {
		return fmt.Errorf("%s: %w", *pub, err)
	}
	if err := writePrivateKey(*priv, key); err != nil {
		return err
	}
	if err := writeKeySet(*pub, set, mode); err != nil {
		os.Remove(*priv) // a key no proxy trusts would only mislead
		return err
	}
	fmt.Fprintf(stderr, "kid %s: signing key written to %s; public key added to %s (%s)\n", key.KeyID, *priv, *pub, countKeys(len(set.Keys)))
	return nil
}

func countKeys(n int) string {
	if n == 1 {
		return "1 key"
	}
	return fmt.Sprintf("%d keys", n)
}

// readKeySet reads the public JWK set at path, or an empty one if there is
// no file, and the mode to write it back with.
func readKeySet(path string) (*jose.JSONWebKeySet, fs.FileMode, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &jose.JSONWebKeySet{}, 0o644, nil
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, err
	}
	set, err := proxy.ParseTokenKeys(b)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return set, st.Mode().Perm(), nil
}

// writePrivateKey creates path with mode 0600, refusing an existing file.
func writePrivateKey(path string, key *jose.JSONWebKey) error {
	b, err := json.MarshalIndent(key, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; refusing to overwrite a signing key", path)
	}
	if err != nil {
		return err
	}
	err = f.Chmod(0o600) // whatever the umask
	if err == nil {
		_, err = f.Write(append(b, '\n'))
	}
	if err == nil {
		err = f.Sync()
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeKeySet replaces the set file at once (a new file renamed over the
// old), so that a proxy watching it never reads half of it.
func writeKeySet(path string, set *jose.JSONWebKeySet, mode fs.FileMode) error {
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(append(b, '\n'))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if e := tmp.Close(); err == nil {
		err = e
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

const tokenNewSynopsis = `Usage: proxy token new --signing-key FILE --audience DOMAIN [--name NAME]... [flags]

Prints an access token signed with --signing-key, and nothing else, on
stdout; its ID and expiry go to stderr. A client presents it with
client --token TOKEN (or KEYHOLE_TOKEN). Limits are caps: a proxy applies
one only where it is lower than its own.`

func runTokenNew(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token new", flag.ContinueOnError)
	keyFile := fs.String("signing-key", "", "private signing key `file` (proxy token keygen --signing-key)")
	audience := fs.String("audience", "", "the proxy's `domain` (its --domain, like tunnel.example.com): the token\nis valid only there")
	var names repeated
	fs.Var(&names, "name", "friendly `name` the token grants: the client may ask to be served at\n<name>.<domain> too. Repeat for more")
	key := fs.String("key", "", "bind the token to one client key: its tunnel hostname or 52-character\n`label`; with another key the token is refused (default: any key)")
	expires := fs.Duration("expires", 720*time.Hour, "how long the token is valid; 0 = it never expires")
	notBefore := fs.String("not-before", "", "when the token becomes valid: an RFC 3339 `time` or a duration from now")
	rate := fs.Float64("rate", 0, "requests and WebSocket messages per second the tunnel may receive\n(0 = the proxy's --rate)")
	burst := fs.Int("burst", 0, "burst allowed above --rate (0 = the proxy's)")
	var maxBody limiter.Size
	fs.Var(&maxBody, "max-body", "largest body or WebSocket message for the tunnel: a `size` like 500KB or\n2MiB (KB = 1000 bytes, KiB = 1024); 0 = the proxy's --max-body")
	streams := fs.Int("streams", 0, "concurrent streams the tunnel may have (0 = the proxy's)")
	id := fs.String("id", "", "token `ID` (jti) that \"proxy revoke --token-id\" names (default: a random ID\nthat also says when the token expires, so its revocation lapses then)")
	if err := parseSub(fs, args, tokenNewSynopsis, stdout); err != nil {
		return err
	}
	if *keyFile == "" || *audience == "" {
		return cli.Usage(errors.New("token new: --signing-key and --audience are both required"))
	}
	if *expires < 0 {
		return cli.Usage(errors.New("token new: --expires must not be negative (0 = never)"))
	}
	if *rate < 0 || *burst < 0 || *streams < 0 {
		return cli.Usage(errors.New("token new: --rate, --burst and --streams must not be negative"))
	}
	now := time.Now()
	spec := proxy.TokenSpec{
		Audience: *audience,
		Key:      *key,
		IssuedAt: now,
		Rate:     *rate,
		Burst:    *burst,
		MaxBody:  int64(maxBody),
		Streams:  *streams,
		ID:       *id,
	}
	if *expires > 0 {
		spec.Expires = now.Add(*expires)
	}
	if *notBefore != "" {
		t, err := parseTimeOrDuration(*notBefore, now)
		if err != nil {
			return cli.Usage(fmt.Errorf("token new: --not-before: %w", err))
		}
		spec.NotBefore = t
	}
	apex, _, _ := strings.Cut(strings.ToLower(*audience), ".")
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if err := messages.CheckName(n); err != nil {
			return cli.Usage(fmt.Errorf("token new: --name: %w", err))
		}
		for _, r := range proxy.ReservedNames {
			if n == r {
				return cli.Usage(fmt.Errorf("token new: --name %q is reserved on every proxy", n))
			}
		}
		if n == apex {
			return cli.Usage(fmt.Errorf("token new: --name %q is the first label of the domain, which is reserved", n))
		}
		spec.Names = append(spec.Names, n)
	}
	signing, err := readSigningKey(*keyFile)
	if err != nil {
		return err
	}
	tok, err := proxy.IssueToken(signing, spec)
	if err != nil {
		return cli.Usage(err) // everything left to go wrong is in the flags
	}
	fmt.Fprintln(stdout, tok)
	exp := "never"
	if !spec.Expires.IsZero() {
		exp = spec.Expires.UTC().Format(time.RFC3339)
	}
	bound := "any key"
	if spec.Key != "" {
		bound = "key " + spec.Key
	}
	got, _ := tokenID(tok)
	fmt.Fprintf(stderr, "token %s: audience %s, expires %s, %s, names [%s], signed by kid %s\n",
		got, strings.ToLower(*audience), exp, bound, strings.Join(spec.Names, " "), signing.KeyID)
	return nil
}

// tokenID reads a token's jti, for the stderr line.
func tokenID(tok string) (string, error) {
	obj, err := jose.ParseSignedCompact(tok, messages.AllowedAlgs())
	if err != nil {
		return "", err
	}
	var c struct {
		ID string `json:"jti"`
	}
	// The token was signed a moment ago by this process.
	err = json.Unmarshal(obj.UnsafePayloadWithoutVerification(), &c)
	return c.ID, err
}

// readSigningKey reads a private JWK that keygen wrote.
func readSigningKey(path string) (*jose.JSONWebKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var key jose.JSONWebKey
	if err := json.Unmarshal(b, &key); err != nil {
		return nil, fmt.Errorf("%s: not a JWK: %w", path, err)
	}
	if key.IsPublic() {
		return nil, fmt.Errorf("%s holds a public key; --signing-key wants the private key file keygen wrote", path)
	}
	return &key, nil
}

// parseTimeOrDuration reads an RFC 3339 time, or a duration from now.
func parseTimeOrDuration(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time like 2026-01-02T15:04:05Z or a duration like 1h", s)
	}
	return now.Add(d), nil
}
