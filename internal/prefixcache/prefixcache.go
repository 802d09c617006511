// Package prefixcache keeps large values read before, as their exact bytes
// with what their reader learned from them, and finds the one a longer input
// starts with. Claude Code sends the same "tools" and "system" with every
// request of a session, and they are most of its bytes: intake does not
// validate or sign them again, and the OpenAI converter does not read its
// tools again. A JSON object or array ends where its bytes say, so an input
// that starts with the bytes of one read before holds that same value there.
//
// An entry is found by a hash of its first bytes and its scope (intake's is
// the client's identity: a client only ever meets what it sent), then
// compared in full, so a match is never mistaken. The cache is bounded in
// entries and bytes; when it is full, entries are dropped at random.
package prefixcache

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/zeebo/xxh3"
)

// keyLen is how many of an entry's first bytes find it.
const keyLen = 64

// Cache keeps entries whose bytes are at least minLen long, up to
// maxEntries of them and maxBytes in all.
type Cache[V any] struct {
	minLen, maxEntries, maxBytes int

	mu sync.RWMutex
	m  map[uint64][]*Entry[V]
	// n counts the entries kept, size their bytes.
	n, size int
	hits    atomic.Int64
}

// Entry is a value kept: its bytes, and what its reader learned.
type Entry[V any] struct {
	scope string
	raw   []byte
	Value V
}

// Len is the length of the entry's bytes: an input that starts with them
// holds the value up to there.
func (e *Entry[V]) Len() int { return len(e.raw) }

// New returns an empty cache with the given bounds. Entries are found by
// their first 64 bytes, so none is shorter.
func New[V any](minLen, maxEntries, maxBytes int) *Cache[V] {
	return &Cache[V]{minLen: max(minLen, keyLen), maxEntries: maxEntries, maxBytes: maxBytes, m: map[uint64][]*Entry[V]{}}
}

// MinLen is the length of the shortest bytes the cache keeps.
func (c *Cache[V]) MinLen() int { return c.minLen }

// key finds the entries whose bytes start as b does; b is at least keyLen
// long.
func key(scope string, b []byte) uint64 {
	return xxh3.Hash(b[:keyLen]) ^ xxh3.HashString(scope)
}

// Lookup returns the entry of scope whose bytes b starts with and whose
// value accept takes (nil takes any), or nil.
func (c *Cache[V]) Lookup(scope string, b []byte, accept func(V) bool) *Entry[V] {
	if len(b) < c.minLen {
		return nil
	}
	k := key(scope, b)
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.m[k] {
		if e.scope == scope && len(e.raw) <= len(b) && bytes.Equal(b[:len(e.raw)], e.raw) && (accept == nil || accept(e.Value)) {
			c.hits.Add(1)
			return e
		}
	}
	return nil
}

// Keep keeps a copy of raw under scope, with v, and returns its entry. Bytes
// shorter than MinLen, or longer than the cache holds, are not kept; the
// entry returned then is the caller's alone.
func (c *Cache[V]) Keep(scope string, raw []byte, v V) *Entry[V] {
	e := &Entry[V]{scope: scope, Value: v}
	if len(raw) < c.minLen || len(raw) > c.maxBytes {
		e.raw = raw[:len(raw):len(raw)]
		return e
	}
	e.raw = bytes.Clone(raw)
	k := key(scope, raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n > 0 && (c.n >= c.maxEntries || c.size+len(raw) > c.maxBytes) {
		for old, list := range c.m {
			delete(c.m, old)
			c.n -= len(list)
			for _, x := range list {
				c.size -= len(x.raw)
			}
			break
		}
	}
	c.m[k] = append(c.m[k], e)
	c.n++
	c.size += len(raw)
	return e
}

// Hits counts the entries Lookup found, for tests.
func (c *Cache[V]) Hits() int64 { return c.hits.Load() }

// Size returns how many entries the cache holds and their bytes, for tests.
func (c *Cache[V]) Size() (entries, size int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n, c.size
}

// Reset empties the cache, for tests.
func (c *Cache[V]) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.n, c.size = map[uint64][]*Entry[V]{}, 0, 0
}
