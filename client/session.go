package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/keyhole-tunnel/keyhole/internal/wsbuf"
	"github.com/keyhole-tunnel/keyhole/messages"
)

const (
	handshakeTimeout = 10 * time.Second
	writeTimeout     = 10 * time.Second
	outQueue         = 1024
	// outQueueBytes bounds the bytes waiting to be written to the proxy.
	// Every exchange and stream shares the link, and whatever waits here
	// delays everyone's next frame: a local service flooding a visitor who
	// stopped reading must not put megabytes ahead of another stream's
	// messages or an HTTP response. (1024 frames alone allowed 1024 x
	// max_body.)
	outQueueBytes = 1 << 20
	// defaultMaxConcurrent bounds the requests and streams served at once on one
	// connection; more are answered with CodeOverloaded.
	defaultMaxConcurrent = 1024
	// statusReplaced is the close code of a connection whose key
	// registered again elsewhere.
	statusReplaced websocket.StatusCode = 4000
)

// session is one connection to the proxy, from dial to close.
type session struct {
	r          *runner
	log        *slog.Logger
	ws         *websocket.Conn
	started    time.Time
	registered bool
	reg        messages.RegistrationResponse
	out        chan []byte
	outBytes   budget // bytes in out
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
	stream *localStream // nil for HTTP
}

func (r *runner) newSession() *session {
	return &session{r: r, log: r.log, started: time.Now(), out: make(chan []byte, outQueue),
		outBytes: budget{limit: outQueueBytes},
		slots:    make(chan struct{}, r.maxConcurrent), tasks: make(map[messages.ID]*task)}
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
	s.log.Info("registered", "url", s.reg.URL)
	if f := s.r.c.OnRegister; f != nil {
		f(s.reg.URL)
	}
	s.ws.SetReadLimit(int64(s.reg.MaxBody) + 64<<10 + 4096)
	s.lastRead.Store(time.Now().UnixNano())

	writeErr := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		writeErr <- s.writeLoop()
	}()
	err := s.readLoop(moved)
	s.cancel()
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
	ws, _, err := websocket.Dial(ctx, s.r.controlURL, &websocket.DialOptions{
		HTTPClient:      s.r.dialHTTP,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return fmt.Errorf("dial proxy: %w", err)
	}
	s.ws = ws
	ws.SetReadLimit(64 << 10)
	fail := func(err error) error {
		ws.CloseNow()
		return err
	}
	ch, err := s.read(ctx, messages.TypeChallenge)
	if err != nil {
		return fail(err)
	}
	challenge := ch.(*messages.Challenge)
	jws, err := messages.SignRegistration(s.r.c.Key, *challenge, messages.RegistrationClaims{Token: s.r.c.Token})
	if err != nil {
		return fail(err)
	}
	if err := ws.Write(ctx, websocket.MessageBinary, messages.Encode(&messages.RegistrationRequest{JWS: jws})); err != nil {
		return fail(fmt.Errorf("send registration: %w", err))
	}
	resp, err := s.read(ctx, messages.TypeRegistrationResponse)
	if err != nil {
		return fail(err)
	}
	s.reg = *resp.(*messages.RegistrationResponse)
	if s.reg.PingMillis == 0 || s.reg.MaxBody == 0 || s.reg.TimeoutMillis == 0 {
		return fail(errors.New("proxy sent an incomplete registration response"))
	}
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
		case f := <-s.out:
			err := s.write(f)
			s.outBytes.release(len(f))
			if err != nil {
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
	return s.ws.Write(ctx, websocket.MessageBinary, frame)
}

// send queues a frame for the proxy, waiting while the queue is full: the
// link to the proxy is the bottleneck every task shares.
func (s *session) send(m messages.Message) bool {
	f := messages.Encode(m)
	if !s.outBytes.acquire(s.ctx, len(f)) {
		return false
	}
	select {
	case s.out <- f:
		return true
	case <-s.ctx.Done():
		s.outBytes.release(len(f))
		return false
	}
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
		m, err := messages.Decode(buf.Bytes())
		// Decode's byte slices alias the pooled buffer: copy the ones that
		// outlive this iteration, then give the buffer back.
		switch m := m.(type) {
		case *messages.HTTPRequest:
			m.Body = bytes.Clone(m.Body)
		case *messages.WSMessage:
			m.Data = bytes.Clone(m.Data)
		}
		buf.Release()
		if errors.Is(err, messages.ErrUnknownType) {
			continue // from a newer proxy; skip
		}
		if err != nil {
			s.ws.Close(websocket.StatusPolicyViolation, "malformed frame")
			return fmt.Errorf("from proxy: %w", err)
		}
		switch m := m.(type) {
		case *messages.Ping:
		case *messages.HTTPRequest:
			s.start(m.ID, nil, func(ctx context.Context) { s.serveHTTP(ctx, m) })
		case *messages.WSRequest:
			st := newLocalStream()
			s.start(m.ID, st, func(ctx context.Context) { s.serveStream(ctx, m, st) })
		case *messages.WSMessage:
			if t := s.task(m.ID); t != nil && t.stream != nil {
				t.stream.deliver(m)
			}
		case *messages.WSTeardown:
			if t := s.task(m.ID); t != nil && t.stream != nil {
				t.stream.deliver(m)
			}
		case *messages.Error:
			switch {
			case m.ID.IsZero() && m.Code == messages.CodeGoingAway:
				select {
				case moved <- struct{}{}:
				default:
				}
			case !m.ID.IsZero():
				if t := s.task(m.ID); t != nil {
					t.cancel()
				}
			}
		}
	}
}

// start runs fn for a new task, unless too many are running.
func (s *session) start(id messages.ID, st *localStream, fn func(ctx context.Context)) {
	select {
	case s.slots <- struct{}{}:
	default:
		s.send(&messages.Error{ID: id, Code: messages.CodeOverloaded})
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	s.tasks[id] = &task{cancel: cancel, stream: st}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.slots }()
		defer func() {
			s.mu.Lock()
			delete(s.tasks, id)
			s.mu.Unlock()
			cancel()
		}()
		fn(ctx)
	}()
}

func (s *session) task(id messages.ID) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[id]
}
