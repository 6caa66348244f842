package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/stream"
	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/messages"
)

const (
	handshakeTimeout = 10 * time.Second
	writeTimeout     = 10 * time.Second
	// maxControlQueue bounds the control frames (response heads, credit,
	// resets) waiting to be written to the proxy; data is bounded by the
	// streams' credit.
	maxControlQueue = 4 << 20
	// maxConnWindow caps the growth of the connection's window: data
	// from the proxy is handed to its stream as soon as it is read.
	maxConnWindow = 16 << 20
	// defaultMaxConcurrent bounds the requests and streams served at once on one
	// connection; more are answered with CodeOverloaded.
	defaultMaxConcurrent = 1024
	// statusReplaced is the close code of a connection whose key
	// registered again elsewhere.
	statusReplaced = websocket.StatusCode(messages.CloseReplaced)
)

// errSessionClosed means a frame could not be queued: the connection is
// over.
var errSessionClosed = errors.New("client: connection to the proxy closed")

// session is one connection to the proxy, from dial to close.
type session struct {
	r          *runner
	log        *slog.Logger
	ws         *websocket.Conn
	conn       *wsbuf.CorkConn // under ws
	started    time.Time
	registered bool
	visitor    bool        // a visitor connection (client connect): no registration, streams opened here
	carried    atomic.Bool // the connection has carried a request
	reg        messages.RegistrationResponse
	out        *stream.Writer     // frames for the proxy
	in         *stream.ConnWindow // the proxy's connection credit towards us
	budget     *stream.Budget     // window growth of this connection's streams
	lastRead   atomic.Int64
	slots      chan struct{}

	ctx    context.Context // ends when the session ends
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	tasks map[messages.ID]*task
}

// task is one HTTP exchange or WebSocket stream in progress.
type task struct {
	cancel context.CancelFunc
	st     *stream.Stream
}

func (r *runner) newSession() *session {
	return &session{r: r, log: r.log, started: time.Now(),
		out:   stream.NewWriter(messages.InitialConnWindow, maxControlQueue),
		in:    stream.NewConnWindow(messages.InitialConnWindow, maxConnWindow),
		slots: make(chan struct{}, r.maxConcurrent), tasks: make(map[messages.ID]*task)}
}

// run dials, registers and serves until the connection ends. It signals
// moved (without blocking) if the proxy asks it to reconnect elsewhere, and
// keeps serving what is in flight.
func (s *session) run(ctx context.Context, moved chan<- struct{}) error {
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	if err := s.connect(); err != nil {
		return err
	}
	defer s.ws.CloseNow()
	s.registered = true
	s.budget = stream.NewBudget(int64(s.reg.ConnBudget), nil)
	urls := nameURLs(&s.reg, s.r.c.Names)
	s.log.Info("registered", "url", urls[0], "also", urls[1:])
	if f := s.r.c.OnRegister; f != nil {
		f(urls[0])
	}
	return s.serve(moved)
}

// serve carries the connection once it is up, until it ends.
func (s *session) serve(moved chan<- struct{}) error {
	s.ws.SetReadLimit(messages.MaxFrame)
	s.lastRead.Store(time.Now().UnixNano())

	writeErr := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		writeErr <- s.writeLoop()
	}()
	err := s.readLoop(moved)
	s.cancel()
	s.out.Close()
	s.wg.Wait()
	if werr := <-writeErr; werr != nil && err == nil {
		err = werr
	}
	return err
}

// connect dials the proxy and runs the registration handshake.
func (s *session) connect() error {
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	defer cancel()
	// Not a keyhole proxy of this protocol version: an older proxy has no
	// such path. Retrying will not change that.
	notV2 := fmt.Sprintf("the proxy does not speak keyhole protocol version %d (HTTP 404 at %s); upgrade the proxy", messages.Version, messages.ControlPath)
	if err := s.dial(ctx, s.r.controlURL, notV2); err != nil {
		return err
	}
	ws := s.ws
	ws.SetReadLimit(messages.MaxHandshakeRead)
	fail := func(err error) error {
		ws.CloseNow()
		return err
	}
	ch, err := s.read(ctx, messages.TypeChallenge)
	if err != nil {
		return fail(err)
	}
	challenge := ch.(*messages.Challenge)
	jws, err := messages.SignRegistration(s.r.c.Key, *challenge, messages.RegistrationClaims{Token: s.r.c.Token, Names: s.r.c.Names, Pool: s.r.c.Pool, Protect: s.r.protect, TCP: s.r.c.TCP != nil, RemotePort: s.r.c.TCP.remotePort()})
	if err != nil {
		return fail(err)
	}
	if err := ws.Write(ctx, websocket.MessageBinary, messages.Encode(&messages.RegistrationRequest{JWS: jws})); err != nil {
		return fail(fmt.Errorf("send registration: %w", err))
	}
	resp2, err := s.read(ctx, messages.TypeRegistrationResponse)
	if err != nil {
		return fail(err)
	}
	s.reg = *resp2.(*messages.RegistrationResponse)
	if s.reg.PingMillis == 0 || s.reg.TimeoutMillis == 0 || s.reg.MaxWindow < messages.InitialWindow {
		return fail(errors.New("proxy sent an incomplete registration response"))
	}
	return nil
}

// dial opens the websocket to the proxy at url. An HTTP 404 there is
// final: a *RefusedError with the reason notFound.
func (s *session) dial(ctx context.Context, url, notFound string) error {
	hc, dialed, done := s.r.dialProxy()
	defer done()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:      hc,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode == 404 {
			return &RefusedError{Reason: notFound}
		}
		if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
			// An instance that is draining (or full); another, behind the
			// same load balancer, may take the connection.
			return fmt.Errorf("dial proxy: %w (%w)", err, errUnavailable)
		}
		return fmt.Errorf("dial proxy: %w", err)
	}
	s.ws = ws
	s.conn = dialed()
	return nil
}

// read reads one message of type want during the handshake. A close from
// the proxy becomes a RefusedError or ErrReplaced as appropriate.
func (s *session) read(ctx context.Context, want messages.Type) (messages.Message, error) {
	_, data, err := s.ws.Read(ctx)
	if err != nil {
		return nil, closeError(err, true)
	}
	m, err := messages.Decode(data)
	if errors.Is(err, messages.ErrVersion) {
		return nil, &RefusedError{Reason: fmt.Sprintf("the proxy speaks another keyhole protocol version than %d; upgrade the older side", messages.Version)}
	}
	if err != nil {
		return nil, fmt.Errorf("read %v: %w", want, err)
	}
	if m.Type() != want {
		return nil, fmt.Errorf("proxy sent %v, expected %v", m.Type(), want)
	}
	return m, nil
}

// closeError classifies the error that ended a connection. A policy
// violation during registration is a refusal, final; after registration it
// ends only this connection.
func closeError(err error, registering bool) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case websocket.StatusPolicyViolation:
			if ce.Reason == "" {
				ce.Reason = "policy violation"
			}
			if registering {
				return &RefusedError{Reason: ce.Reason}
			}
		case statusReplaced:
			return ErrReplaced
		case websocket.StatusGoingAway:
			if registering {
				return fmt.Errorf("proxy closed the connection: %d %s (%w)", ce.Code, ce.Reason, errUnavailable)
			}
		}
		return fmt.Errorf("proxy closed the connection: %d %s", ce.Code, ce.Reason)
	}
	return fmt.Errorf("connection lost: %w", err)
}

func (s *session) ping() time.Duration { return time.Duration(s.reg.PingMillis) * time.Millisecond }

// writeLoop is the only writer of s.ws; it also pings an idle link and
// ends the session when the proxy has been silent for two ping intervals.
func (s *session) writeLoop() error {
	ping := s.ping()
	tick := time.NewTicker(ping / 2)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		select {
		case <-s.out.Ready():
			if err := s.out.Flush(s.write); err != nil {
				s.ws.CloseNow()
				return fmt.Errorf("write: %w", err)
			}
			lastWrite = time.Now()
		case <-tick.C:
			now := time.Now()
			if now.Sub(time.Unix(0, s.lastRead.Load())) > 2*ping {
				// A silent proxy will not answer a close handshake either;
				// Close would wait 5 s for it before the client reconnects.
				s.ws.CloseNow()
				return errors.New("proxy silent for twice the ping interval")
			}
			if now.Sub(lastWrite) >= ping {
				if err := s.write(messages.Encode(&messages.Ping{})); err != nil {
					s.ws.CloseNow()
					return fmt.Errorf("write: %w", err)
				}
				lastWrite = now
			}
		case <-s.ctx.Done():
			s.ws.Close(websocket.StatusGoingAway, "client shutting down")
			return nil
		}
	}
}

func (s *session) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	s.conn.Cork()
	err := s.ws.Write(ctx, websocket.MessageBinary, frame)
	if uerr := s.conn.Uncork(writeTimeout); err == nil {
		err = uerr
	}
	return err
}

// send queues a control frame (a head, an Error) for the proxy.
func (s *session) send(m messages.Message) error {
	if !s.out.Send(m) {
		return errSessionClosed
	}
	return nil
}

// streamSender is how one stream's frames reach the proxy.
type streamSender struct {
	s  *session
	id messages.ID
}

func (t streamSender) Send(m messages.Message) error { return t.s.send(m) }

func (t streamSender) SendData(m messages.Message, n int) error {
	if !t.s.out.Data(t.id, stream.EncodeData(m), n) {
		return errSessionClosed
	}
	return nil
}

// readLoop reads the proxy's frames and dispatches them.
func (s *session) readLoop(moved chan<- struct{}) error {
	for {
		_, buf, err := wsbuf.Read(s.ctx, s.ws)
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return closeError(err, false)
		}
		s.lastRead.Store(time.Now().UnixNano())
		err = s.dispatchFrame(buf.Bytes(), moved)
		buf.Release()
		if err != nil {
			s.ws.Close(websocket.StatusPolicyViolation, messages.CloseReason(err.Error()))
			return fmt.Errorf("from proxy: %w", err)
		}
	}
}

// dispatchFrame handles one websocket message from the proxy, a Batch
// frame by frame. The frame's memory is reused afterwards: whatever
// outlives the call is copied.
func (s *session) dispatchFrame(msg []byte, moved chan<- struct{}) error {
	err := messages.EachFrame(msg, func(_ []byte, m messages.Message) error {
		return s.dispatch(m, moved)
	})
	if errors.Is(err, messages.ErrMalformed) || errors.Is(err, messages.ErrVersion) {
		return errors.New("malformed frame")
	}
	return err
}

func (s *session) dispatch(m messages.Message, moved chan<- struct{}) error {
	if s.visitor && opensStream(m) {
		return fmt.Errorf("unexpected %v on a visitor connection", m.Type())
	}
	switch m := m.(type) {
	case *messages.Ping:
		return nil
	case *messages.HTTPRequest:
		s.carried.Store(true)
		st := s.newStream(m.ID, int(m.Window), m.ExpectContinue)
		s.start(m.ID, st, func(ctx context.Context) { s.serveHTTP(ctx, m, st) })
		return nil
	case *messages.WSRequest:
		s.carried.Store(true)
		st := s.newStream(m.ID, int(m.Window), false)
		s.start(m.ID, st, func(ctx context.Context) { s.serveStream(ctx, m, st) })
		return nil
	case *messages.TCPRequest:
		s.carried.Store(true)
		st := s.newStream(m.ID, int(m.Window), false)
		s.start(m.ID, st, func(ctx context.Context) { s.serveTCP(ctx, m, st) })
		return nil
	case *messages.TCPResponse:
		s.deliver(m.ID, m)
		return nil
	case *messages.Credit:
		if m.ID.IsZero() {
			s.out.Credit(int(m.Increment))
			return nil
		}
		s.deliver(m.ID, m)
		return nil
	case *messages.Error:
		switch {
		case m.ID.IsZero() && m.Code == messages.CodeNameLost:
			s.log.Warn("name lost", "reason", messages.CloseReason(m.Reason))
		case m.ID.IsZero() && m.Code == messages.CodeGoingAway:
			select {
			case moved <- struct{}{}:
			default:
			}
		case !m.ID.IsZero():
			if t := s.task(m.ID); t != nil {
				t.st.Receive(m)
				t.cancel()
			}
		}
		return nil
	case *messages.Data:
		m.Data = stream.CopyData(m.Data)
		return s.deliverData(m.ID, m, len(m.Data))
	case *messages.WSMessage:
		m.Data = stream.CopyData(m.Data)
		return s.deliverData(m.ID, m, len(m.Data))
	case *messages.Trailer:
		s.deliver(m.ID, m)
		return nil
	case *messages.WSTeardown:
		s.deliver(m.ID, m)
		return nil
	}
	return fmt.Errorf("unexpected %v", m.Type())
}

// deliverData hands data to its stream within the connection's credit,
// and returns that credit once the frame has left the read path.
func (s *session) deliverData(id messages.ID, m messages.Message, n int) error {
	if !s.in.Received(n) {
		return errors.New("data beyond the connection's credit")
	}
	s.deliver(id, m)
	if inc := s.in.Passed(n); inc > 0 {
		s.send(&messages.Credit{Increment: inc})
	}
	return nil
}

// deliver hands a frame to its stream. Frames for streams that are over
// (a frame crossing their end) are dropped.
func (s *session) deliver(id messages.ID, m messages.Message) {
	t := s.task(id)
	if t == nil {
		return
	}
	if err := t.st.Receive(m); err != nil {
		// The proxy sent more than the stream's credit: that stream cannot
		// be trusted, the others can.
		s.log.Warn("stream reset", "req", id, "err", err)
		t.st.Reset(messages.CodeBadResponse, "flow control violated")
		t.cancel()
	}
}

// newStream makes the client's end of a stream the proxy opened.
func (s *session) newStream(id messages.ID, sendCredit int, expectContinue bool) *stream.Stream {
	return stream.New(id, streamSender{s, id}, stream.Config{
		SendCredit:      sendCredit,
		NoInitialCredit: expectContinue,
		MaxWindow:       int(s.reg.MaxWindow),
		Budget:          s.budget,
	})
}

// start runs fn for a new task, unless too many are running.
func (s *session) start(id messages.ID, st *stream.Stream, fn func(ctx context.Context)) {
	select {
	case s.slots <- struct{}{}:
	default:
		s.send(&messages.Error{ID: id, Code: messages.CodeOverloaded})
		return
	}
	ctx, end := s.begin(id, st)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.slots }()
		defer end()
		fn(ctx)
	}()
}

// begin makes st a task of the session, so that the proxy's frames reach
// it, with a context that ends with the session; end forgets it.
func (s *session) begin(id messages.ID, st *stream.Stream) (ctx context.Context, end func()) {
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	s.tasks[id] = &task{cancel: cancel, st: st}
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		delete(s.tasks, id)
		s.mu.Unlock()
		cancel()
		st.Close()
		if st.Err() != nil {
			s.out.Forget(id) // nobody wants what is still queued
		}
	}
}

func (s *session) task(id messages.ID) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[id]
}

// nameURLs returns the public URLs of a registration: those of the names
// asked for, in order, then the key's hostname's. A name's URL is the
// key's with the name in place of the key's label.
func nameURLs(reg *messages.RegistrationResponse, names []string) []string {
	label, _, _ := strings.Cut(reg.Hostname, ".")
	urls := make([]string, 0, len(names)+1)
	for _, n := range names {
		urls = append(urls, strings.Replace(reg.URL, "//"+label+".", "//"+n+".", 1))
	}
	return append(urls, reg.URL)
}
