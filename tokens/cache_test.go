package tokens

import "testing"

func key(i int) cacheKey { return cacheKey{sum: uint64(i) * 0x9e3779b97f4a7c15, n: i} }

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	c := newLRU(3)
	for i := 1; i <= 3; i++ {
		c.put(key(i), cost{text: i})
	}
	if _, ok := c.get(key(1)); !ok { // 1 becomes the most recent; 2 is now the oldest
		t.Fatal("key 1 missing")
	}
	c.put(key(4), cost{text: 4})
	if _, ok := c.get(key(2)); ok {
		t.Error("key 2 survived, want it evicted as least recently used")
	}
	for _, i := range []int{1, 3, 4} {
		if v, ok := c.get(key(i)); !ok || v.text != i {
			t.Errorf("key %d = %+v %v, want text %d", i, v, ok, i)
		}
	}
	if n := c.len(); n != 3 {
		t.Errorf("len = %d, want 3", n)
	}
}

func TestLRUUpdateKeepsOneEntry(t *testing.T) {
	c := newLRU(2)
	c.put(key(1), cost{text: 1})
	c.put(key(1), cost{text: 10, tool: true})
	if v, _ := c.get(key(1)); v.text != 10 || !v.tool {
		t.Errorf("get = %+v, want the updated value", v)
	}
	if n := c.len(); n != 1 {
		t.Errorf("len = %d, want 1", n)
	}
}

func TestLRUStaysBounded(t *testing.T) {
	for _, size := range []int{1, 7, shardedAbove, 5000} {
		c := newLRU(size)
		for i := range 3 * size {
			c.put(key(i), cost{text: i})
		}
		// Sharding rounds each shard up, so the bound may be exceeded by less than one entry per shard.
		if n := c.len(); n > size+len(c.shards)-1 {
			t.Errorf("size %d: %d entries", size, n)
		}
		if v, ok := c.get(key(3*size - 1)); !ok || v.text != 3*size-1 {
			t.Errorf("size %d: newest entry missing", size)
		}
	}
}
