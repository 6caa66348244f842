// Command hello is a stand-in server for testenv's own tests: it prints its
// arguments, announces it is ready, and on SIGTERM says goodbye and exits 3.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Println("args:", strings.Join(os.Args[1:], " "))
	fmt.Println("env:", os.Getenv("HELLO_GREETING"))
	fmt.Println("ready")
	fmt.Fprintln(os.Stderr, "hello on stderr")
	<-sig
	fmt.Println("bye")
	os.Exit(3)
}
