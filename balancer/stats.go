package balancer

import (
	"slices"
	"sync"
	"time"
)

// statsMinutes is how far back a provider's recent activity is kept.
const statsMinutes = 15

// ttftSamples is how many recent times to first token are kept for
// percentiles.
const ttftSamples = 256

// rollingStats keeps a provider's recent activity in one-minute buckets, for
// the status page.
type rollingStats struct {
	mu      sync.Mutex
	buckets [statsMinutes]statBucket
	ttft    [ttftSamples]time.Duration
	ttftN   int
}

type statBucket struct {
	minute                    int64
	requests, failures        int64
	inputTokens, outputTokens int64
	ttftSum                   time.Duration
	ttftCount                 int64
}

func (s *rollingStats) bucket(t time.Time) *statBucket {
	m := t.Unix() / 60
	b := &s.buckets[m%statsMinutes]
	if b.minute != m {
		*b = statBucket{minute: m}
	}
	return b
}

// record counts one attempt.
func (s *rollingStats) record(failed bool, u Usage) {
	t := now()
	s.mu.Lock()
	b := s.bucket(t)
	b.requests++
	if failed {
		b.failures++
	}
	b.inputTokens += u.InputTokens + u.CacheReadTokens + u.CacheCreationTokens
	b.outputTokens += u.OutputTokens
	s.mu.Unlock()
}

func (s *rollingStats) recordTTFT(d time.Duration) {
	t := now()
	s.mu.Lock()
	s.ttft[s.ttftN%ttftSamples] = d
	s.ttftN++
	b := s.bucket(t)
	b.ttftSum += d
	b.ttftCount++
	s.mu.Unlock()
}

// MinuteStats is a provider's activity in one minute.
type MinuteStats struct {
	// Start is the minute's start.
	Start    time.Time
	Requests int64
	Failures int64
	// TTFT is the mean time to first token of the minute's streams (zero
	// without any).
	TTFT time.Duration
}

// Series returns the provider's activity minute by minute over the last
// statsMinutes minutes, oldest first, the current minute last.
func (p *Provider) Series() []MinuteStats {
	s := &p.state.stats
	cur := now().Unix() / 60
	out := make([]MinuteStats, statsMinutes)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range out {
		m := cur - int64(statsMinutes-1-i)
		out[i].Start = time.Unix(m*60, 0)
		b := s.buckets[m%statsMinutes]
		if b.minute != m {
			continue
		}
		out[i].Requests, out[i].Failures = b.requests, b.failures
		if b.ttftCount > 0 {
			out[i].TTFT = b.ttftSum / time.Duration(b.ttftCount)
		}
	}
	return out
}

// RecentStats summarises a provider's activity over the last minutes.
type RecentStats struct {
	Minutes      int
	Requests     int64
	Failures     int64
	InputTokens  int64
	OutputTokens int64
	// TTFT percentiles over the last streamed requests (zero without any).
	TTFTSamples               int
	TTFTP50, TTFTP90, TTFTP99 time.Duration
}

// Recent returns the provider's activity over the last minutes (at most
// statsMinutes).
func (p *Provider) Recent(minutes int) RecentStats {
	if minutes <= 0 || minutes > statsMinutes {
		minutes = statsMinutes
	}
	s := &p.state.stats
	cur := now().Unix() / 60
	out := RecentStats{Minutes: minutes}
	s.mu.Lock()
	for _, b := range s.buckets {
		if b.minute > cur-int64(minutes) && b.minute <= cur {
			out.Requests += b.requests
			out.Failures += b.failures
			out.InputTokens += b.inputTokens
			out.OutputTokens += b.outputTokens
		}
	}
	n := min(s.ttftN, ttftSamples)
	samples := slices.Clone(s.ttft[:n])
	s.mu.Unlock()
	if n > 0 {
		slices.Sort(samples)
		pick := func(q float64) time.Duration { return samples[min(n-1, int(q*float64(n)))] }
		out.TTFTSamples = n
		out.TTFTP50, out.TTFTP90, out.TTFTP99 = pick(0.50), pick(0.90), pick(0.99)
	}
	return out
}
