package messages

import (
	"errors"
	"net/textproto"
	"slices"
	"strings"
)

// ErrBadHeader is returned by [ValidateHeader].
var ErrBadHeader = errors.New("messages: invalid header")

// ValidateHeader checks that every name is an HTTP token and that no value
// contains CR, LF or NUL, so that a header can be written to an HTTP/1.1
// connection without splitting it.
func ValidateHeader(h Header) error {
	for k, vs := range h {
		if !validName(k) {
			return ErrBadHeader
		}
		for _, v := range vs {
			if !validValue(v) {
				return ErrBadHeader
			}
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r', c == '\n', c == 0:
			return false
		case c < ' ' && c != '\t', c == 0x7f:
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// hopByHop are the headers that describe one connection, not the message
// (RFC 9110 section 7.6.1). They never cross the tunnel. Trailer is not
// among them: it declares the trailer fields of the message itself.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Transfer-Encoding", "Upgrade",
}

// RemoveHopByHop deletes the hop-by-hop headers from h, and every header
// that its Connection header names. Both the proxy and the client apply it,
// on each leg. "TE: trailers" survives as exactly that: it says the caller
// accepts trailers, which every leg of the tunnel passes on (gRPC needs it).
func RemoveHopByHop(h Header) {
	trailers := false
	for k, vs := range h {
		if textproto.CanonicalMIMEHeaderKey(k) == "Te" && hasToken(vs, "trailers") {
			trailers = true
		}
	}
	defer func() {
		if trailers {
			h["Te"] = []string{"trailers"}
		}
	}()
	// A header decoded from the wire keeps the peer's spelling of each
	// name, so names are compared in canonical form: "connection" and
	// "transfer-encoding" are hop-by-hop too.
	var named []string
	for k, vs := range h {
		if textproto.CanonicalMIMEHeaderKey(k) != "Connection" {
			continue
		}
		for _, v := range vs {
			for name := range strings.SplitSeq(v, ",") {
				if name = textproto.TrimString(name); name != "" {
					named = append(named, textproto.CanonicalMIMEHeaderKey(name))
				}
			}
		}
	}
	for k := range h {
		if ck := textproto.CanonicalMIMEHeaderKey(k); slices.Contains(hopByHop, ck) || slices.Contains(named, ck) {
			delete(h, k)
		}
	}
}

// hasToken reports whether a comma-separated header value list holds token,
// ignoring case; a token with the parameter q=0 is refused, as RFC 9110
// section 12.4.2 says, so it does not count.
func hasToken(vs []string, token string) bool {
	for _, v := range vs {
		for t := range strings.SplitSeq(v, ",") {
			t, params, _ := strings.Cut(t, ";")
			if !strings.EqualFold(textproto.TrimString(t), token) {
				continue
			}
			q := strings.ReplaceAll(strings.ToLower(params), " ", "")
			if q == "q=0" || strings.HasPrefix(q, "q=0.") && strings.Trim(q[4:], "0") == "" {
				continue
			}
			return true
		}
	}
	return false
}
