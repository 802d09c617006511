package dedup

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/intake"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// discardWriter is a ResponseWriter that keeps nothing but, when given room,
// the time of each body write.
type discardWriter struct {
	header http.Header
	t0     time.Time
	times  []int64
	n      int
}

func newDiscardWriter(times []int64) *discardWriter {
	return &discardWriter{header: http.Header{}, times: times}
}

func (d *discardWriter) Header() http.Header { return d.header }

func (d *discardWriter) WriteHeader(int) {}

func (d *discardWriter) Write(p []byte) (int, error) {
	if d.n < len(d.times) {
		d.times[d.n] = int64(time.Since(d.t0))
	}
	d.n++
	return len(p), nil
}

func (d *discardWriter) Flush() {}

// BenchmarkFanOut streams 2,000 events to N members and reports the delay
// between Output.Write and each member's write of the same event, the rate of
// deliveries (events times members per second), and the memory each member
// costs: live heap and goroutine stack once joined, and what it allocates
// while streaming (for one member, that includes the group's own cost). "paced" writes one event per millisecond (ten
// times a fast model's rate); "burst" writes as fast as it can.
func BenchmarkFanOut(b *testing.B) {
	for _, pace := range []time.Duration{time.Millisecond, 0} {
		for _, n := range []int{1, 10, 100, 1000} {
			name := "paced"
			if pace == 0 {
				name = "burst"
			}
			b.Run(fmt.Sprintf("%s/members=%d", name, n), func(b *testing.B) { benchFanOut(b, n, pace) })
		}
	}
}

func benchFanOut(b *testing.B, members int, pace time.Duration) {
	const events = 2000
	data := []byte(`{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" a few streamed words"}}`)
	ev := relay.Event{Raw: sse.Append(nil, "content_block_delta", data), Data: data,
		Info: anthropic.EventInfo{Type: anthropic.EventContentBlockDelta}}
	header := http.Header{"Content-Type": {"text/event-stream"}, "Request-Id": {"req_1"}}
	var (
		lags                        []int64
		heapPer, stackPer, allocPer float64
		elapsed                     time.Duration
	)
	ticket := intake.TicketFor(Key{})
	for i := 0; i < b.N; i++ {
		r := New(Options{})
		writers := make([]*discardWriter, members)
		reqs := make([]*http.Request, members)
		t0 := time.Now()
		for j := range writers {
			writers[j] = newDiscardWriter(make([]int64, events))
			writers[j].t0 = t0
			reqs[j] = httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
		}
		sent := make([]int64, events)
		gate := make(chan struct{})
		run := func(ctx context.Context, out relay.Output) *relay.Failure {
			<-gate
			if err := out.Start(http.StatusOK, header, true); err != nil {
				return nil
			}
			next := time.Now()
			for k := range events {
				if pace > 0 {
					next = next.Add(pace)
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
				}
				sent[k] = int64(time.Since(t0))
				if err := out.Event(ev, false); err != nil {
					return nil
				}
			}
			return nil
		}

		var m0, m1, m2 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		var wg sync.WaitGroup
		wg.Add(members)
		for j := range members {
			go func() {
				defer wg.Done()
				r.Serve(writers[j], reqs[j], ticket, true, run)
			}()
			if j == 0 {
				eventually(b, "leader", func() bool { return r.Stats().Active == 1 })
			}
		}
		eventually(b, "members joined", func() bool { return r.Stats().Joins == uint64(members-1) })
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.StartTimer()
		start := time.Now()
		close(gate)
		wg.Wait()
		elapsed += time.Since(start)
		b.StopTimer()
		runtime.ReadMemStats(&m2)

		heapPer += float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(members)
		stackPer += float64(int64(m1.StackInuse)-int64(m0.StackInuse)) / float64(members)
		// Allocations while streaming, less the group's own copy of the events.
		shared := float64(events * (len(ev.Raw) + 64))
		allocPer += (float64(m2.TotalAlloc-m1.TotalAlloc) - shared) / float64(members)
		for _, w := range writers {
			for k := range events {
				lags = append(lags, w.times[k]-sent[k])
			}
		}
	}
	slices.Sort(lags)
	pct := func(p float64) float64 { return float64(lags[int(float64(len(lags)-1)*p)]) / 1e3 }
	b.ReportMetric(pct(0.50), "p50-lag-µs")
	b.ReportMetric(pct(0.99), "p99-lag-µs")
	b.ReportMetric(heapPer/float64(b.N), "heap-B/member")
	b.ReportMetric(stackPer/float64(b.N), "stack-B/member")
	b.ReportMetric(allocPer/float64(b.N), "stream-alloc-B/member")
	b.ReportMetric(float64(b.N*members*events)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(0, "ns/op")
}
