package proxy

import "strings"

// ReservedNames are the names no token can grant, besides those a proxy's
// Config.ReservedNames adds and the first label of its domain: names of
// services an apex domain usually has, and of the proxy itself.
var ReservedNames = []string{
	"www", "api", "admin", "app", "auth", "login", "mail", "smtp", "imap", "pop", "ftp",
	"ns", "ns1", "ns2", "mx", "autodiscover", "autoconfig", "status", "metrics",
	"localhost", "keyhole", "proxy", "tunnel", "control",
}

// reservedName reports whether name is reserved on this proxy.
func (c *Config) reservedName(name string) bool {
	first, _, _ := strings.Cut(c.Domain, ".")
	if name == first {
		return true
	}
	for _, list := range [][]string{ReservedNames, c.ReservedNames} {
		for _, r := range list {
			if strings.EqualFold(r, name) {
				return true
			}
		}
	}
	return false
}
