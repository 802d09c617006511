package intake

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/zeebo/xxh3"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Claude Code sends the same "tools" and "system" with every request of a
// session, and they are most of its bytes. The walk therefore keeps the
// large objects and arrays it met as top-level values: when a body's value
// starts with the exact bytes of one it validated before, that value is the
// same value (an object or array ends where its bytes say), valid at the
// same depth, and it is not walked again. For a signature, its canonical text
// (see walk.go), which depends on its bytes alone, is kept with it.
//
// A value is found by its owner (Options.Owner: a client only ever meets
// what it sent itself) and a hash of its first bytes, and then compared in
// full, so a match is never mistaken. The cache is bounded in entries and
// bytes; when it is full, entries are dropped at random.

// knownMin is the smallest value, as written, worth keeping.
const knownMin = 1 << 10

// Bounds on what the cache keeps.
const (
	knownEntries = 256
	knownBytes   = 8 << 20
)

// knownKeyLen is how many of a value's first bytes find it.
const knownKeyLen = 64

type knownValue struct {
	owner string
	raw   []byte
	// canon is what a signature's walk wrote for the value, once one did.
	canon atomic.Pointer[canonText]
}

type canonText struct {
	// text is what the walk wrote (for a large value, its hash mark and
	// hash).
	text string
	// foreign records that the value held a thinking signature of this
	// module's.
	foreign bool
}

var known = struct {
	mu sync.RWMutex
	m  map[uint64][]*knownValue
	// n counts the values kept, size their bytes.
	n, size int
}{m: map[uint64][]*knownValue{}}

// knownHits counts the values found in the cache, for the tests.
var knownHits atomic.Int64

func knownKey(owner string, b []byte) uint64 {
	return xxh3.Hash(b[:min(len(b), knownKeyLen)]) ^ xxh3.HashString(owner)
}

// lookupKnown returns the value of owner's that b starts with, or nil.
func lookupKnown(owner string, b []byte) *knownValue {
	if len(b) < knownMin {
		return nil
	}
	k := knownKey(owner, b)
	known.mu.RLock()
	defer known.mu.RUnlock()
	for _, v := range known.m[k] {
		if v.owner == owner && len(v.raw) <= len(b) && bytes.Equal(b[:len(v.raw)], v.raw) {
			return v
		}
	}
	return nil
}

// keepKnown keeps a copy of raw, a valid top-level object or array of
// owner's.
func keepKnown(owner string, raw []byte) *knownValue {
	v := &knownValue{owner: owner, raw: bytes.Clone(raw)}
	k := knownKey(owner, raw)
	known.mu.Lock()
	defer known.mu.Unlock()
	for known.n > 0 && (known.n >= knownEntries || known.size+len(raw) > knownBytes) {
		for old, list := range known.m {
			delete(known.m, old)
			known.n -= len(list)
			for _, x := range list {
				known.size -= len(x.raw)
			}
			break
		}
	}
	if len(raw) > knownBytes {
		return v
	}
	known.m[k] = append(known.m[k], v)
	known.n++
	known.size += len(raw)
	return v
}

// topValue walks the top-level object or array at src[i] that is not
// "messages", and returns where it ends: a value kept from an earlier walk
// is not walked again.
func (w *walker) topValue(i int) (int, error) {
	// Canonical texts are kept as signatures write them (inlineMax).
	full := w.inline == inlineMax
	v := lookupKnown(w.owner, w.src[i:])
	if v != nil {
		knownHits.Add(1)
		if !w.canon {
			return i + len(v.raw), nil
		}
		if c := v.canon.Load(); c != nil && full {
			w.out = append(w.out, c.text...)
			w.foreign = w.foreign || c.foreign
			return i + len(v.raw), nil
		}
	}
	var end int
	var c *canonText
	if w.canon {
		var err error
		if end, c, err = w.canonValue(i); err != nil {
			return 0, err
		}
	} else {
		var err error
		if end, err = rawjson.CheckValue(w.src, i, w.depth); err != nil {
			return 0, grammarError(err)
		}
	}
	if v == nil && end-i >= knownMin {
		v = keepKnown(w.owner, w.src[i:end])
	}
	if v != nil && c != nil && full {
		// A second walk of the same bytes writes the same text.
		v.canon.Store(c)
	}
	return end, nil
}

// canonValue walks the value at src[i] for a signature and, for a value
// worth keeping, returns what it wrote.
func (w *walker) canonValue(i int) (int, *canonText, error) {
	start, foreign := len(w.out), w.foreign
	w.foreign = false
	end, err := w.value(i)
	if err != nil {
		return 0, nil, err
	}
	var c *canonText
	if end-i >= knownMin {
		c = &canonText{text: string(w.out[start:]), foreign: w.foreign}
	}
	w.foreign = w.foreign || foreign
	return end, c, nil
}
