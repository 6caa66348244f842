module github.com/keyhole-tunnel/keyhole

go 1.26.0

require (
	github.com/go-jose/go-jose/v4 v4.1.9 // indirect
	golang.org/x/time v0.16.0 // indirect
)
