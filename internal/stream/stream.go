package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// Sender carries a stream's frames to its peer. Send takes the frames
// whose order relative to the stream's data does not matter (heads,
// Credit, Error); SendData takes those that must keep their order (Data,
// WSMessage, Trailer, WSTeardown), n being the credit the frame uses.
// Neither keeps m after it returns, and neither may block: a Stream keeps
// its own frames in order with a lock held across the call. An Error for
// the stream must drop its data still queued (Writer.Send does), so that
// nothing of a stream follows its reset.
type Sender interface {
	Send(m messages.Message) error
	SendData(m messages.Message, n int) error
}

// ResetError ends a stream that was reset: by the peer's Error, or by this
// side.
type ResetError struct {
	Code       messages.ErrorCode
	Reason     string
	RetryAfter uint32 // seconds, for messages.CodeRateLimited
	// Local is set when this side reset the stream.
	Local bool
}

func (e *ResetError) Error() string {
	who := "peer"
	if e.Local {
		who = "local"
	}
	return fmt.Sprintf("stream reset by %s: code %d %s", who, e.Code, e.Reason)
}

// ErrFlowControl is returned by [Stream.Receive] when the peer sent more
// data than it had credit for.
var ErrFlowControl = errors.New("stream: peer exceeded its credit")

// Config sets up one stream. The zero value of a field is the default
// given.
type Config struct {
	// RecvWindow is the receive window, and the credit the peer starts
	// with. Default messages.InitialWindow.
	RecvWindow int
	// NoInitialCredit makes the peer start with no credit at all, until
	// Grant gives it the window (an Expect: 100-continue body).
	NoInitialCredit bool
	// SendCredit is the credit this side starts with. Zero means none:
	// nothing can be sent before the peer's first Credit.
	SendCredit int
	// MaxWindow caps the receive window's growth. Default: no growth.
	MaxWindow int
	// Budget is where growth beyond RecvWindow comes from (nil: no bound).
	Budget *Budget
}

// Stream is one endpoint of a stream. Its methods are safe for concurrent
// use: typically one goroutine receives (the connection's reader), one
// consumes, and one sends.
type Stream struct {
	id        messages.ID
	out       Sender
	budget    *Budget
	maxWindow int

	// sendMu orders SendData against Reset: no data frame is queued after
	// the reset's Error.
	sendMu sync.Mutex

	mu          sync.Mutex
	in          []messages.Message // received, not yet taken
	buffered    int                // data bytes in in
	window      int
	grown       int // window taken from budget
	outstanding int // credit the peer still has
	unacked     int // consumed, not yet returned as credit
	starved     bool
	ungranted   bool      // made with NoInitialCredit, Grant not yet called
	lastCredit  time.Time // when credit last went out
	ended       bool      // the peer's direction is complete
	err         error
	credit      int

	timer    *time.Timer   // NextWithin's, reused: the consumer's alone
	arrived  chan struct{} // cap 1: something was received
	creditCh chan struct{} // cap 1: credit arrived
	done     chan struct{} // closed on reset
	active   atomic.Int64  // unix nanos of the last frame either way
}

// New returns a stream named id that sends through out.
func New(id messages.ID, out Sender, cfg Config) *Stream {
	if cfg.RecvWindow == 0 {
		cfg.RecvWindow = messages.InitialWindow
	}
	s := &Stream{
		id:          id,
		out:         out,
		budget:      cfg.Budget,
		maxWindow:   max(cfg.MaxWindow, cfg.RecvWindow),
		window:      cfg.RecvWindow,
		outstanding: cfg.RecvWindow,
		credit:      cfg.SendCredit,
		arrived:     make(chan struct{}, 1),
		creditCh:    make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	if cfg.NoInitialCredit {
		s.outstanding = 0
		s.ungranted = true
	}
	s.touch()
	return s
}

// ID returns the stream's ID.
func (s *Stream) ID() messages.ID { return s.id }

func (s *Stream) touch() { s.active.Store(time.Now().UnixNano()) }

// LastActive is when the stream last received or sent a frame.
func (s *Stream) LastActive() time.Time { return time.Unix(0, s.active.Load()) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Receive takes a frame from the peer. It never blocks. Data beyond the
// peer's credit is refused with ErrFlowControl and not queued; frames after
// the stream ended or was reset are dropped (they crossed its end).
func (s *Stream) Receive(m messages.Message) error {
	s.touch()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil
	}
	switch m := m.(type) {
	case *messages.Credit:
		s.credit += int(m.Increment)
		signal(s.creditCh)
		return nil
	case *messages.Error:
		s.resetLocked(&ResetError{Code: m.Code, Reason: m.Reason, RetryAfter: m.RetryAfter})
		return nil
	}
	if s.ended {
		return nil
	}
	n := messages.CreditBytes(m)
	if n > s.outstanding {
		return ErrFlowControl
	}
	s.outstanding -= n
	if n > 0 && s.outstanding == 0 && s.buffered < s.window/2 {
		// The peer has used all its credit while the consumer keeps up:
		// the window, not the consumer, limits this stream.
		s.starved = true
	}
	s.buffered += n
	s.in = append(s.in, m)
	if endsDirection(m) {
		s.ended = true
	}
	signal(s.arrived)
	return nil
}

// endsDirection reports whether m is the last frame of its direction.
func endsDirection(m messages.Message) bool {
	switch m := m.(type) {
	case *messages.Data:
		return m.End
	case *messages.Trailer, *messages.WSTeardown:
		return true
	}
	return false
}

// Next returns the next frame received, waiting for one. After the peer's
// last frame it returns io.EOF; after a reset, the *ResetError. The data of
// a frame counts as consumed only once the caller says so with Consumed.
func (s *Stream) Next(ctx context.Context) (messages.Message, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			return nil, s.err
		}
		if len(s.in) > 0 {
			m := s.in[0]
			s.in[0] = nil
			s.in = s.in[1:]
			if len(s.in) == 0 {
				s.in = nil // let a burst's backing array go
			}
			s.buffered -= messages.CreditBytes(m)
			s.mu.Unlock()
			return m, nil
		}
		if s.ended {
			s.mu.Unlock()
			return nil, io.EOF
		}
		s.mu.Unlock()
		select {
		case <-s.arrived:
		case <-s.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// ErrIdle is returned by NextWithin when the stream saw no frame in either
// direction for the time allowed.
var ErrIdle = errors.New("stream: idle")

// NextWithin is Next, giving up with ErrIdle once the stream has seen no
// frame either way (received data, credit or a frame this side sent) for
// limit. Only the consumer calls it.
func (s *Stream) NextWithin(ctx context.Context, limit time.Duration) (messages.Message, error) {
	for {
		s.mu.Lock()
		ready := s.err != nil || len(s.in) > 0 || s.ended
		s.mu.Unlock()
		if ready {
			return s.Next(ctx)
		}
		wait := time.Until(s.LastActive().Add(limit))
		if wait <= 0 {
			return nil, ErrIdle
		}
		if s.timer == nil {
			s.timer = time.NewTimer(wait)
		} else {
			s.timer.Reset(wait)
		}
		select {
		case <-s.arrived:
		case <-s.done:
		case <-s.timer.C:
		case <-ctx.Done():
			s.timer.Stop()
			return nil, ctx.Err()
		}
		s.timer.Stop()
	}
}

// Queued reports how many received frames wait to be taken by Next.
func (s *Stream) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.in)
}

// Consumed returns n bytes of credit to the peer: the caller has written
// out that much of what Next gave it. Credit travels once a quarter of the
// window is due, with the window's growth when the stream was starved.
func (s *Stream) Consumed(n int) {
	s.mu.Lock()
	s.unacked += n
	if s.err != nil || s.ended || s.unacked < s.window/4 {
		s.mu.Unlock()
		return
	}
	inc := s.unacked
	now := time.Now()
	// Grow when the window limits the stream: its sender ran out of
	// credit while the consumer kept up (a long path: credit takes a round
	// trip), or credit is due again so soon that the window is gone in a
	// moment (a fast path: every Credit is one more frame to carry, and a
	// bigger window needs fewer).
	fast := now.Sub(s.lastCredit) < fastCredit && s.buffered < s.window/2
	if (s.starved || fast) && s.window < s.maxWindow {
		grow := min(s.window, s.maxWindow-s.window)
		if s.budget.TryTake(grow) {
			s.window += grow
			s.grown += grow
			inc += grow
		}
	}
	s.starved = false
	s.lastCredit = now
	s.unacked = 0
	s.outstanding += inc
	s.mu.Unlock()
	s.Send(&messages.Credit{ID: s.id, Increment: uint32(inc)})
}

// fastCredit is how soon after the last credit a quarter of the window
// must be consumed for the window to count as too small.
const fastCredit = time.Millisecond

// Grant gives the peer the window's credit at once: the first credit of a
// stream made with NoInitialCredit. It does nothing on any other stream.
func (s *Stream) Grant() {
	s.mu.Lock()
	n := s.window
	if s.err != nil || !s.ungranted {
		s.mu.Unlock()
		return
	}
	s.ungranted = false
	s.outstanding += n
	s.mu.Unlock()
	s.Send(&messages.Credit{ID: s.id, Increment: uint32(n)})
}

// Window reports the stream's current receive window.
func (s *Stream) Window() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.window
}

// Reserve waits until the peer has given credit, then takes up to max
// bytes of it and reports how many (at least one). Give back what goes
// unused with Unreserve.
func (s *Stream) Reserve(ctx context.Context, max int) (int, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			return 0, s.err
		}
		if s.credit > 0 {
			n := min(s.credit, max)
			s.credit -= n
			s.mu.Unlock()
			return n, nil
		}
		s.mu.Unlock()
		select {
		case <-s.creditCh:
		case <-s.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Unreserve gives back credit that Reserve took and the caller did not use.
func (s *Stream) Unreserve(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.credit += n
	s.mu.Unlock()
	signal(s.creditCh)
}

// Send sends a frame that keeps no order with the data (a head, an Error).
func (s *Stream) Send(m messages.Message) error {
	s.touch()
	return s.out.Send(m)
}

// SendData sends a frame in order with the stream's data, using n bytes of
// credit that Reserve took.
func (s *Stream) SendData(m messages.Message, n int) error {
	s.touch()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	select {
	case <-s.done:
		return s.Err() // the peer has the reset: no data may follow it
	default:
	}
	return s.out.SendData(m, n)
}

// Reset ends the stream from this side: the peer gets an Error with code
// and reason, unless the stream was already reset. Everything waiting on
// the stream returns the *ResetError.
func (s *Stream) Reset(code messages.ErrorCode, reason string) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.resetLocked(&ResetError{Code: code, Reason: reason, Local: true})
	s.mu.Unlock()
	// A SendData under way finishes first, and its frame is dropped with
	// the rest of the stream's queued data (Writer.Reset) or goes ahead.
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.out.Send(&messages.Error{ID: s.id, Code: code, Reason: reason})
}

// Abandon ends the stream from this side without telling the peer, for
// when the peer is gone (the connection dropped) or has ended it already.
func (s *Stream) Abandon(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.resetLocked(err)
	}
}

func (s *Stream) resetLocked(err error) {
	s.err = err
	s.in, s.buffered = nil, 0
	close(s.done)
}

// Err returns why the stream was reset, or nil.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done is closed when the stream is reset.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Close releases the stream's share of its budget. The stream must not be
// used for receiving afterwards.
func (s *Stream) Close() {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Lock()
	grown := s.grown
	s.grown = 0
	s.mu.Unlock()
	s.budget.Release(grown)
}
