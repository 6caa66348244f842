package messages

import "fmt"

// CheckName reports why name cannot be a friendly name, or nil: it must be
// a DNS label of lowercase letters, digits and inner hyphens, 1 to 63
// characters, without "--" in its third and fourth places (those are
// IDNA's), and it must not have the shape of a key-derived hostname label
// (52 characters of the base32 alphabet), so that no name can ever shadow a
// key's hostname. Reserved names are checked separately, by the proxy that
// knows its own.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case len(name) > 63:
		return fmt.Errorf("name %q longer than 63 characters", name)
	case IsHostnameLabel(name):
		return fmt.Errorf("name %q has the shape of a key's hostname", name)
	case name[0] == '-' || name[len(name)-1] == '-':
		return fmt.Errorf("name %q starts or ends with a hyphen", name)
	case len(name) >= 4 && name[2:4] == "--":
		return fmt.Errorf("name %q has \"--\" in its third and fourth places", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("name %q has %q: only a-z, 0-9 and - are allowed", name, c)
		}
	}
	return nil
}
