package redis

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

// TestLibraryLogLinesAreRecords: a line the Redis library logs becomes one
// JSON record with its text as the message, not a plain line on stderr.
func TestLibraryLogLinesAreRecords(t *testing.T) {
	var buf bytes.Buffer
	p := slogPrinter{slog.New(slog.NewJSONHandler(&buf, nil))}
	p.Printf(context.Background(), "redis: discarding bad PubSub connection: %v", "EOF")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %q", buf.String())
	}
	if rec["msg"] != "discarding bad PubSub connection: EOF" || rec["component"] != "go-redis" || rec["level"] != "INFO" {
		t.Errorf("record %v", rec)
	}
}
