//go:build race

package testenv

// raceEnabled mirrors the test binary's -race flag into [Build].
const raceEnabled = true
