// Package soak holds a bounded load test of claude_balancer: an in-process
// Caddy in front of three mock providers, one of which misbehaves, under a
// mix of streaming and JSON requests, duplicates, client disconnects and
// config reloads. It checks that every request gets exactly one complete
// answer or a well-formed error, and that goroutines and heap return to
// where they started. It runs only when asked:
//
//	go test -count=1 -run TestSoak -v ./soak -soak                 # 2 minutes
//	go test -count=1 -run TestSoak -v ./soak -soak -soak.short     # 20 seconds
//	CB_SOAK=1 go test -count=1 -run TestSoak -v ./soak
//
// See the flags in soak_test.go for the duration, concurrency, fault rate,
// reload interval and random seed.
package soak
