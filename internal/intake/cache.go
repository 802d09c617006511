package intake

import (
	"sync"
	"sync/atomic"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Claude Code sends the same "tools" and "system" with every request of a
// session, and they are most of its bytes. Their canonical text (see
// walk.go) depends on their bytes alone, so the walk keeps what it wrote for
// each large top-level value, by a hash of the value's bytes as written:
// a value seen before is validated and hashed as it lies, and its canonical
// text taken from here, instead of being walked member by member again.
// A hash collision here would be one of the signature's own (both are the
// same seeded 128-bit hash), and an entry only ever says what walking its
// bytes wrote.

// cachedMin is the smallest value, as written, worth a cache entry.
const cachedMin = 1 << 10

// cacheEntries bounds the cache; when it is full, an entry is dropped for
// each one added.
const cacheEntries = 1024

type canonEntry struct {
	// canon is what the walk wrote for the value (for a large one, its
	// hash mark and hash).
	canon string
	// foreign records that the value held a thinking signature of this
	// module's.
	foreign bool
}

// cacheHits counts the values taken from the cache, for the tests.
var cacheHits atomic.Int64

var canonCache = struct {
	mu sync.RWMutex
	m  map[[16]byte]canonEntry
}{m: map[[16]byte]canonEntry{}}

// cachedValue walks the top-level value at src[i], an object or an array,
// for a signature: from the cache when its bytes were walked before.
func (w *walker) cachedValue(i int) (int, error) {
	end, err := rawjson.CheckValue(w.src, i, w.depth)
	if err != nil {
		return 0, grammarError(err)
	}
	if end-i < cachedMin {
		return w.value(i)
	}
	k := hash(w.src[i:end])
	canonCache.mu.RLock()
	e, ok := canonCache.m[k]
	canonCache.mu.RUnlock()
	if ok {
		cacheHits.Add(1)
		w.out = append(w.out, e.canon...)
		w.foreign = w.foreign || e.foreign
		return end, nil
	}
	start, foreign := len(w.out), w.foreign
	w.foreign = false
	if _, err := w.value(i); err != nil {
		return 0, err
	}
	e = canonEntry{canon: string(w.out[start:]), foreign: w.foreign}
	w.foreign = w.foreign || foreign
	canonCache.mu.Lock()
	if len(canonCache.m) >= cacheEntries {
		for old := range canonCache.m {
			delete(canonCache.m, old)
			break
		}
	}
	canonCache.m[k] = e
	canonCache.mu.Unlock()
	return end, nil
}
