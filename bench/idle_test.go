package bench

import (
	"testing"
)

// TestIdleStreamMemory holds a few hundred idle streams through the
// balancer, with the defaults and with dedup off, and through
// reverse_proxy, and holds the balancer to make capacity's goal: under
// 64 KiB per stream with the defaults. A goroutine's stack is as large as
// its deepest call so far, rounded up to a power of two, so one call made a
// few hundred bytes deeper on a stream's way (the first write of its answer,
// say) can double its stack at once: this catches that in every test run,
// not only when make capacity runs. The race detector's instrumentation
// makes stacks larger, so make test runs it once more without the detector.
func TestIdleStreamMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes stacks larger; make test runs this test without it")
	}
	const n = 300
	targets := []string{targetBalancer, targetBalancerNoDedup, targetReverseProxy}
	p, sites := startCapacitySites(t, targets)
	kib := map[string]float64{}
	measure := func(target string) {
		row, err := holdStreams(p, target, sites[target], bodyClaudeCode, n)
		if err != nil {
			t.Fatal(err)
		}
		kib[target] = (row.heapPer + row.stackPer) / 1024
		t.Logf("%s: %.1f KiB per idle stream (heap %.1f, stack %.1f)", target, kib[target], row.heapPer/1024, row.stackPer/1024)
	}
	for _, target := range targets {
		measure(target)
	}
	// The heap moves by a KiB or two between measures; a stack that
	// doubled adds 16 KiB to every one. One more measure of a target over
	// the bound tells them apart.
	for _, target := range []string{targetBalancer, targetBalancerNoDedup} {
		if first := kib[target]; first >= 64 {
			measure(target)
			kib[target] = min(first, kib[target])
		}
	}
	for _, target := range []string{targetBalancer, targetBalancerNoDedup} {
		if kib[target] >= 64 {
			t.Errorf("%s: %.1f KiB per idle stream, want under 64", target, kib[target])
		}
	}
}
