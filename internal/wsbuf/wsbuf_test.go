package wsbuf

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Messages of different sizes read through reused buffers arrive intact,
// and the read limit still applies: limit passes, limit+1 fails with 1009.
func TestReadReusesBuffersAndKeepsLimit(t *testing.T) {
	const limit = 64 << 10
	sizes := []int{0, 1, 1000, limit, 10, limit + 1}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for i, n := range sizes {
			c.Write(r.Context(), websocket.MessageBinary, bytes.Repeat([]byte{byte(i + 1)}, n))
		}
		c.Read(r.Context()) // until the client closes
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+srv.URL[4:], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(limit)
	for i, n := range sizes[:len(sizes)-1] {
		typ, buf, err := Read(ctx, c)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		want := bytes.Repeat([]byte{byte(i + 1)}, n)
		if typ != websocket.MessageBinary || !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("message %d: got %d bytes, want %d of %d", i, len(buf.Bytes()), n, i+1)
		}
		buf.Release()
	}
	_, _, err = Read(ctx, c)
	if !errors.Is(err, websocket.ErrMessageTooBig) {
		t.Fatalf("limit+1: got %v, want ErrMessageTooBig", err)
	}
}
