package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// driver is the load client: Claude Code's request, made distinct per
// request, sent by keep-alive workers that check every answer.
type driver struct {
	*fixture
	client *http.Client
	// dials counts the connections the client opened.
	dials atomic.Int64
	// answer maps a mode to the exact bytes the mock answers with.
	answer map[string][]byte
}

func newDriver() (*driver, error) {
	fx, err := loadFixture()
	if err != nil {
		return nil, err
	}
	d := &driver{fixture: fx, answer: map[string][]byte{modeJSON: mockJSON(), modeStream: bytes.Join(mockStream(), nil)}}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	d.client = &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     5 * time.Minute,
		DisableCompression:  true,
	}}
	return d, nil
}

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
	// cpu is the process's CPU time over the run (in-process runs only).
	cpu time.Duration
	// upstreamConns and clientConns count the connections the mock accepted
	// and the client opened during the run.
	upstreamConns, clientConns int64
}

// drive sends n requests for mode to target from conc workers sharing one
// keep-alive client, and stops early at the deadline (if not zero). Every
// body is distinct. Every answer must be the mock's answer, byte for byte,
// and every request must have reached the target's mock: no request may be
// answered from another's upstream call, or the targets would not do the
// same work.
func (d *driver) drive(base string, mock *mockServer, target, mode string, n, conc int, deadline time.Time) (run, error) {
	url := base + d.path
	body, want := d.body[mode], d.answer[mode]
	if target == targetBalancerOpenAI {
		// Converted answers differ from the mock's Anthropic one.
		want = nil
	}
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		failure error
		stop    atomic.Bool
		perWkr  = make([][]sample, conc)
	)
	served0, conns0, dials0 := mock.served.Load(), mock.conns.Load(), d.dials.Load()
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
				s, err := d.do(url, body.next(), buf, want)
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
	r.upstreamConns, r.clientConns = mock.conns.Load()-conns0, d.dials.Load()-dials0
	for _, s := range perWkr {
		r.samples = append(r.samples, s...)
	}
	if failure == nil {
		if got := mock.served.Load() - served0; got != int64(len(r.samples)) {
			failure = fmt.Errorf("%s %s: the mock answered %d requests for %d answers", target, mode, got, len(r.samples))
		}
	}
	return r, failure
}

// do sends one request and reads the whole answer, which must be want
// (when not nil) or at least not empty.
func (d *driver) do(url string, body, buf, want []byte) (sample, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return sample{}, err
	}
	// Every request carries the same header set, client key included; the
	// transport only reads it.
	req.Header = d.header
	t0 := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	var s sample
	got, same := 0, true
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			if got == 0 {
				s.ttfb = time.Since(t0)
			}
			if want != nil {
				same = same && got+k <= len(want) && bytes.Equal(buf[:k], want[got:got+k])
			}
			got += k
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return sample{}, fmt.Errorf("reading the answer: %w", err)
		}
	}
	s.latency = time.Since(t0)
	if resp.StatusCode != http.StatusOK || got == 0 || (want != nil && (!same || got != len(want))) {
		return sample{}, fmt.Errorf("got status %d with %d body bytes (same bytes as the mock's: %v), want 200 with the mock's %d bytes",
			resp.StatusCode, got, same, len(want))
	}
	return s, nil
}

// warmRequests is how many requests a warm-up sends per worker.
const warmRequests = 16

// warm opens conc connections to target and lets both Caddy's and the
// client's pools settle before a measurement.
func (d *driver) warm(base string, mock *mockServer, target, mode string, conc int) error {
	_, err := d.drive(base, mock, target, mode, warmRequests*conc, conc, time.Time{})
	return err
}

// stats summarises a run.
type stats struct {
	requests                   int
	rps                        float64
	p50, p99, ttfbP50, ttfbP99 float64 // milliseconds
	cpuPerReq                  float64 // microseconds of CPU per request
	upstreamConns, clientConns int64
	// peerCPU is the helper process's CPU time over a run it drove.
	peerCPU time.Duration
}

func (r run) stats() stats {
	st := stats{requests: len(r.samples), upstreamConns: r.upstreamConns, clientConns: r.clientConns}
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
