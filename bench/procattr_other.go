//go:build !linux

package main

import "syscall"

// sysProcAttr is the default off Linux; the harness reads /proc and is
// meant for Linux.
func sysProcAttr() *syscall.SysProcAttr { return nil }
