module github.com/keyhole-tunnel/keyhole

go 1.26
