package proxy

import (
	"fmt"
	"strings"
	"time"
)

// A registry entry's value names the connection holding a hostname and
// carries what a visitor's instance must know before it sends that
// connection anything: the tunnel's visitor rules, if it has any. A
// friendly name's entry begins with its grant's order, so that of two
// keys granted the same name the newer grant wins a ClaimOrdered:
//
//	<holder>[\n<rules>]                 a key's hostname
//	<order>|<holder>[\n<rules>]         a friendly name
//	*<label>                            a pooled key's hostname
//	<order>|*<label>                    a pooled key's friendly name
//
// A pool's members are in the set poolSet(label), each member's value
// like a key's hostname entry.
//
// A holder ("<instance>/<registration time><random>") has neither "|" nor
// a newline; the rules are visitorPolicy's encoding, on one line.

// entryValue makes the value of an entry for holder. order is "" for a
// key's hostname.
func entryValue(order, holder, rules string) string {
	v := holder
	if order != "" {
		v = order + "|" + holder
	}
	if rules != "" {
		v += "\n" + rules
	}
	return v
}

// parseEntry splits an entry's value.
func parseEntry(v string) (holder, rules string) {
	holder, rules, _ = strings.Cut(v, "\n")
	if _, h, ok := strings.Cut(holder, "|"); ok {
		holder = h
	}
	return holder, rules
}

// grantOrder orders grants of a name by when they were issued, in fixed
// width so that byte order is time order; a connection's holder, after
// it, settles a tie in favour of the newer connection.
func grantOrder(issued time.Time) string {
	return fmt.Sprintf("%016x", uint64(max(issued.Unix(), 0)))
}

// poolMarker begins the holder of a pooled hostname's entry: look in the
// pool's set for the members.
const poolMarker = "*"

// poolRef is what a pooled key's entries name instead of a holder.
func poolRef(label string) string { return poolMarker + label }

// poolSet is the registry set of a pooled key's members.
func poolSet(label string) string { return "pool:" + label }
