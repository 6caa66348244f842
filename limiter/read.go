package limiter

import (
	"io"
)

// ReadAll reads r to the end, failing with [ErrTooLarge] as soon as more
// than limit bytes arrive: limit bytes pass, limit+1 fail. sizeHint, when
// positive, sizes the buffer up front, so a body whose length is known is
// read into one allocation with no copying.
func ReadAll(r io.Reader, limit int64, sizeHint int64) ([]byte, error) {
	n := int64(512)
	if sizeHint > 0 {
		// One byte more than the hint, so reaching EOF needs no growth.
		n = min(sizeHint, limit) + 1
	}
	b := make([]byte, 0, n)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // let append pick the next size
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if int64(len(b)) > limit {
			return nil, ErrTooLarge
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
