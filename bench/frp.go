package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// frp, the peer the harness measures keyhole against, is not part of
// keyhole: the harness only runs the frps and frpc binaries that --frp
// points at, built separately from frp's public source.

// frpHost is the custom domain of the harness's frp HTTP proxy; frps's
// vhost port routes on the Host header.
const frpHost = "frp.localhost"

// frpBins are the frp binaries of a run.
type frpBins struct {
	frps, frpc string
	version    string
}

// frpPeer is one frps and one frpc publishing the origin in frp's HTTP
// mode.
type frpPeer struct {
	frps, frpc *proc
	vhost      string // frps's vhostHTTPPort, 127.0.0.1:PORT
}

// findFrp checks that dir holds executable frps and frpc and asks frps for
// its version.
func findFrp(ctx context.Context, dir string) (*frpBins, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b := &frpBins{frps: filepath.Join(abs, "frps"), frpc: filepath.Join(abs, "frpc")}
	for _, bin := range []string{b.frps, b.frpc} {
		st, err := os.Stat(bin)
		if err != nil {
			return nil, fmt.Errorf("--frp %s: %w", dir, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("--frp %s: %s is not an executable file", dir, bin)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.frps, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("--frp %s: frps --version: %w", dir, err)
	}
	b.version = strings.TrimSpace(string(out))
	return b, nil
}

// frpsConfig is frps's TOML configuration: plain TCP from frpc, as the
// harness's keyhole clients speak plain ws://, with a token both sides
// share instead of no authentication at all.
func frpsConfig(bindPort, vhostPort int, token string) string {
	return fmt.Sprintf(`bindAddr = "127.0.0.1"
bindPort = %d
proxyBindAddr = "127.0.0.1"
vhostHTTPPort = %d
log.to = "console"
log.level = "warn"
auth.method = "token"
auth.token = %q
`, bindPort, vhostPort, token)
}

// frpcConfig is frpc's TOML configuration: one HTTP proxy to the origin.
// frpc turns TLS on by default since frp 0.50; keyhole's link in the
// harness is plain, so frp's is too.
func frpcConfig(serverPort, originPort int, token string) string {
	return fmt.Sprintf(`serverAddr = "127.0.0.1"
serverPort = %d
loginFailExit = true
log.to = "console"
log.level = "warn"
auth.method = "token"
auth.token = %q
transport.tls.enable = false

[[proxies]]
name = "bench"
type = "http"
localIP = "127.0.0.1"
localPort = %d
customDomains = [%q]
`, serverPort, token, originPort, frpHost)
}

// startFrp starts frps on two free ports and frpc in front of the origin,
// and waits until a request through frps reaches the origin.
func (h *harness) startFrp(ctx context.Context, name string) (*frpPeer, error) {
	_, port, err := net.SplitHostPort(h.origin)
	if err != nil {
		return nil, err
	}
	originPort, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	h.frpConfigs++
	dir := filepath.Join(h.dir, fmt.Sprintf("frp-%d", h.frpConfigs))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}

	var frps *proc
	var bindPort int
	var vhost string
	var last error
	for range 3 {
		if bindPort, err = freePort(); err != nil {
			return nil, err
		}
		vhostPort, err := freePort()
		if err != nil {
			return nil, err
		}
		if vhostPort == bindPort {
			continue
		}
		conf := filepath.Join(dir, "frps.toml")
		if err := os.WriteFile(conf, []byte(frpsConfig(bindPort, vhostPort, token)), 0o600); err != nil {
			return nil, err
		}
		p, err := h.procs.start(name+" frps", h.frp.frps, []string{"-c", conf}, nil)
		if err != nil {
			return nil, err
		}
		vhost = net.JoinHostPort("127.0.0.1", strconv.Itoa(vhostPort))
		bind := net.JoinHostPort("127.0.0.1", strconv.Itoa(bindPort))
		if last = waitTCP(ctx, bind, p, 15*time.Second); last == nil {
			if last = waitTCP(ctx, vhost, p, 15*time.Second); last == nil {
				frps = p
				break
			}
		}
		p.stop()
		h.procs.forget(p)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if frps == nil {
		if last == nil {
			last = errors.New("no two distinct free ports")
		}
		return nil, fmt.Errorf("frps: %w", last)
	}

	conf := filepath.Join(dir, "frpc.toml")
	if err := os.WriteFile(conf, []byte(frpcConfig(bindPort, originPort, token)), 0o600); err != nil {
		frps.stop()
		h.procs.forget(frps)
		return nil, err
	}
	frpc, err := h.procs.start(name+" frpc", h.frp.frpc, []string{"-c", conf}, nil)
	if err != nil {
		frps.stop()
		h.procs.forget(frps)
		return nil, err
	}
	peer := &frpPeer{frps: frps, frpc: frpc, vhost: vhost}
	// frps answers 404 for a domain no frpc has registered yet.
	hc := newHTTPClient(1)
	defer hc.CloseIdleConnections()
	err = waitFor(ctx, 20*time.Second, name+" frpc to register "+frpHost, []*proc{frps, frpc}, func() bool {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return doRequest(rctx, hc, "GET", "http://"+vhost+"/small", frpHost, nil, smallSize, smallBody) == nil
	})
	if err != nil {
		peer.stop(h.procs)
		return nil, err
	}
	return peer, nil
}

func (p *frpPeer) stop(ps *procSet) {
	p.frpc.stop()
	p.frps.stop()
	ps.forget(p.frpc, p.frps)
}

// target is where loads through p go.
func (p *frpPeer) target(origin *proc) target {
	return target{mode: modeFrp, addr: p.vhost, host: frpHost,
		cpu: map[string][]*proc{"proxy": {p.frps}, "client": {p.frpc}, "origin": {origin}}}
}
