package prefixcache

import (
	"bytes"
	"fmt"
	"testing"
)

// An entry is found by the bytes an input starts with, in its own scope,
// when accept takes it; the cache keeps no more than its bounds.
func TestLookupFindsWhatAnInputStartsWith(t *testing.T) {
	c := New[int](1, 4, 1000) // 1: no entry is shorter than 64 bytes anyway
	raw := []byte(`["a value long enough to keep, as it is longer than sixty-four bytes"]`)
	if e := c.Keep("alice", raw, 7); e.Len() != len(raw) {
		t.Fatalf("kept %d bytes, want %d", e.Len(), len(raw))
	}
	raw[2] = 'X' // the cache keeps a copy
	in := []byte(`["a value long enough to keep, as it is longer than sixty-four bytes"], and more`)
	if e := c.Lookup("alice", in, nil); e == nil || e.Value != 7 || e.Len() != len(raw) {
		t.Fatalf("Lookup = %+v", e)
	}
	for _, miss := range []struct {
		scope string
		in    []byte
	}{
		{"bob", in}, // another scope
		{"alice", []byte(`["a value long enough to keep, as it is longer than sixty-four byte`)},    // shorter than the entry
		{"alice", []byte(`["a value long enough to keep, as it is longer than sixty-four byteS"]`)}, // one byte differs
		{"alice", []byte(`["short"]`)}, // shorter than MinLen
	} {
		if e := c.Lookup(miss.scope, miss.in, nil); e != nil {
			t.Errorf("Lookup(%q, %s) found an entry", miss.scope, miss.in)
		}
	}
	if e := c.Lookup("alice", in, func(v int) bool { return v != 7 }); e != nil {
		t.Error("Lookup returned an entry accept refused")
	}
	if c.Hits() != 1 {
		t.Errorf("%d hits, want 1", c.Hits())
	}

	// Short bytes and bytes over the bound are not kept.
	c.Keep("alice", []byte(`[1]`), 1)
	if n, _ := c.Size(); n != 1 {
		t.Fatalf("%d entries after keeping short bytes", n)
	}
	c.Keep("alice", bytes.Repeat([]byte("x"), 2000), 2)
	if n, _ := c.Size(); n != 1 {
		t.Fatalf("%d entries after keeping bytes over the bound", n)
	}
	for i := range 20 {
		c.Keep("alice", []byte(fmt.Sprintf(`["entry number %04d, long enough to be kept: more than sixty-four bytes"]`, i)), i)
		if n, size := c.Size(); n > 4 || size > 1000 {
			t.Fatalf("%d entries of %d bytes, more than 4 and 1000", n, size)
		}
	}
	c.Reset()
	if n, size := c.Size(); n != 0 || size != 0 {
		t.Fatalf("after Reset: %d entries of %d bytes", n, size)
	}
}
