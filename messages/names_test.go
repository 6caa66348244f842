package messages

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	label := strings.Repeat("a", 50) + "23" // base32 alphabet, 52 characters
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"myapp", true},
		{"a", true},
		{"a-b-c", true},
		{"x1", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{label, false},
		{label[:51], true},                    // one short of a key's label
		{strings.Repeat("a", 51) + "1", true}, // 1 is not base32
		{"", false},
		{"-a", false},
		{"a-", false},
		{"xn--abc", false},
		{"ab-cd", true},
		{"MyApp", false},
		{"my_app", false},
		{"my.app", false},
		{"myäpp", false},
	} {
		if err := CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
