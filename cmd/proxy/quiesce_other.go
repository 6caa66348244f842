//go:build !linux

package main

import (
	"context"
	"net"
)

// quiesce does nothing here: the listener is closed with whatever its
// accept queue holds (see quiesce_linux.go).
func quiesce(context.Context, *net.TCPListener) error { return nil }
