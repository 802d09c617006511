package rawjson

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/bits"
	"strconv"
)

// The functions below walk input that a Check accepted. On anything else they
// stop early or return short spans, but never index out of range.

// SkipString returns the index just past the string starting at the quote
// b[i].
func SkipString(b []byte, i int) int {
	j := i + 1
	// Most strings are short keys and values: a word at a time before
	// paying for a vectorised search. The lowest quote or backslash a word
	// marks is exact.
	for end := min(j+32, len(b)); j+8 <= end; {
		x := binary.LittleEndian.Uint64(b[j:])
		q, s := x^(lsb*'"'), x^(lsb*'\\')
		m := ((q-lsb)&^q | (s-lsb)&^s) & msb
		if m == 0 {
			j += 8
			continue
		}
		p := j + bits.TrailingZeros64(m)>>3
		if b[p] == '"' {
			return p + 1
		}
		j = p + 2
	}
	for j < len(b) {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b)
		}
		p := j + k
		n := 0
		for q := p - 1; q > i && b[q] == '\\'; q-- {
			n++
		}
		if n%2 == 0 {
			return p + 1
		}
		j = p + 1
	}
	return len(b)
}

// SkipValue returns the index just past the value starting at b[i].
func SkipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = SkipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && !IsSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
		j++
	}
	return j
}

// Object iterates over the members of a validated object.
type Object struct {
	b []byte
	i int
	// end is where the object ends, known once Next has returned false.
	end  int
	done bool
}

// NewObject starts an iteration over the object v (leading white space is
// not allowed). Anything but an object yields no member.
func NewObject(v []byte) Object {
	if len(v) < 2 || v[0] != '{' {
		return Object{done: true}
	}
	return Object{b: v, i: 1}
}

// ObjectAt starts an iteration over the object that starts at b[i], for a
// walk that continues after it (see Finish).
func ObjectAt(b []byte, i int) Object {
	if i >= len(b) || b[i] != '{' {
		return Object{done: true}
	}
	return Object{b: b, i: i + 1}
}

// Next returns the next member: its key as written between the quotes, and
// its raw value.
func (o *Object) Next() (key, val []byte, ok bool) {
	if o.done {
		return nil, nil, false
	}
	b := o.b
	i := SkipSpace(b, o.i)
	if i < len(b) && b[i] == ',' {
		i = SkipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		o.done = true
		o.end = min(i+1, len(b))
		return nil, nil, false
	}
	ke := SkipString(b, i)
	key = b[i+1 : max(ke-1, i+1)]
	i = SkipSpace(b, ke)
	if i < len(b) && b[i] == ':' {
		i = SkipSpace(b, i+1)
	}
	ve := SkipValue(b, i)
	o.i = ve
	return key, b[i:ve], true
}

// Finish reads the members left and returns where the object ends.
func (o *Object) Finish() int {
	for _, _, ok := o.Next(); ok; _, _, ok = o.Next() {
	}
	return o.end
}

// Array iterates over the elements of a validated array.
type Array struct {
	b []byte
	i int
}

// NewArray starts an iteration over the array v.
func NewArray(v []byte) Array {
	if len(v) < 2 || v[0] != '[' {
		return Array{}
	}
	return Array{b: v, i: 1}
}

// Start returns where the next element starts.
func (a *Array) Start() (int, bool) {
	b := a.b
	i := SkipSpace(b, a.i)
	if i < len(b) && b[i] == ',' {
		i = SkipSpace(b, i+1)
	}
	if i >= len(b) || b[i] == ']' {
		a.i = len(b)
		return 0, false
	}
	return i, true
}

// Next returns the next element.
func (a *Array) Next() (val []byte, ok bool) {
	i, ok := a.Start()
	if !ok {
		return nil, false
	}
	ve := SkipValue(a.b, i)
	if ve == i {
		a.i = len(a.b)
		return nil, false
	}
	a.i = ve
	return a.b[i:ve], true
}

// NextObject returns the next element read in place, without a pass to find
// its end first; the caller reads it and hands it back with SkipPast before
// asking for the next. isObject is false, and the element skipped, when it is
// not an object.
func (a *Array) NextObject() (o Object, isObject, ok bool) {
	i, ok := a.Start()
	if !ok {
		return Object{done: true}, false, false
	}
	if a.b[i] != '{' {
		a.i = max(SkipValue(a.b, i), i+1)
		return Object{done: true}, false, true
	}
	return Object{b: a.b, i: i + 1}, true, true
}

// SkipPast moves the array past an element that NextObject returned.
func (a *Array) SkipPast(o *Object) { a.i = o.Finish() }

// Field returns the raw value of the member key of the object v, or nil. Keys
// are compared by what they spell, so an escaped key matches. When the key
// appears more than once, the last one wins, as in encoding/json.
func Field(v []byte, key string) []byte {
	var out []byte
	o := NewObject(SkipSpaceLeft(v))
	for k, val, ok := o.Next(); ok; k, val, ok = o.Next() {
		if KeyIs(k, key) {
			out = val
		}
	}
	return out
}

// SkipSpaceLeft returns v without leading white space.
func SkipSpaceLeft(v []byte) []byte { return v[SkipSpace(v, 0):] }

// KeyIs reports whether a key as written between its quotes spells s.
func KeyIs(k []byte, s string) bool {
	if string(k) == s {
		return true
	}
	// An escaped key is longer than what it spells.
	return len(k) > len(s) && HasBackslash(k) && string(AppendUnescaped(nil, k)) == s
}

// KeyName returns what a key as written between its quotes spells; it
// allocates only for a key that holds escapes.
func KeyName(k []byte) []byte {
	if HasBackslash(k) {
		return AppendUnescaped(nil, k)
	}
	return k
}

// HasBackslash reports whether b holds a backslash.
func HasBackslash(b []byte) bool { return bytes.IndexByte(b, '\\') >= 0 }

// IsString reports whether the raw value v is a string.
func IsString(v []byte) bool { return len(v) >= 2 && v[0] == '"' }

// IsObject reports whether the raw value v is an object.
func IsObject(v []byte) bool { return len(v) >= 2 && v[0] == '{' }

// IsArray reports whether the raw value v is an array.
func IsArray(v []byte) bool { return len(v) >= 2 && v[0] == '[' }

// IsNumber reports whether the raw value v is a number.
func IsNumber(v []byte) bool { return len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) }

// Inner returns the content of a raw string between its quotes, still
// escaped, or nil when v is not a string.
func Inner(v []byte) []byte {
	if !IsString(v) {
		return nil
	}
	return v[1 : len(v)-1]
}

// StrIs reports whether v is a JSON string whose value is s.
func StrIs(v []byte, s string) bool {
	in := Inner(v)
	if in == nil {
		return false
	}
	if !HasBackslash(in) {
		return string(in) == s
	}
	return string(AppendUnescaped(nil, in)) == s
}

// Str returns the value of a JSON string, or "" when v is not one. Invalid
// UTF-8 is kept as it is; lone surrogate escapes become U+FFFD.
func Str(v []byte) string {
	in := Inner(v)
	if !HasBackslash(in) {
		return string(in)
	}
	return string(AppendUnescaped(nil, in))
}

// Int returns a JSON number as an int64, truncating fractions; ok is false
// for anything else, and for numbers out of range.
func Int(v []byte) (int64, bool) {
	if !IsNumber(v) {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsNaN(f) || f >= math.MaxInt64 || f <= math.MinInt64 {
		return 0, false
	}
	return int64(f), true
}
