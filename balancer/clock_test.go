package balancer

import (
	"sync"
	"testing"
	"time"
)

// fakeClock replaces the package clock for one test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func useFakeClock(t *testing.T) *fakeClock {
	c := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	old := now
	now = c.now
	t.Cleanup(func() { now = old })
	return c
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
