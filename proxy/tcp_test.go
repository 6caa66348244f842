package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/client"
	"github.com/keyhole-tunnel/keyhole/internal/testenv"
	"github.com/keyhole-tunnel/keyhole/internal/tunneltest"
	"github.com/keyhole-tunnel/keyhole/messages"
	"github.com/keyhole-tunnel/keyhole/proxy"
)

// echoTarget is a TCP service that echoes until EOF and then half-closes.
func echoTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// freeRange returns two consecutive ports of 127.0.0.1 that were free a
// moment ago.
func freeRange(t *testing.T) (int, int) {
	t.Helper()
	for range 20 {
		p := testenv.FreePort(t)
		if p == 65535 {
			continue
		}
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			ln.Close()
			return p, p + 1
		}
	}
	t.Fatal("no two consecutive free ports")
	return 0, 0
}

// runRefused runs c, which the proxy must refuse, and returns the reason.
func runRefused(t *testing.T, env *tunneltest.Env, c *client.Client) string {
	t.Helper()
	c.Proxy, c.Key, c.Logger = env.ProxyURL(), tunneltest.NewKey(t), tunneltest.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var refused *client.RefusedError
	if err := c.Run(ctx); !errors.As(err, &refused) {
		t.Fatalf("Run = %v, want the registration refused", err)
	}
	return refused.Reason
}

// echoOn checks that what is sent to addr comes back, with the
// half-close.
func echoOn(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "through the public port")
	c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "through the public port" {
		t.Fatalf("echo on %s: %q, %v", addr, b, err)
	}
}

// Public TCP ports: the first and the last port of the range can be had,
// one outside it, one taken by another tunnel and one on a proxy without
// a range are refused with the reason; the port closes with its client.
func TestTCPPublicPorts(t *testing.T) {
	first, last := freeRange(t)
	env := tunneltest.StartProxy(t, proxy.Config{TCPPorts: proxy.PortRange{First: first, Last: last}, TCPBind: "127.0.0.1"})
	target := echoTarget(t)
	tunnels := map[int]*tunneltest.Tunnel{}
	for _, port := range []int{first, last} {
		t.Run(fmt.Sprintf("port %d in range", port), func(t *testing.T) {
			tunnels[port] = env.Connect(&client.Client{TCP: &client.TCPService{Target: target, RemotePort: port}})
			echoOn(t, fmt.Sprintf("127.0.0.1:%d", port))
		})
	}
	for _, tc := range []struct {
		name   string
		env    *tunneltest.Env
		svc    client.TCPService
		reason string
	}{
		{"outside", env, client.TCPService{Target: target, RemotePort: last + 1}, fmt.Sprintf("port %d is outside this proxy's public TCP ports %d-%d", last+1, first, last)},
		{"below", env, client.TCPService{Target: target, RemotePort: first - 1}, fmt.Sprintf("port %d is outside this proxy's public TCP ports %d-%d", first-1, first, last)},
		{"taken", env, client.TCPService{Target: target, RemotePort: first}, fmt.Sprintf("port %d is taken by another tunnel", first)},
		{"no range", tunneltest.StartProxy(t, proxy.Config{}), client.TCPService{Target: target, RemotePort: first}, "this proxy exposes no public TCP ports"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runRefused(t, tc.env, &client.Client{TCP: &tc.svc}); got != tc.reason {
				t.Fatalf("refused with %q, want %q", got, tc.reason)
			}
		})
	}
	t.Run("closes with its client", func(t *testing.T) {
		if tunnels[last] == nil {
			t.Skip("the tunnel did not start")
		}
		tunnels[last].Stop()
		tunneltest.Eventually(t, 10*time.Second, "the port stayed open after its client left", func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", last))
			if err == nil {
				c.Close()
			}
			return err != nil
		})
	})
	t.Run("visitor token", func(t *testing.T) {
		c := &client.Client{Proxy: env.ProxyURL(), Key: tunneltest.NewKey(t), TCP: &client.TCPService{Target: target, RemotePort: first, VisitorToken: "x"}}
		if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot be had with a visitor token") {
			t.Fatalf("Run = %v, want it refused by the client", err)
		}
	})
}

// rawTCPTunnel registers a hand-driven client as a TCP tunnel; it
// answers nothing unless the test does.
func rawTCPTunnel(t *testing.T, env *tunneltest.Env) *rawConn {
	t.Helper()
	rc := dialRaw(t, env)
	jws, err := messages.SignRegistration(newEd25519(t), rc.ch, messages.RegistrationClaims{TCP: true})
	if err != nil {
		t.Fatal(err)
	}
	return rc.registerJWS(jws)
}

// The visitor endpoint takes only keyhole visitors, and closes the
// connection of one that breaks the protocol, with the reason.
func TestTCPVisitorEndpoint(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	// A tunnel that never answers: the visitor's data stays where it
	// arrived, in its stream's window.
	host := strings.Split(rawTCPTunnel(t, env).host, ":")[0]
	endpoint := "ws://" + env.Addr + proxy.TCPPath

	t.Run("refused handshakes", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+env.Addr+proxy.TCPPath, nil)
		if r := do(env, req); r.status != http.StatusNotFound {
			t.Errorf("plain GET: %d, want 404", r.status)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, resp, err := websocket.Dial(ctx, endpoint, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("handshake with an Origin: %v, %v; want 403", resp, err)
		}
	})

	id := messages.ID{7}
	open := messages.Encode(&messages.TCPRequest{ID: id, Window: messages.InitialWindow, Host: host})
	overCredit := [][]byte{open}
	for range messages.InitialWindow/messages.MaxData + 1 {
		overCredit = append(overCredit, messages.Encode(&messages.Data{ID: id, Data: make([]byte, messages.MaxData)}))
	}
	for _, tc := range []struct {
		name   string
		typ    websocket.MessageType
		frames [][]byte // one message: a Batch of these
		reason string
	}{
		{"text message", websocket.MessageText, [][]byte{[]byte("hello")}, "text message on a binary protocol"},
		{"message only a client sends", websocket.MessageBinary, [][]byte{messages.Encode(&messages.HTTPResponse{ID: id, Status: 200})}, "unexpected HTTPResponse"},
		{"zero ID", websocket.MessageBinary, [][]byte{messages.Encode(&messages.TCPRequest{Host: host})}, "TCPRequest with the zero ID"},
		{"ID in use", websocket.MessageBinary, [][]byte{open, open}, "TCPRequest for an ID in use"},
		{"data beyond the stream's credit", websocket.MessageBinary, overCredit, "data beyond the stream's credit"},
		{"malformed", websocket.MessageBinary, [][]byte{{messages.Version, byte(messages.TypeTCPRequest), 1}}, "malformed frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, endpoint, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			ws.SetReadLimit(-1)
			msg := tc.frames[0]
			if len(tc.frames) > 1 {
				msg = messages.AppendBatch(nil, tc.frames)
			}
			if err := ws.Write(ctx, tc.typ, msg); err != nil {
				t.Fatal(err)
			}
			for {
				_, _, err := ws.Read(ctx)
				if err == nil {
					continue // the stream's answer, before the verdict
				}
				var ce websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != tc.reason {
					t.Fatalf("connection ended with %v, want 1008 %q", err, tc.reason)
				}
				return
			}
		})
	}
}

// The holder checks a TCP tunnel's client as it checks an HTTP one's: the
// answer a TCP stream takes, and no data before it.
func TestTCPHolderChecksClient(t *testing.T) {
	env := tunneltest.StartProxy(t, proxy.Config{})
	for _, tc := range []struct {
		name   string
		answer func(rc *rawConn, id messages.ID)
		reason string // the 1008's; "" for an answer that works
	}{
		{"an HTTP answer", func(rc *rawConn, id messages.ID) {
			rc.send(&messages.HTTPResponse{ID: id, Status: 200})
		}, "message for an ID this connection does not own"},
		{"a WebSocket answer", func(rc *rawConn, id messages.ID) {
			rc.send(&messages.WSResponse{ID: id, Status: 101})
		}, "message for an ID this connection does not own"},
		{"data before the answer", func(rc *rawConn, id messages.ID) {
			rc.send(&messages.Data{ID: id, Data: []byte("early")})
		}, "message for an ID this connection does not own"},
		{"two answers", func(rc *rawConn, id messages.ID) {
			rc.send(&messages.TCPResponse{ID: id})
			rc.send(&messages.TCPResponse{ID: id})
		}, "message for an ID this connection does not own"},
		{"in order", func(rc *rawConn, id messages.ID) {
			rc.send(&messages.TCPResponse{ID: id})
			rc.send(&messages.Data{ID: id, End: true, Data: []byte("hello")})
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := rawTCPTunnel(t, env)
			host := strings.Split(rc.host, ":")[0]
			v := &client.Visitor{Proxy: env.ProxyURL()}
			defer v.Close()
			type dialed struct {
				c   net.Conn
				err error
			}
			done := make(chan dialed, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := v.Dial(ctx, host, "tok")
				done <- dialed{c, err}
			}()
			m := rc.next()
			req, ok := m.(*messages.TCPRequest)
			if !ok || req.Host != host || req.Token != "tok" || req.Window != messages.InitialWindow {
				t.Fatalf("the client got %T %+v, want a TCPRequest for %s with the token", m, m, host)
			}
			tc.answer(rc, req.ID)
			d := <-done
			if tc.reason != "" {
				wantClose(t, rc.closed(10*time.Second), websocket.StatusPolicyViolation, tc.reason)
				if d.err == nil {
					d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.ReadAll(d.c); err == nil {
						t.Fatal("the visitor's stream ended in order")
					}
					d.c.Close()
				}
				return
			}
			if d.err != nil {
				t.Fatal(d.err)
			}
			defer d.c.Close()
			d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if b, err := io.ReadAll(d.c); err != nil || string(b) != "hello" {
				t.Fatalf("visitor read %q, %v", b, err)
			}
		})
	}
}
