package limiter

import (
	"bytes"
	"io"
)

// ReadAll reads r to the end, failing with [ErrTooLarge] as soon as more
// than limit bytes arrive: limit bytes pass, limit+1 fail. sizeHint, when
// positive and within the limit, sizes the buffer up front.
func ReadAll(r io.Reader, limit int64, sizeHint int64) ([]byte, error) {
	var buf bytes.Buffer
	if sizeHint > 0 && sizeHint <= limit {
		buf.Grow(int(sizeHint) + 1)
	}
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, ErrTooLarge
	}
	return buf.Bytes(), nil
}
