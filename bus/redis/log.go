package redis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// LogTo sends what the Redis client library itself logs (dropped pub/sub
// connections, pool trouble, cluster layout reloads) to l at Info level,
// with component=go-redis, instead of to the standard error as plain text
// lines that break a JSON log. The library's logger is global to the
// process, so a program calls this once, before [New].
func LogTo(l *slog.Logger) {
	goredis.SetLogger(slogPrinter{l})
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	p.l.InfoContext(ctx, msg, "component", "go-redis")
}
