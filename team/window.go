package team

import (
	"sync"
	"time"
)

// slots is the resolution of a sliding window: its span cut in this many
// buckets, so that a window of a minute counts to the second and one of five
// hours to five minutes.
const slots = 60

// window counts events (requests, tokens) over a sliding span of time, in
// buckets, with what other instances on the same storage counted added in.
type window struct {
	mu     sync.Mutex
	span   time.Duration
	width  time.Duration
	local  [slots]bucket
	remote [slots]bucket
}

// bucket counts one slot: start is its start, in nanoseconds since the
// epoch, aligned to the width.
type bucket struct {
	Start int64 `json:"s"`
	N     int64 `json:"n"`
}

func newWindow(span time.Duration) *window {
	w := &window{span: span, width: span / slots}
	if w.width <= 0 {
		w.width = 1
	}
	return w
}

func (w *window) slot(t time.Time) (int, int64) {
	start := t.UnixNano() / int64(w.width) * int64(w.width)
	return int(start / int64(w.width) % slots), start
}

// live reports whether a bucket starting at start still counts at t.
func (w *window) live(start int64, t time.Time) bool {
	return start > t.UnixNano()-int64(w.span)
}

// usedLocked is the count over the span ending at t. The caller holds w.mu.
func (w *window) usedLocked(t time.Time) int64 {
	// A bucket counts while it started after cutoff (see live).
	cutoff := t.UnixNano() - int64(w.span)
	var n int64
	for i := range slots {
		if b := w.local[i]; b.Start > cutoff {
			n += b.N
		}
		if b := w.remote[i]; b.Start > cutoff {
			n += b.N
		}
	}
	return n
}

// addLocked counts n at t. The caller holds w.mu.
func (w *window) addLocked(t time.Time, n int64) {
	i, start := w.slot(t)
	if w.local[i].Start != start {
		w.local[i] = bucket{Start: start}
	}
	w.local[i].N += n
}

// take counts n at t when the count is below limit, and says so; when not,
// it says when enough of the window frees up for the count to be below
// limit again.
func (w *window) take(t time.Time, limit, n int64) (bool, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	used := w.usedLocked(t)
	if used < limit {
		if n > 0 {
			w.addLocked(t, n)
		}
		return true, time.Time{}
	}
	return false, w.freeAtLocked(t, used, limit)
}

// freeAtLocked is when the count falls below limit as buckets leave the
// span, oldest first.
func (w *window) freeAtLocked(t time.Time, used, limit int64) time.Time {
	// Buckets by start, local and remote together.
	var all []bucket
	for i := range slots {
		for _, b := range []bucket{w.local[i], w.remote[i]} {
			if b.N != 0 && w.live(b.Start, t) {
				all = append(all, b)
			}
		}
	}
	sortBuckets(all)
	for _, b := range all {
		used -= b.N
		if used < limit {
			// The bucket stops counting once the span has slid past its start.
			return time.Unix(0, b.Start+int64(w.span))
		}
	}
	return t.Add(w.span)
}

func sortBuckets(b []bucket) {
	for i := 1; i < len(b); i++ {
		for j := i; j > 0 && b[j].Start < b[j-1].Start; j-- {
			b[j], b[j-1] = b[j-1], b[j]
		}
	}
}

// add counts n at t, whatever the limit: tokens an answer used.
func (w *window) add(t time.Time, n int64) {
	w.mu.Lock()
	w.addLocked(t, n)
	w.mu.Unlock()
}

// used is the count over the span ending at t.
func (w *window) used(t time.Time) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.usedLocked(t)
}

// resetAt is when the oldest count in the span leaves it: when the window
// has more room; zero when it is empty.
func (w *window) resetAt(t time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	oldest := int64(0)
	for i := range slots {
		for _, b := range []bucket{w.local[i], w.remote[i]} {
			if b.N != 0 && w.live(b.Start, t) && (oldest == 0 || b.Start < oldest) {
				oldest = b.Start
			}
		}
	}
	if oldest == 0 {
		return time.Time{}
	}
	return time.Unix(0, oldest+int64(w.span))
}

// export returns this instance's live buckets, to share.
func (w *window) export(t time.Time) []bucket {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []bucket
	for _, b := range w.local {
		if b.N != 0 && w.live(b.Start, t) {
			out = append(out, b)
		}
	}
	return out
}

// setRemote replaces what the other instances counted: their buckets, summed.
func (w *window) setRemote(others [][]bucket) {
	var sum [slots]bucket
	for _, bs := range others {
		for _, b := range bs {
			if b.N <= 0 || b.Start%int64(w.width) != 0 {
				continue
			}
			i := int(b.Start / int64(w.width) % slots)
			if sum[i].Start != b.Start {
				if sum[i].Start > b.Start {
					continue
				}
				sum[i] = bucket{Start: b.Start}
			}
			sum[i].N += b.N
		}
	}
	w.mu.Lock()
	w.remote = sum
	w.mu.Unlock()
}
