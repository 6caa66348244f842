package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/messages"
)

// TCP tunnels. A TCP stream is a stream of Data frames both ways, opened
// with a TCPRequest; a visitor reaches it through the visitor endpoint
// (messages.TCPPath): one websocket per visitor, on which the visitor
// opens a stream per TCP connection. The instance that holds the visitor's
// websocket opens a stream of its own to the tunnel's client, through the
// bus like any visitor's request, and copies between the two, each under
// its own credit. See docs/PROTOCOL.md section 16.

// TCPPath is where visitors of TCP tunnels connect, on any host that is
// not a tunnel's.
const TCPPath = messages.TCPPath

const (
	// visitorPing is how often each side of a visitor connection pings
	// when it has sent nothing else; silence for twice as long ends it.
	// It is fixed by the protocol, since the visitor learns no settings.
	visitorPing = 10 * time.Second
	// maxVisitorStreams bounds the streams open at once on one visitor
	// connection; more are refused.
	maxVisitorStreams = 1024
)

// serveTCPVisitor accepts a visitor's websocket and serves the TCP
// streams it opens until it closes.
func (p *Proxy) serveTCPVisitor(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" {
		// A page in a browser must not reach TCP services with its
		// visitor's address (and so past a tunnel's IP rules).
		publicError(w, http.StatusForbidden)
		return
	}
	if !isWebSocketUpgrade(r) {
		publicError(w, http.StatusNotFound)
		return
	}
	if p.isDraining() || !p.track() {
		publicError(w, http.StatusServiceUnavailable)
		return
	}
	defer p.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	ws.SetReadLimit(messages.MaxFrame)
	vc := &visitorConn{
		p:       p,
		ws:      ws,
		addr:    p.visitorAddr(r),
		log:     p.log.With("visitor", r.RemoteAddr),
		out:     stream.NewWriter(messages.InitialConnWindow, maxControlQueue),
		in:      stream.NewConnWindow(messages.InitialConnWindow, maxConnWindow),
		budget:  stream.NewBudget(int64(p.cfg.ConnWindowBudget), p.budget),
		streams: make(map[messages.ID]*stream.Stream),
	}
	vc.ctx, vc.cancel = context.WithCancel(p.ctx)
	vc.run()
}

// visitorConn is one visitor's websocket. Its streams are named by the
// IDs the visitor chose; each is copied to a stream of the proxy's own to
// the tunnel.
type visitorConn struct {
	p        *Proxy
	ws       *websocket.Conn
	addr     netip.Addr // for the tunnels' IP rules
	log      *slog.Logger
	out      *stream.Writer
	in       *stream.ConnWindow
	budget   *stream.Budget
	lastRead atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	legs   sync.WaitGroup

	mu      sync.Mutex
	streams map[messages.ID]*stream.Stream
}

// run serves the connection until either side ends it, and returns once
// every stream on it is over.
func (vc *visitorConn) run() {
	vc.lastRead.Store(time.Now().UnixNano())
	writeDone := make(chan struct{})
	go func() {
		defer close(writeDone)
		vc.writeLoop()
	}()
	vc.readLoop()
	vc.cancel()
	<-writeDone
	vc.out.Close()
	vc.legs.Wait()
	vc.ws.CloseNow()
}

// writeLoop is the only writer of the websocket, and its pinger.
func (vc *visitorConn) writeLoop() {
	tick := time.NewTicker(visitorPing / 2)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		select {
		case <-vc.out.Ready():
			if err := vc.out.Flush(vc.write); err != nil {
				vc.ws.CloseNow()
				return
			}
			lastWrite = time.Now()
		case now := <-tick.C:
			if now.Sub(time.Unix(0, vc.lastRead.Load())) > 2*visitorPing {
				vc.ws.CloseNow()
				return
			}
			if now.Sub(lastWrite) >= visitorPing {
				if vc.write(messages.Encode(&messages.Ping{})) != nil {
					vc.ws.CloseNow()
					return
				}
				lastWrite = now
			}
		case <-vc.ctx.Done():
			if vc.p.ctx.Err() != nil {
				vc.ws.Close(websocket.StatusGoingAway, "proxy shutting down")
			}
			return
		}
	}
}

func (vc *visitorConn) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(vc.ctx, writeTimeout)
	defer cancel()
	return vc.ws.Write(ctx, websocket.MessageBinary, frame)
}

// readLoop reads the visitor's frames until the websocket ends or the
// visitor breaks the protocol.
func (vc *visitorConn) readLoop() {
	for {
		typ, buf, err := wsbuf.Read(vc.ctx, vc.ws)
		if err != nil {
			return
		}
		vc.lastRead.Store(time.Now().UnixNano())
		if typ != websocket.MessageBinary {
			buf.Release()
			vc.violation("text message on a binary protocol")
			return
		}
		err = messages.EachFrame(buf.Bytes(), func(_ []byte, m messages.Message) error { return vc.handle(m) })
		buf.Release()
		if err != nil {
			var v violationError
			if !errors.As(err, &v) {
				v = "malformed frame"
			}
			vc.violation(string(v))
			return
		}
	}
}

// violationError is a protocol violation by the visitor; it closes the
// connection with 1008 and itself as the reason.
type violationError string

func (e violationError) Error() string { return string(e) }

func (vc *visitorConn) violation(reason string) {
	vc.log.Info("tcp visitor: protocol violation", "reason", reason)
	vc.ws.Close(websocket.StatusPolicyViolation, reason)
}

// handle processes one frame from the visitor. The frame's memory is
// reused afterwards: whatever outlives the call is copied.
func (vc *visitorConn) handle(m messages.Message) error {
	switch m := m.(type) {
	case *messages.Ping:
		return nil
	case *messages.TCPRequest:
		return vc.open(m)
	case *messages.Credit:
		if m.ID.IsZero() {
			vc.out.Credit(int(m.Increment))
			return nil
		}
		_, err := vc.deliver(m.ID, m) // credit may cross a stream's end: unknown is fine
		return err
	case *messages.Error:
		if m.ID.IsZero() {
			return nil
		}
		_, err := vc.deliver(m.ID, m)
		return err
	case *messages.Data:
		n := len(m.Data)
		if n > messages.MaxData {
			return violationError("data frame larger than the protocol allows")
		}
		if !vc.in.Received(n) {
			return violationError("data beyond the connection's credit")
		}
		m.Data = stream.CopyData(m.Data)
		found, err := vc.deliver(m.ID, m)
		if !found || err != nil {
			// Late, for a stream the proxy reset: dropped.
			stream.Release(m.Data)
		}
		if inc := vc.in.Passed(n); inc > 0 {
			vc.out.Control(messages.Encode(&messages.Credit{Increment: inc}))
		}
		return err
	}
	return violationError("unexpected " + m.Type().String())
}

// deliver hands a frame to the stream it names and reports whether there
// was one. Data beyond the stream's credit is the visitor's violation.
func (vc *visitorConn) deliver(id messages.ID, m messages.Message) (bool, error) {
	vc.mu.Lock()
	st := vc.streams[id]
	vc.mu.Unlock()
	if st == nil {
		return false, nil
	}
	if err := st.Receive(m); err != nil {
		return true, violationError("data beyond the stream's credit")
	}
	return true, nil
}

// open starts a stream the visitor asked for.
func (vc *visitorConn) open(m *messages.TCPRequest) error {
	if m.ID.IsZero() {
		return violationError("TCPRequest with the zero ID")
	}
	vc.mu.Lock()
	if _, dup := vc.streams[m.ID]; dup {
		vc.mu.Unlock()
		return violationError("TCPRequest for an ID in use")
	}
	if len(vc.streams) >= maxVisitorStreams {
		vc.mu.Unlock()
		vc.out.Control(messages.Encode(&messages.Error{ID: m.ID, Code: messages.CodeOverloaded, Reason: "too many streams on this connection"}))
		return nil
	}
	st := stream.New(m.ID, visitorSender{vc, m.ID}, stream.Config{
		SendCredit: int(m.Window),
		MaxWindow:  int(vc.p.cfg.MaxWindow),
		Budget:     vc.budget,
	})
	vc.streams[m.ID] = st
	vc.mu.Unlock()
	vc.legs.Go(func() {
		defer func() {
			vc.mu.Lock()
			delete(vc.streams, m.ID)
			vc.mu.Unlock()
			st.Close()
			if st.Err() != nil {
				vc.out.Forget(m.ID)
			}
		}()
		vc.p.serveTCPStream(vc.ctx, m, st, vc.addr, vc.log)
	})
	return nil
}

// visitorSender is how one stream's frames reach the visitor.
type visitorSender struct {
	vc *visitorConn
	id messages.ID
}

func (s visitorSender) Send(m messages.Message) error {
	if !s.vc.out.Send(m) {
		return errVisitorGone
	}
	return nil
}

func (s visitorSender) SendData(m messages.Message, n int) error {
	if !s.vc.out.Data(s.id, stream.EncodeData(m), n) {
		return errVisitorGone
	}
	return nil
}

// serveTCPStream carries one TCP stream of a visitor (the visitor's end,
// vside, named as the visitor named it) to the tunnel m.Host names: it
// opens a stream of its own to the tunnel's client, passes the client's
// answer on, and copies both ways until both directions end or either side
// resets. A refusal, the proxy's or the client's, reaches the visitor as a
// reset with a reason.
func (p *Proxy) serveTCPStream(ctx context.Context, m *messages.TCPRequest, vside *stream.Stream, addr netip.Addr, log *slog.Logger) {
	// The visitor's reset ends the wait for the tunnel's answer too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-vside.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	host := normalizeHost(m.Host)
	label, ok := p.tunnelLabel(host)
	if !ok {
		vside.Reset(messages.CodeRefused, "no tunnel has this hostname")
		return
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		rt, status := p.lookup(ctx, label)
		if status != 0 {
			vside.Reset(statusCode(status), tcpRefusal(status))
			return
		}
		if vp := rt.policy; vp != nil && (len(vp.allow) > 0 || len(vp.deny) > 0) && !vp.addrAdmitted(addr) {
			vside.Reset(messages.CodeRefused, "this tunnel does not admit your address")
			return
		}
		head := &messages.TCPRequest{ID: messages.NewID(), Window: messages.InitialWindow, Host: host, Token: m.Token}
		vs := p.openStream(head.ID, label, rt.holder, stream.Config{SendCredit: messages.InitialWindow})
		retry, err := p.relayTCP(ctx, vside, vs, head, rt.holder, attempt == 0)
		p.closeStream(vs)
		if !retry {
			attrs := []any{"req", head.ID.String(), "host", label, "duration", time.Since(start).Round(time.Millisecond)}
			if err != nil {
				attrs = append(attrs, "err", err)
			}
			log.Info("tcp stream", attrs...)
			return
		}
		// The holder the cache named is gone and nothing has moved yet:
		// once more, with the registry's answer.
		p.forgetRoute(label, rt.holder)
	}
}

// relayTCP runs one attempt of serveTCPStream against holder. It reports
// retry when the holder turned out to be gone before it answered, and
// mayRetry allows another attempt; and why the stream ended, if not in
// order.
func (p *Proxy) relayTCP(ctx context.Context, vside *stream.Stream, vs *visitorStream, head *messages.TCPRequest, holder string, mayRetry bool) (retry bool, _ error) {
	retry, refused := p.openTCP(ctx, vs, head, holder, mayRetry)
	switch {
	case retry:
		return true, nil
	case refused != nil:
		vside.Reset(refused.Code, refused.Reason)
		return false, refused
	}
	if err := vside.Send(&messages.TCPResponse{ID: vside.ID()}); err != nil {
		vs.Reset(messages.CodeCanceled, "visitor went away")
		return false, err
	}
	// Each direction is one body under its own credit: what one side
	// has not consumed, the other is not given credit for.
	// A failure of either direction ends both: the other may be over
	// already, or waiting for what will never come.
	up := make(chan error, 1)
	go func() {
		_, err := stream.SendBody(ctx, vs.Stream, stream.NewBodyReader(ctx, vside), stream.BodyOptions{})
		if err != nil {
			resetBoth(vside, vs.Stream)
		}
		up <- err
	}()
	_, derr := stream.SendBody(ctx, vside, stream.NewBodyReader(ctx, vs.Stream), stream.BodyOptions{})
	if derr != nil {
		resetBoth(vside, vs.Stream)
	}
	uerr := <-up
	return false, errors.Join(derr, uerr)
}

// openTCP sends head, the TCPRequest of vs, to holder and waits for the
// client's answer. It returns nil once the stream is open; otherwise vs is
// over and refused says why, for the visitor, unless retry says that the
// holder was gone before anything happened and mayRetry allows another
// attempt.
func (p *Proxy) openTCP(ctx context.Context, vs *visitorStream, head *messages.TCPRequest, holder string, mayRetry bool) (retry bool, refused *stream.ResetError) {
	refuse := func(code messages.ErrorCode, reason string) (bool, *stream.ResetError) {
		return false, &stream.ResetError{Code: code, Reason: reason}
	}
	if status := p.publishRequest(ctx, holder, messages.Encode(head)); status != 0 {
		if status == http.StatusBadGateway && mayRetry {
			return true, nil
		}
		return refuse(statusCode(status), tcpRefusal(status))
	}
	m, err := vs.NextWithin(ctx, p.cfg.Timeout)
	if err != nil {
		var reset *stream.ResetError
		switch {
		case errors.As(err, &reset) && reset.Code == messages.CodeGone && !reset.Local && mayRetry:
			return true, nil
		case errors.As(err, &reset):
			return refuse(reset.Code, resetReason(reset))
		case ctx.Err() != nil:
			vs.Reset(messages.CodeCanceled, "visitor went away")
			return refuse(messages.CodeCanceled, "proxy shutting down")
		}
		vs.Reset(messages.CodeCanceled, "timed out")
		return refuse(messages.CodeTimeout, "the tunnel did not answer in time")
	}
	if _, ok := m.(*messages.TCPResponse); !ok {
		vs.Reset(messages.CodeBadResponse, "expected a TCPResponse")
		return refuse(messages.CodeBadResponse, "the tunnel answered badly")
	}
	return false, nil
}

// resetBoth resets whichever of a and b is not reset yet, with the cause
// of the one that is: the peer's code and reason when its peer reset it.
// With neither reset (the proxy is shutting down), both get a reset of the
// proxy's own.
func resetBoth(a, b *stream.Stream) {
	pass := func(from, to *stream.Stream) {
		var reset *stream.ResetError
		if errors.As(from.Err(), &reset) {
			to.Reset(reset.Code, resetReason(reset))
		}
	}
	switch {
	case a.Err() != nil:
		pass(a, b)
	case b.Err() != nil:
		pass(b, a)
	default:
		a.Reset(messages.CodeCanceled, "stream abandoned")
		b.Reset(messages.CodeCanceled, "stream abandoned")
	}
}

// resetReason is the reason passed on for a reset: the peer's own, which
// it gave for the other end to see, or one for what happened here.
func resetReason(r *stream.ResetError) string {
	if !r.Local && r.Reason != "" {
		return r.Reason
	}
	// The proxy's own, or a reason-less code from the holder.
	switch r.Code {
	case messages.CodeUnavailable, messages.CodeGone:
		return "the tunnel went offline"
	case messages.CodeRateLimited:
		return "the tunnel is over its rate limit; retry later"
	case messages.CodeOverloaded:
		return "the tunnel is at its limit of streams; retry later"
	case messages.CodeTimeout:
		return "the tunnel did not answer in time"
	}
	return "stream abandoned"
}

// statusCode maps a status the proxy would answer an HTTP visitor to the
// code of a reset.
func statusCode(status int) messages.ErrorCode {
	switch status {
	case http.StatusNotFound:
		return messages.CodeRefused
	case http.StatusServiceUnavailable:
		return messages.CodeOverloaded
	}
	return messages.CodeUnavailable
}

// tcpRefusal says why a TCP stream could not reach its tunnel, for the
// status an HTTP visitor would have had.
func tcpRefusal(status int) string {
	switch status {
	case http.StatusNotFound:
		return "no tunnel has this hostname"
	case http.StatusBadGateway:
		return "the tunnel is offline"
	default:
		return "the proxy cannot serve this right now; retry later"
	}
}

// Holder's side: the kind of tunnel decides which streams it takes.

// refuseNotTCP answers a TCPRequest for an HTTP tunnel.
func (c *clientConn) refuseNotTCP(replyTo string, id messages.ID, host string) {
	e := &messages.Error{ID: id, Code: messages.CodeRefused, Reason: normalizeHost(host) + " is an HTTP tunnel, not a TCP one"}
	c.p.post(replyTo, messages.AppendReplyMessage(nil, c.holder, e), streamKey(id), nil)
}

// answerNotHTTP answers an HTTP request or WebSocket handshake for a TCP
// tunnel itself, with a page that says what the hostname is and how to
// reach it, rather than a bare 502. The client is never asked.
func (c *clientConn) answerNotHTTP(replyTo string, m messages.Message) {
	var host string
	var id messages.ID
	var body bool
	switch m := m.(type) {
	case *messages.HTTPRequest:
		host, id, body = m.Host, m.ID, m.Method != http.MethodHead
	case *messages.WSRequest:
		host, id = m.Host, m.ID
	}
	host = normalizeHost(host)
	page := []byte(fmt.Sprintf("400 Bad Request: %s is a TCP tunnel, not a website.\n\n"+
		"Reach it with keyhole's client, which listens on a local port for it:\n\n"+
		"    client connect --proxy %s --listen 127.0.0.1:PORT %s\n\n"+
		"then point your program (a database client, ssh, ...) at 127.0.0.1:PORT.\n",
		host, c.p.cfg.PublicURL, host))
	h := messages.Header{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"Content-Length":         {strconv.Itoa(len(page))},
		"X-Content-Type-Options": {"nosniff"},
		"Cache-Control":          {"no-store"},
	}
	reply := func(m messages.Message) {
		c.p.post(replyTo, messages.AppendReplyMessage(nil, c.holder, m), streamKey(id), nil)
	}
	if _, ws := m.(*messages.WSRequest); ws {
		reply(&messages.WSResponse{ID: id, Status: http.StatusBadRequest, Header: h, Body: page})
		return
	}
	reply(&messages.HTTPResponse{ID: id, Body: body, Status: http.StatusBadRequest, Header: h})
	if body {
		reply(&messages.Data{ID: id, End: true, Data: page})
	}
}

// Public TCP ports (Config.TCPPorts): the instance holding a TCP tunnel's
// client listens on the port it asked for while it is connected, and
// carries each connection there as a stream to it, as the visitor
// endpoint does. A port lives on one instance: a load balancer in front
// of several must send it there (see docs/PROTOCOL.md section 16.5).

// PortRange is a range of TCP ports, First to Last inclusive; the zero
// value is none.
type PortRange struct{ First, Last int }

// ParsePortRange reads "20000-20099", or a single port "20000".
func ParsePortRange(s string) (PortRange, error) {
	first, last, ok := strings.Cut(s, "-")
	if !ok {
		last = first
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(first))
	b, err2 := strconv.Atoi(strings.TrimSpace(last))
	r := PortRange{a, b}
	if err1 != nil || err2 != nil || r.check() != nil || r == (PortRange{}) {
		return PortRange{}, fmt.Errorf("invalid port range %q: want FIRST-LAST, like 20000-20099", s)
	}
	return r, nil
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// Contains reports whether port is in r.
func (r PortRange) Contains(port int) bool { return port >= r.First && port <= r.Last && r.First > 0 }

func (r PortRange) check() error {
	if r != (PortRange{}) && (r.First < 1 || r.Last > 65535 || r.First > r.Last) {
		return fmt.Errorf("invalid TCP port range %d-%d", r.First, r.Last)
	}
	return nil
}

// remotePortRefusal says why a registration's public port cannot be had,
// before anything is opened: "" when it asks for none, or may have it.
func (p *Proxy) remotePortRefusal(claims *messages.RegistrationClaims) string {
	port := claims.RemotePort
	switch {
	case port == 0:
		return ""
	case !claims.TCP:
		return "a public port is for TCP tunnels"
	case p.cfg.TCPPorts == (PortRange{}):
		return "this proxy exposes no public TCP ports"
	case !p.cfg.TCPPorts.Contains(port):
		return fmt.Sprintf("port %d is outside this proxy's public TCP ports %v", port, p.cfg.TCPPorts)
	}
	return ""
}

// publicPort is a public TCP port this instance listens on, for the
// connection conn of the tunnel label.
type publicPort struct {
	ln    net.Listener
	label string
	conn  atomic.Pointer[clientConn]
	done  chan struct{} // closed when the accept loop has stopped
}

// openPublicPort listens on the port c's registration asked for, if any,
// and returns "" or why it cannot. A newer connection of the same tunnel
// takes the port over from the older (a reconnect the proxy has not
// noticed yet must not be refused); another tunnel's is refused.
func (p *Proxy) openPublicPort(c *clientConn, port int) string {
	if port == 0 {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if pp := p.ports[port]; pp != nil {
		if pp.label != c.label {
			return fmt.Sprintf("port %d is taken by another tunnel", port)
		}
		pp.conn.Store(c)
		return ""
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(p.cfg.TCPBind, strconv.Itoa(port)))
	if err != nil {
		c.log.Warn("public TCP port", "port", port, "err", err)
		return fmt.Sprintf("port %d cannot be opened on this proxy (in use?)", port)
	}
	pp := &publicPort{ln: ln, label: c.label, done: make(chan struct{})}
	pp.conn.Store(c)
	if p.ports == nil {
		p.ports = make(map[int]*publicPort)
	}
	p.ports[port] = pp
	c.log.Info("public TCP port open", "addr", ln.Addr().String())
	go p.acceptPublic(pp)
	return ""
}

// closePublicPort closes the port c holds, if it still holds one.
func (p *Proxy) closePublicPort(c *clientConn) {
	p.mu.Lock()
	var closing *publicPort
	for port, pp := range p.ports {
		if pp.conn.Load() == c {
			delete(p.ports, port)
			closing = pp
		}
	}
	p.mu.Unlock()
	if closing != nil {
		closing.ln.Close()
		<-closing.done
	}
}

// acceptPublic carries each connection to pp as a stream to its tunnel
// until the port closes.
func (p *Proxy) acceptPublic(pp *publicPort) {
	defer close(pp.done)
	for {
		conn, err := pp.ln.Accept()
		if err != nil {
			return
		}
		if !p.track() {
			conn.Close()
			continue
		}
		go func() {
			defer p.wg.Done()
			defer conn.Close()
			p.servePublic(pp.conn.Load(), conn)
		}()
	}
}

// servePublic carries one connection to a public port to c's client.
func (p *Proxy) servePublic(c *clientConn, conn net.Conn) {
	start := time.Now()
	var addr netip.Addr
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		addr = ta.AddrPort().Addr().Unmap()
	}
	if vp := c.policy; vp != nil && (len(vp.allow) > 0 || len(vp.deny) > 0) && !vp.addrAdmitted(addr) {
		return
	}
	head := &messages.TCPRequest{ID: messages.NewID(), Window: messages.InitialWindow, Host: c.label + "." + p.cfg.Domain}
	vs := p.openStream(head.ID, c.label, c.holder, stream.Config{SendCredit: messages.InitialWindow})
	defer p.closeStream(vs)
	if _, refused := p.openTCP(p.ctx, vs, head, c.holder, false); refused != nil {
		c.log.Info("public TCP connection refused", "from", conn.RemoteAddr().String(), "reason", refused.Reason)
		return
	}
	err := stream.PumpConn(p.ctx, vs.Stream, conn, stream.ConnOptions{ResetCode: messages.CodeCanceled, ResetReason: "the visitor's connection broke"})
	attrs := []any{"req", head.ID.String(), "from", conn.RemoteAddr().String(), "duration", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	c.log.Info("public TCP connection", attrs...)
}
