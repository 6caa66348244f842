package proxy

import "testing"

func TestReservedName(t *testing.T) {
	c := &Config{Domain: "tunnel.example.com", ReservedNames: []string{"billing"}}
	for name, want := range map[string]bool{"www": true, "api": true, "tunnel": true, "billing": true, "example": false, "myapp": false} {
		if got := c.reservedName(name); got != want {
			t.Errorf("reservedName(%q) = %v, want %v", name, got, want)
		}
	}
}
