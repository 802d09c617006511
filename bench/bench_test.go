package bench

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkProxy drives b.N requests, each body distinct, through each
// target at each concurrency. Targets alternate inside every (mode,
// concurrency) cell so that machine noise falls on all. allocs/op and
// cpu_us/op count the whole process (client, Caddy, mocks), so compare them
// between targets; TestCompareProxies measures Caddy alone.
func BenchmarkProxy(b *testing.B) {
	e := setup(b)
	for _, mode := range modes {
		for _, conc := range concurrences {
			for _, target := range compareTargets {
				b.Run(fmt.Sprintf("%s/%s/c%d", target, mode, conc), func(b *testing.B) {
					benchTarget(b, e, target, mode, conc)
				})
			}
		}
	}
}

func benchTarget(b *testing.B, e *environment, target, mode string, conc int) {
	base, mock := e.base[target], e.mocks[target]
	if err := e.warm(base, mock, target, mode, conc); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	r, err := e.drive(base, mock, target, mode, b.N, conc, time.Time{})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	st := r.stats()
	b.ReportMetric(st.rps, "req/s")
	b.ReportMetric(st.p50, "p50_ms")
	b.ReportMetric(st.p99, "p99_ms")
	if mode == modeStream {
		b.ReportMetric(st.ttfbP50, "ttfb_p50_ms")
		b.ReportMetric(st.ttfbP99, "ttfb_p99_ms")
	}
	b.ReportMetric(st.cpuPerReq, "cpu_us/op")
	b.ReportMetric(float64(st.upstreamConns), "upstream_conns")
}
