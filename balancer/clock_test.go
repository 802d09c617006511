package balancer

import (
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/clock"
)

// fakeClock replaces the package clock for one test.
type fakeClock struct{ *clock.Fake }

func useFakeClock(t *testing.T) fakeClock {
	c := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	old := clk
	clk = c
	t.Cleanup(func() { clk = old })
	return fakeClock{c}
}

func (c fakeClock) advance(d time.Duration) { c.Advance(d) }
