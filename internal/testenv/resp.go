package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// RedisReplyError is an error reply ("-ERR ...", "-MOVED ...") from Redis.
type RedisReplyError string

func (e RedisReplyError) Error() string { return string(e) }

// RedisCommand sends one command to the Redis server at addr on a fresh
// connection, as the default user without a password, and returns its reply:
// a string (simple or bulk), an int64, a []any, nil (a null reply), or a
// [RedisReplyError]. It speaks RESP2 itself, so packages other than
// bus/redis can talk to Redis without importing a client library.
func RedisCommand(ctx context.Context, addr string, args ...string) (any, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	reply, err := readRESP(bufio.NewReader(c))
	if err != nil {
		return nil, fmt.Errorf("redis %s %s: %w", addr, args[0], err)
	}
	if e, ok := reply.(RedisReplyError); ok {
		return nil, e
	}
	return reply, nil
}

// readRESP reads one RESP2 value. An error reply is returned as a value, so
// that errors nested in arrays (as EXEC returns them) survive.
func readRESP(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return RedisReplyError(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readRESP(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unexpected RESP type %q", line[0])
	}
}
