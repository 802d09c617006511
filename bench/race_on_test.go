//go:build race

package bench

// raceEnabled: the race detector's instrumentation makes stacks larger, so
// memory is measured without it.
const raceEnabled = true
