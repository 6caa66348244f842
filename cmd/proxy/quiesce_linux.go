package main

import (
	"context"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// quiesce stops ln listening at a moment its accept queue is empty, waiting
// for the server to accept what the kernel has queued until ctx ends.
//
// Closing a listener resets the connections still in its accept queue:
// completed by the kernel, perhaps with a request sent, but not yet
// accepted. A load balancer cannot retry a POST reset that way, and under
// load the queue is seldom empty for long. Checking the queue and
// stopping the socket in one step leaves a window of two system calls;
// after that, new connections are refused, which a load balancer retries
// on another instance. The server's Accept then fails, and its Shutdown
// closes the socket as usual.
func quiesce(ctx context.Context, ln *net.TCPListener) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var stopped bool
		var serr error
		if err := rc.Control(func(fd uintptr) {
			// For a listening socket, TCP_INFO's unacked field is the
			// length of the accept queue.
			var info *unix.TCPInfo
			if info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); serr != nil || info.Unacked > 0 {
				return
			}
			// Shutting a listening socket's reading side down makes it
			// stop listening (its state becomes CLOSE) without closing
			// the descriptor.
			serr = unix.Shutdown(int(fd), unix.SHUT_RD)
			stopped = serr == nil
		}); err != nil {
			return err
		}
		switch {
		case serr != nil:
			return serr
		case stopped:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
