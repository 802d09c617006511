// Package bufpool lends byte buffers by size class (2 KiB to 1 MiB) for
// request bodies and for the answers de-duplication keeps, so that a busy
// balancer does not allocate (and collect) a fresh buffer the size of each
// client's body or answer. A buffer goes back only when its last reader is
// done with it; the caller is responsible for knowing when that is.
package bufpool

import (
	"sync"
	"sync/atomic"
)

const (
	minShift = 11 // 2 KiB
	maxShift = 20 // 1 MiB
)

var classes [maxShift - minShift + 1]sync.Pool

var poison atomic.Bool

// SetPoison makes Put overwrite every buffer it keeps, its whole capacity,
// so that a use after Put reads garbage instead of, silently, another
// request's bytes. For tests.
func SetPoison(on bool) { poison.Store(on) }

// class returns the index of the smallest class that holds n bytes, or -1
// when n is larger than the largest class.
func class(n int) int {
	for i := range classes {
		if n <= 1<<(minShift+i) {
			return i
		}
	}
	return -1
}

// Get returns an empty buffer whose capacity is at least n: from the pool
// when n fits a class, else newly made. A buffer for a quarter of the
// smallest class or less is made to measure: lending 2 KiB for a few hundred
// bytes would cost more memory than it saves work.
func Get(n int) []byte {
	c := class(n)
	if c < 0 || n <= 1<<minShift/4 {
		return make([]byte, 0, n)
	}
	if p, _ := classes[c].Get().(*[]byte); p != nil {
		return (*p)[:0]
	}
	return make([]byte, 0, 1<<(minShift+c))
}

// Put gives a buffer back. Only buffers of a class's exact capacity are
// kept (one that grew past its class, or was never from the pool, is left
// to the collector). Nobody may use b, or anything sliced from it, after.
func Put(b []byte) {
	c := class(cap(b))
	if c < 0 || cap(b) != 1<<(minShift+c) {
		return
	}
	if poison.Load() {
		b = b[:cap(b)]
		for i := range b {
			b[i] = 0xff
		}
	}
	b = b[:0]
	classes[c].Put(&b)
}
