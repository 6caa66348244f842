package proxy

import "time"

// SetChallengeTTL shortens how long a registration challenge stays valid.
func SetChallengeTTL(c *Config, d time.Duration) { c.challengeTTL = d }

// PublicMessage is the fixed body line of a status the proxy answers itself.
func PublicMessage(status int) string { return publicMessages[status] }

// SetRegistrationTimeout shortens the registration handshake's bound.
func SetRegistrationTimeout(c *Config, d time.Duration) { c.registrationTimeout = d }

// SetMaxPending lowers the bound on exchanges in flight per connection.
func SetMaxPending(c *Config, n int) { c.maxPending = n }
