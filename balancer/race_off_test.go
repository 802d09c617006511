//go:build !race

package balancer

// raceEnabled: see race_on_test.go.
const raceEnabled = false
