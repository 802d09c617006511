//go:build race

package balancer

// raceEnabled: the race detector makes sync.Pool drop a share of what it is
// given, so tests of pooling allow for it.
const raceEnabled = true
