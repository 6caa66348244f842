package messages_test

import (
	"crypto"
	"crypto/elliptic"
	"strconv"
	"testing"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// benchMessages has one message of each type at a realistic size.
func benchMessages(b testing.TB) []sample {
	b.Helper()
	id := messages.NewID()
	host := "sd5mv7vjwfkwngcub5ymael2elvdppk46pwtyryjhqlqokbljoeq.tunnel.example"
	// Ten header names, as a browser sends them.
	reqHeader := messages.Header{
		"Accept":            {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Accept-Encoding":   {"gzip, deflate, br"},
		"Accept-Language":   {"en-GB,en;q=0.9"},
		"Content-Type":      {"application/json"},
		"Cookie":            {"session=8f14e45fceea167a5a36dedd4bea2543", "theme=dark"},
		"User-Agent":        {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"},
		"X-Forwarded-For":   {"203.0.113.7"},
		"X-Forwarded-Host":  {host},
		"X-Forwarded-Proto": {"https"},
		"X-Request-Id":      {"0f8fad5b-d9cb-469f-a165-70867728950e"},
	}
	respHeader := messages.Header{
		"Cache-Control":  {"no-store"},
		"Content-Length": {strconv.Itoa(400 << 10)},
		"Content-Type":   {"application/octet-stream"},
		"Date":           {"Mon, 23 Nov 2026 19:41:00 GMT"},
		"Set-Cookie":     {"a=1; Path=/; HttpOnly", "b=2; Path=/; Secure"},
	}
	body := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i)
		}
		return p
	}
	key := rfc8037Key(b)
	jws := mustSign(b, key, testChallenge, messages.RegistrationClaims{Token: "s3cret"})
	req := &messages.HTTPRequest{ID: id, Body: true, Window: messages.InitialWindow, Method: "POST", URI: "/api/v1/items?page=2", Host: host, Header: reqHeader}
	credit := messages.Encode(&messages.Credit{ID: id, Increment: messages.InitialWindow / 4})
	// What a busy connection's writer packs together: credit for several
	// streams and a small body.
	batch := [][]byte{credit, credit, credit, credit, messages.Encode(&messages.Data{ID: id, End: true, Data: body(1 << 10)})}
	return []sample{
		{"Challenge", &messages.Challenge{Nonce: "q0lA9zXcVw2gXKQ3PHrKsQ", Domain: "tunnel.example"}},
		{"RegistrationRequest", &messages.RegistrationRequest{JWS: jws}},
		{"RegistrationResponse", &messages.RegistrationResponse{
			Hostname: host, URL: "https://" + host, PingMillis: 10000, TimeoutMillis: 30000, IdleTimeoutMillis: 60000,
			MaxBody: 500_000, MaxWindow: 8 << 20, ConnBudget: 16 << 20,
		}},
		{"HTTPRequest", req},
		{"HTTPResponse", &messages.HTTPResponse{ID: id, Body: true, Status: 200, Header: respHeader}},
		{"WSRequest", &messages.WSRequest{ID: id, Window: messages.InitialWindow, URI: "/socket", Host: host, Header: messages.Header{"Origin": {"https://" + host}, "Cookie": {"session=8f14e45fceea167a5a36dedd4bea2543"}}, Subprotocols: []string{"graphql-transport-ws", "graphql-ws"}}},
		{"WSResponse", &messages.WSResponse{ID: id, Status: 101, Subprotocol: "graphql-transport-ws"}},
		{"WSMessage", &messages.WSMessage{ID: id, Opcode: messages.OpBinary, Fin: true, Data: body(1 << 10)}},
		{"WSTeardown", &messages.WSTeardown{ID: id, Code: 1000, Reason: "normal closure"}},
		{"Ping", &messages.Ping{}},
		{"Error", &messages.Error{ID: id, Code: messages.CodeRateLimited, RetryAfter: 1, Reason: "rate limited"}},
		{"Batch", &messages.Batch{Frames: batch}},
		{"Envelope", &messages.Envelope{ReplyTo: "proxy-7f3a", Conn: "proxy-7f3a/conn-19", Frame: messages.Encode(req)}},
		{"Takeover", &messages.Takeover{Hostname: host, Successor: "inst/conn"}},
		{"Revoke", &messages.Revoke{Kind: "name", Value: "myapp"}},
		{"Reply", &messages.Reply{Conn: "inst/conn", Frame: messages.Encode(&messages.Ping{})}},
		// A full data frame: the unit a body moves in.
		{"Data", &messages.Data{ID: id, Data: body(messages.MaxData)}},
		{"Credit", &messages.Credit{ID: id, Increment: messages.InitialWindow / 4}},
		{"Trailer", &messages.Trailer{ID: id, Header: messages.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"OK"}}}},
		{"TCPRequest", &messages.TCPRequest{ID: id, Window: messages.InitialWindow, Host: host, Token: "8f14e45fceea167a"}},
		{"TCPResponse", &messages.TCPResponse{ID: id}},
	}
}

// The benchmarks cover every message type, so a slow new one shows.
func TestBenchMessagesCoverEveryType(t *testing.T) {
	have := map[messages.Type]bool{}
	for _, s := range benchMessages(t) {
		have[s.msg.Type()] = true
	}
	for _, tc := range pinnedTypes {
		if !have[tc.typ] {
			t.Errorf("no benchmark message of type %s", tc.name)
		}
	}
}

// BenchmarkEncode appends into a reused buffer: the path a connection's
// writer takes.
func BenchmarkEncode(b *testing.B) {
	for _, s := range benchMessages(b) {
		b.Run(s.name, func(b *testing.B) {
			buf := messages.Encode(s.msg)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf = messages.Append(buf[:0], s.msg)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, s := range benchMessages(b) {
		b.Run(s.name, func(b *testing.B) {
			frame := messages.Encode(s.msg)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := messages.Decode(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchKeys(b *testing.B) []struct {
	name string
	key  crypto.Signer
} {
	return []struct {
		name string
		key  crypto.Signer
	}{
		{"Ed25519", rfc8037Key(b)},
		{"ES256", newECDSA(b, elliptic.P256())},
	}
}

func BenchmarkSignRegistration(b *testing.B) {
	for _, k := range benchKeys(b) {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := messages.SignRegistration(k.key, testChallenge, messages.RegistrationClaims{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyRegistration(b *testing.B) {
	for _, k := range benchKeys(b) {
		b.Run(k.name, func(b *testing.B) {
			jws := mustSign(b, k.key, testChallenge, messages.RegistrationClaims{})
			b.SetBytes(int64(len(jws)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := messages.VerifyRegistration(jws, testChallenge); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
