package claudebalancer

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSeriesCacheFindsEachSeriesOnce: concurrent first lookups of the same
// labels agree on one series, and different labels get their own.
func TestSeriesCacheFindsEachSeriesOnce(t *testing.T) {
	c := &seriesCache{}
	made := 0
	var mu sync.Mutex
	mk := func(name string) func() prometheus.Counter {
		return func() prometheus.Counter {
			mu.Lock()
			made++
			mu.Unlock()
			return prometheus.NewCounter(prometheus.CounterOpts{Name: name})
		}
	}
	got := make([]prometheus.Counter, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i] = lookup(c, &c.attempts, attemptSeries{"a", "success"}, mk("a")) })
	}
	wg.Wait()
	for _, s := range got[1:] {
		if s != got[0] {
			t.Fatal("two series for the same labels")
		}
	}
	if other := lookup(c, &c.attempts, attemptSeries{"a", "provider"}, mk("b")); other == got[0] {
		t.Fatal("one series for different labels")
	}
	if again := lookup(c, &c.attempts, attemptSeries{"a", "success"}, mk("c")); again != got[0] || made > len(got)+1 {
		t.Fatalf("the series was not kept (%d made)", made)
	}
}
