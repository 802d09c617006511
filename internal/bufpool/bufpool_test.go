package bufpool

import "testing"

func TestGetCapacity(t *testing.T) {
	for _, n := range []int{0, 1, 16 << 10, 16<<10 + 1, 47 << 10, 1 << 20, 1<<20 + 1, 5 << 20} {
		b := Get(n)
		if len(b) != 0 || cap(b) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(b), cap(b))
		}
		if n > 4<<10 && n <= 1<<20 && cap(b)&(cap(b)-1) != 0 {
			t.Fatalf("Get(%d): capacity %d is not a class size", n, cap(b))
		}
		Put(b)
	}
}

func TestPutKeepsOnlyClassSizes(t *testing.T) {
	// A buffer of an odd capacity never comes back from Get: every buffer
	// Get returns for a class has that class's capacity.
	for i := 0; i < 100; i++ {
		Put(make([]byte, 100, 20<<10))
		Put(make([]byte, 0, 2<<20))
		if b := Get(20 << 10); cap(b) != 32<<10 {
			t.Fatalf("Get(20 KiB) capacity %d, want 32 KiB", cap(b))
		}
	}
}

func TestReuse(t *testing.T) {
	// With the collector idle, a buffer given back is lent again: the point
	// of the pool. sync.Pool may drop items, so one reuse in many tries is
	// enough, and none at all is a failure.
	reused := false
	for i := 0; i < 100 && !reused; i++ {
		b := Get(40 << 10)
		b = append(b, 'x')
		p := &b[:1][0]
		Put(b)
		c := Get(40 << 10)
		reused = &c[:1][0] == p
		Put(c)
	}
	if !reused {
		t.Fatal("no buffer was ever lent twice")
	}
}

func TestSmallBuffersAreMadeToMeasure(t *testing.T) {
	if b := Get(100); cap(b) != 100 {
		t.Fatalf("Get(100) capacity %d", cap(b))
	}
}

func TestPoison(t *testing.T) {
	SetPoison(true)
	defer SetPoison(false)
	b := append(Get(5000), "secret"...)
	kept := b[:6]
	Put(b)
	if string(kept) == "secret" {
		t.Fatal("a poisoned Put left the bytes as they were")
	}
}

func BenchmarkGetPut(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Put(Get(47 << 10))
	}
}
