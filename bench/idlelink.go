package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// The idle-link measurement of S4: what an idle tunnel's pings cost on
// the wire. An ordinary client connects to a proxy started with a short
// ping interval through a relay that parses the websocket frames going
// each way; once registered, the relay counts the frames and their bytes
// (websocket framing and the client's masking included; TCP/IP headers
// are not visible here) for idleLinkWindow. Every frame of an idle link
// should be a keyhole Ping, and each side should send about one per ping
// interval.

// idleLinkPing is the proxy's --ping for the measurement: short, so a few
// seconds hold many intervals. Nothing in the ping logic depends on the
// interval's length but the timers' resolution. Not shorter: a client
// silent for two intervals is dropped, and a loaded machine can stall a
// process for a few hundred milliseconds.
const idleLinkPing = 500 * time.Millisecond

// errLinkDropped is the idle link's connection going down during the
// measurement: the machine stalled the client or the proxy for two ping
// intervals. The measurement is then tried once more.
var errLinkDropped = errors.New("idle link dropped")

// idleLinkWindow is how long the idle link is watched.
func idleLinkWindow(quick bool) time.Duration {
	if quick {
		return 6 * idleLinkPing
	}
	return 20 * idleLinkPing
}

// wsTap parses one direction of a websocket connection from the bytes
// that pass, and counts its frames while on.
type wsTap struct {
	mu      sync.Mutex
	head    []byte // the HTTP head, until its end is seen
	inHead  bool
	pending []byte // an incomplete frame header, or a small frame
	skip    int64  // payload bytes of a large frame still to pass
	on      bool

	frames, wire, pings int64
}

func newWSTap() *wsTap { return &wsTap{inHead: true} }

// smallFrame is the largest payload the tap buffers to look inside;
// larger frames are counted and passed over.
const smallFrame = 64

// feed takes the next bytes of the direction.
func (t *wsTap) feed(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inHead {
		t.head = append(t.head, p...)
		i := bytes.Index(t.head, []byte("\r\n\r\n"))
		if i < 0 {
			if len(t.head) > 64<<10 {
				t.head = t.head[len(t.head)-4:]
			}
			return
		}
		p = t.head[i+4:]
		t.head, t.inHead = nil, false
	}
	t.pending = append(t.pending, p...)
	for {
		if t.skip > 0 {
			n := min(t.skip, int64(len(t.pending)))
			t.skip -= n
			t.pending = t.pending[n:]
			if t.skip > 0 {
				break
			}
		}
		if !t.frame() {
			break
		}
	}
	// Keep what is left at the start of the buffer.
	t.pending = append(t.pending[:0:0], t.pending...)
}

// frame consumes one frame's header from pending if all of it is there,
// and its payload too when small (a large one's payload is skipped as it
// passes). Caller holds mu.
func (t *wsTap) frame() bool {
	b := t.pending
	if len(b) < 2 {
		return false
	}
	masked := b[1]&0x80 != 0
	n := int64(b[1] & 0x7f)
	hlen := 2
	switch n {
	case 126:
		hlen += 2
	case 127:
		hlen += 8
	}
	if masked {
		hlen += 4
	}
	if len(b) < hlen {
		return false
	}
	switch n {
	case 126:
		n = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		n = int64(binary.BigEndian.Uint64(b[2:10]))
	}
	if n > smallFrame {
		t.count(int64(hlen)+n, false)
		t.pending = b[hlen:]
		t.skip = n
		return true
	}
	if int64(len(b)) < int64(hlen)+n {
		return false
	}
	payload := append([]byte(nil), b[hlen:int64(hlen)+n]...)
	if masked {
		key := b[hlen-4 : hlen]
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	binaryFrame := b[0]&0x0f == 2
	t.count(int64(hlen)+n, binaryFrame && bytes.Equal(payload, messages.Encode(&messages.Ping{})))
	t.pending = b[int64(hlen)+n:]
	return true
}

func (t *wsTap) count(wire int64, ping bool) {
	if !t.on {
		return
	}
	t.frames++
	t.wire += wire
	if ping {
		t.pings++
	}
}

// set starts (or stops) counting, from zero when started.
func (t *wsTap) set(on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if on {
		t.frames, t.wire, t.pings = 0, 0, 0
	}
	t.on = on
}

func (t *wsTap) counts() (frames, wire, pings int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.frames, t.wire, t.pings
}

// tapRelay forwards every connection it accepts to target, through one
// tap per direction (shared by all connections: the measurement has one).
type tapRelay struct {
	ln       net.Listener
	target   string
	up, down *wsTap // client → proxy, proxy → client
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	accepted int // connections so far: the client reconnected if more than one
}

func startTapRelay(target string) (*tapRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &tapRelay{ln: ln, target: target, up: newWSTap(), down: newWSTap()}
	r.wg.Go(r.accept)
	return r, nil
}

func (r *tapRelay) addr() string { return r.ln.Addr().String() }

func (r *tapRelay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, u)
		r.accepted++
		r.mu.Unlock()
		pipe := func(dst, src net.Conn, tap *wsTap) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					tap.feed(buf[:n])
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			dst.Close()
			src.Close()
		}
		r.wg.Go(func() { pipe(u, c, r.up) })
		r.wg.Go(func() { pipe(c, u, r.down) })
	}
}

// close stops the relay and every connection through it.
func (r *tapRelay) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// idleLink measures one idle tunnel's pings on mode's bus.
func (h *harness) idleLink(ctx context.Context, round int, t *tunnel) error {
	r := h.rep
	upB, downB := r.fig("S4", "idle link: client → proxy bytes per ping", "B"), r.fig("S4", "idle link: proxy → client bytes per ping", "B")
	upN, downN := r.fig("S4", "idle link: client pings per ping interval", ""), r.fig("S4", "idle link: proxy pings per ping interval", "")
	total := r.fig("S4", "idle link: bytes/s both ways at --ping 10s", "B/s")
	for _, f := range []*figure{upB, downB, upN, downN, total} {
		r.set(f, t.mode, round, math.NaN())
	}
	p, addr, err := h.startProxy(ctx, "S4 idle-link proxy ("+t.mode+")", t.busURL, "--ping", idleLinkPing.String())
	if err != nil {
		return err
	}
	defer func() {
		p.stop()
		h.procs.forget(p)
	}()
	relay, err := startTapRelay(addr)
	if err != nil {
		return err
	}
	defer relay.close()
	c, _, err := h.startClient(ctx, "S4 idle-link client ("+t.mode+")", relay.addr())
	if err != nil {
		return err
	}
	defer func() {
		c.stop()
		h.procs.forget(c)
	}()
	// Let the registration's frames pass, then count.
	window := idleLinkWindow(h.o.quick)
	settle := time.NewTimer(2 * idleLinkPing)
	defer settle.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-settle.C:
	}
	relay.up.set(true)
	relay.down.set(true)
	start := time.Now()
	measure := time.NewTimer(window)
	defer measure.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-measure.C:
	}
	relay.up.set(false)
	relay.down.set(false)
	elapsed := time.Since(start)
	if c.exited() || p.exited() {
		return fmt.Errorf("idle link: %w", firstExited(c, p).exitError())
	}
	relay.mu.Lock()
	accepted := relay.accepted
	relay.mu.Unlock()
	if accepted != 1 {
		// The taps parse one connection's stream; a second one's
		// handshake would be read as frames.
		return fmt.Errorf("%w: the client connected %d times", errLinkDropped, accepted)
	}
	intervals := elapsed.Seconds() / idleLinkPing.Seconds()
	var perSecond float64
	for _, d := range []struct {
		tap          *wsTap
		bytes, count *figure
		who          string
	}{{relay.up, upB, upN, "client → proxy"}, {relay.down, downB, downN, "proxy → client"}} {
		frames, wire, pings := d.tap.counts()
		if frames != pings {
			r.note("S4 idle link, %s, round %d: %d of the %d frames %s were not Pings", modeLabel[t.mode], round+1, frames-pings, frames, d.who)
		}
		if frames == 0 {
			return fmt.Errorf("idle link: no frame %s in %v", d.who, elapsed.Round(time.Millisecond))
		}
		r.set(d.bytes, t.mode, round, float64(wire)/float64(frames))
		r.set(d.count, t.mode, round, float64(frames)/intervals)
		// The same pattern at the default interval.
		perSecond += float64(wire) / intervals / simPing.Seconds()
	}
	r.set(total, t.mode, round, perSecond)
	h.logf("S4 idle link (%s): %.1f B per ping up, %.1f down, %.2f and %.2f pings per interval", t.mode,
		upB.get(t.mode, round), downB.get(t.mode, round), upN.get(t.mode, round), downN.get(t.mode, round))
	return nil
}

func firstExited(ps ...*proc) *proc {
	for _, p := range ps {
		if p.exited() {
			return p
		}
	}
	return ps[0]
}
