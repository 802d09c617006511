package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sample is one request as the client saw it.
type sample struct {
	// latency runs from sending the request to reading the last body byte.
	latency time.Duration
	// ttfb runs from sending the request to reading the first body byte.
	ttfb time.Duration
}

// run is the outcome of driving one target.
type run struct {
	samples []sample
	elapsed time.Duration
	cpu     time.Duration
}

// keySeq numbers the client keys, so that no two requests are identical.
var keySeq atomic.Uint64

// drive sends n requests for mode to target from conc workers sharing one
// keep-alive client, and stops early at the deadline (if not zero). Every
// answer must be the mock's answer, byte count for byte count, and every
// request must have reached the mock: no request may be answered from
// another's upstream call, or the targets would not do the same work.
func (e *environment) drive(target, mode string, n, conc int, deadline time.Time) (run, error) {
	url := e.base[target] + e.path
	body, want := e.body[mode], len(e.answer[mode])
	if target == targetBalancerOpenAI {
		// Converted answers differ in length from the mock's Anthropic one.
		want = -1
	}
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		failure error
		stop    atomic.Bool
		perWkr  = make([][]sample, conc)
	)
	served0 := e.served.Load()
	cpu0 := processCPU()
	t0 := time.Now()
	for w := range conc {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			own := make([]sample, 0, n/conc+1)
			for !stop.Load() && next.Add(1) <= int64(n) {
				if !deadline.IsZero() && time.Now().After(deadline) {
					break
				}
				s, err := e.do(url, body, buf, want)
				if err != nil {
					errOnce.Do(func() { failure = fmt.Errorf("%s %s: %w", target, mode, err) })
					stop.Store(true)
					break
				}
				own = append(own, s)
			}
			perWkr[w] = own
		})
	}
	wg.Wait()
	r := run{elapsed: time.Since(t0), cpu: processCPU() - cpu0}
	for _, s := range perWkr {
		r.samples = append(r.samples, s...)
	}
	if failure == nil {
		if got := e.served.Load() - served0; got != int64(len(r.samples)) {
			failure = fmt.Errorf("%s %s: the mock answered %d requests for %d answers", target, mode, got, len(r.samples))
		}
	}
	return r, failure
}

// do sends one request and reads the whole answer.
func (e *environment) do(url string, body, buf []byte, want int) (sample, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return sample{}, err
	}
	// Each request carries its own API key, as distinct Claude Code users
	// would: the key is part of the balancer's de-duplication signature, so
	// concurrent requests with the same body never share an upstream call.
	req.Header = e.header.Clone()
	req.Header["X-Api-Key"] = []string{"sk-ant-bench-" + strconv.FormatUint(keySeq.Add(1), 10)}
	t0 := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	var s sample
	got := 0
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 && got == 0 {
			s.ttfb = time.Since(t0)
		}
		got += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return sample{}, fmt.Errorf("reading the answer: %w", err)
		}
	}
	s.latency = time.Since(t0)
	if resp.StatusCode != http.StatusOK || (want >= 0 && got != want) || got == 0 {
		return sample{}, fmt.Errorf("got status %d with %d body bytes, want 200 with %d", resp.StatusCode, got, want)
	}
	return s, nil
}

// warm opens conc connections to target and lets both Caddy's and the
// client's pools settle before a measurement.
func (e *environment) warm(target, mode string, conc int) error {
	_, err := e.drive(target, mode, 4*conc, conc, time.Time{})
	return err
}

// stats summarises a run.
type stats struct {
	requests                   int
	rps                        float64
	p50, p99, ttfbP50, ttfbP99 float64 // milliseconds
	cpuPerReq                  float64 // microseconds of process CPU per request
}

func (r run) stats() stats {
	st := stats{requests: len(r.samples)}
	if st.requests == 0 {
		return st
	}
	st.rps = float64(st.requests) / r.elapsed.Seconds()
	st.cpuPerReq = float64(r.cpu.Microseconds()) / float64(st.requests)
	lat := make([]time.Duration, len(r.samples))
	ttfb := make([]time.Duration, len(r.samples))
	for i, s := range r.samples {
		lat[i], ttfb[i] = s.latency, s.ttfb
	}
	slices.Sort(lat)
	slices.Sort(ttfb)
	st.p50, st.p99 = ms(percentile(lat, 0.50)), ms(percentile(lat, 0.99))
	st.ttfbP50, st.ttfbP99 = ms(percentile(ttfb, 0.50)), ms(percentile(ttfb, 0.99))
	return st
}

// percentile returns the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
