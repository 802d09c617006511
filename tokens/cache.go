package tokens

import "sync"

// cacheKey identifies a content block by a hash of its raw bytes, their length and where the block sits
// (folded into the hash, since the same bytes count differently as a message's string content or a tool).
type cacheKey struct {
	sum uint64
	n   int
}

// cost is what one block adds to a count: text tokens, which the calibration scales, and fixed tokens
// (overheads, images, documents), which it does not. Keeping them apart lets a warm count add up exactly the
// same integers as a cold one.
type cost struct {
	text, fixed int
	// tool marks an active tool definition, which brings in the tool-use system prompt.
	tool bool
}

func (c *cost) add(d cost) {
	c.text += d.text
	c.fixed += d.fixed
	c.tool = c.tool || d.tool
}

// lru is a bounded least-recently-used map, split into shards so concurrent counts rarely wait on one lock.
// Entries live in a slice linked by index, so a hit moves no memory and an insertion past the bound reuses
// the evicted slot.
type lru struct {
	shards []shard
}

type shard struct {
	mu         sync.Mutex
	index      map[cacheKey]int32
	entries    []entry
	head, tail int32 // most and least recently used, -1 when empty
	capacity   int
}

type entry struct {
	key        cacheKey
	val        cost
	prev, next int32
}

// shardedAbove is the size from which the cache is split; below it one shard keeps the bound exact.
const shardedAbove = 1024

func newLRU(size int) *lru {
	n := 1
	if size >= shardedAbove {
		n = 16
	}
	c := &lru{shards: make([]shard, n)}
	for i := range c.shards {
		s := &c.shards[i]
		s.capacity = (size + n - 1) / n
		s.index = make(map[cacheKey]int32, min(s.capacity, 4096))
		s.head, s.tail = -1, -1
	}
	return c
}

func (c *lru) shard(k cacheKey) *shard {
	return &c.shards[k.sum>>60%uint64(len(c.shards))]
}

func (c *lru) get(k cacheKey) (cost, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[k]
	if !ok {
		return cost{}, false
	}
	s.toFront(i)
	return s.entries[i].val, true
}

func (c *lru) put(k cacheKey, v cost) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[k]; ok {
		s.entries[i].val = v
		s.toFront(i)
		return
	}
	var i int32
	if len(s.entries) < s.capacity {
		i = int32(len(s.entries))
		s.entries = append(s.entries, entry{prev: -1, next: -1})
	} else {
		i = s.tail
		s.unlink(i)
		delete(s.index, s.entries[i].key)
	}
	s.entries[i].key, s.entries[i].val = k, v
	s.index[k] = i
	s.pushFront(i)
}

func (c *lru) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}

func (s *shard) toFront(i int32) {
	if s.head == i {
		return
	}
	s.unlink(i)
	s.pushFront(i)
}

func (s *shard) unlink(i int32) {
	e := &s.entries[i]
	if e.prev >= 0 {
		s.entries[e.prev].next = e.next
	} else {
		s.head = e.next
	}
	if e.next >= 0 {
		s.entries[e.next].prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (s *shard) pushFront(i int32) {
	e := &s.entries[i]
	e.prev, e.next = -1, s.head
	if s.head >= 0 {
		s.entries[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}
