package client_test

import (
	"testing"

	"github.com/keyhole-tunnel/keyhole/client"
)

func TestControlURL(t *testing.T) {
	const p = "/_keyhole/v2/connect" // messages.ControlPath, spelled out so a change shows here
	for _, tc := range []struct {
		in, want string
	}{
		{"", "ws://localhost:8080" + p},
		{"ws://h:1", "ws://h:1" + p},
		{"h:1", "ws://h:1" + p},
		{"h", "ws://h" + p},
		{"http://h:1", "ws://h:1" + p},
		{"https://h", "wss://h" + p},
		{"wss://h", "wss://h" + p},
		{"wss://h/prefix/", "wss://h/prefix" + p},
		{"wss://h/prefix", "wss://h/prefix" + p},
		{"ws://h:1/?x=1#frag", "ws://h:1" + p},
		{"ws://[::1]:8080", "ws://[::1]:8080" + p},
	} {
		got, err := client.ControlURL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ControlURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"ftp://h:1",
		"tcp://h:1",
		"unix:///run/keyhole.sock",
		"ws://",
		"://h",
		"http://[::1",
	} {
		if got, err := client.ControlURL(in); err == nil {
			t.Errorf("ControlURL(%q) = %q, want an error", in, got)
		}
	}
}
