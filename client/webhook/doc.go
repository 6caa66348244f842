// Package webhook checks the signatures that GitHub, Stripe and Slack put
// on the webhooks they send, before the service they are meant for sees
// them. The secrets stay with whoever runs the check: with the keyhole
// client, the proxy never learns them.
//
// Start with [Rule], one per provider and path, then either set
// client.Client.Webhooks to the rules (the client checks every request
// before the local service sees it, in both of its modes) or wrap any
// http.Handler with [Verify]. [New] gives a [Verifier] with every option;
// [ParseRule] reads a rule in the command line's syntax, with the secret
// taken from the environment or a file.
//
// What is checked, for a request under a rule's Path:
//
//   - GitHub: X-Hub-Signature-256 is "sha256=" and the hex HMAC-SHA256
//     of the body under the secret.
//   - Stripe: Stripe-Signature is "t=<unix time>,v1=<hex>[,v1=<hex>...]",
//     a v1 being the HMAC-SHA256 of "<t>.<body>"; any v1 may match, as
//     Stripe sends one per secret while a secret is being rolled.
//   - Slack: X-Slack-Signature is "v0=" and the hex HMAC-SHA256 of
//     "v0:<ts>:<body>", ts being X-Slack-Request-Timestamp.
//
// Signatures are compared in constant time. A Stripe or Slack timestamp
// further than the rule's Tolerance (default 5 minutes) from now, in
// either direction, is refused: an old request cannot be replayed once
// the seen-set below has let it go.
//
// Replays: a signature that passed is remembered for the Tolerance (for
// Stripe and Slack, until its timestamp leaves the Tolerance; GitHub signs
// no timestamp, so from the time it was seen) and the same signature is
// refused meanwhile, whatever else the request says. GitHub's
// X-GitHub-Delivery ID is not signed, so it cannot be the key: anyone
// could change it. A delivery the service did not take (it gave no answer,
// or a 5xx) is forgotten again, so that the provider's retry of it gets
// through. The remembered set is bounded, see [Config.MaxSeen].
//
// Refusals: a missing, malformed, wrong, stale or replayed signature gets
// 401, a body over [Config.MaxBody] 413, a full seen-set 503, each with a
// one-line plain-text body; the service never sees the request. A request
// outside every rule's Path passes untouched, its body unread.
package webhook
