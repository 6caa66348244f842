package stream

import (
	"sync"

	"github.com/keyhole-tunnel/keyhole/messages"
)

// Every data frame that crosses a proxy or a client is copied at least
// once (off the websocket's read buffer, onto the bus, into a stream's
// queue), and at full speed a fresh allocation for each is most of the
// garbage collector's work. Buffers of one size, for one data frame and its
// envelope, are pooled instead: whoever holds one at the end of its way
// gives it back with Release.

// BufCap is the capacity of a pooled buffer: a full data frame, framed and
// in an Envelope.
const BufCap = messages.MaxData + 256

var pool = sync.Pool{New: func() any { b := make([]byte, 0, BufCap); return &b }}

// Buf returns an empty pooled buffer of capacity BufCap.
func Buf() []byte { return (*pool.Get().(*[]byte))[:0] }

// Release gives a buffer from Buf back, or from something built on it
// (EncodeData, CopyData). Any other slice is left to the garbage collector,
// so it is safe to call on data of unknown origin. The buffer must not be
// used afterwards.
func Release(b []byte) {
	if cap(b) == BufCap {
		b = b[:0]
		pool.Put(&b)
	}
}

// CopyData copies b into a pooled buffer when it fits one; nothing is
// copied for nothing.
func CopyData(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	if len(b) > BufCap {
		return append([]byte(nil), b...)
	}
	return append(Buf(), b...)
}

// EncodeData encodes m (a Data or WSMessage frame) into a pooled buffer,
// for Writer.Data, which gives the buffer back once the frame is written.
func EncodeData(m messages.Message) []byte { return messages.Append(Buf(), m) }

// ReleaseData gives back the pooled buffer of a received Data or WSMessage
// frame once its bytes have been written out.
func ReleaseData(m messages.Message) {
	switch m := m.(type) {
	case *messages.Data:
		Release(m.Data)
	case *messages.WSMessage:
		Release(m.Data)
	}
}
