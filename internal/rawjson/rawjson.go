// Package rawjson is the module's one JSON grammar: what the module accepts
// as JSON from clients and providers on the request path (bodies, events,
// chunks), and the tools to walk it without decoding it. What the module
// decodes into Go values (error envelopes, model lists, its own shared
// state) goes through encoding/json.
//
// The grammar is RFC 8259's, with two liberties that keep a request's bytes
// intact on their way to the provider: strings may hold invalid UTF-8, and
// \u escapes may name lone surrogates. Both pass byte for byte; the provider
// is their judge. Nesting is bounded by MaxDepth. Numbers, escapes, literals
// and control characters follow the RFC exactly, so "016" or a raw tab in a
// string is refused on every path.
//
// There are two kinds of walks. The Check functions validate as they go and
// say where input breaks the grammar. The Skip functions, Object and Array
// walk input that a Check already accepted, as fast as the bytes allow: on
// anything else they stop early or return short spans, but never index out of
// range.
package rawjson

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// MaxDepth is the deepest nesting of objects and arrays accepted: a hostile
// body cannot exhaust the stack, and every path refuses the same documents.
const MaxDepth = 512

// SyntaxError says where and why input breaks the grammar.
type SyntaxError struct {
	// Offset is the byte offset of the error.
	Offset int
	// Reason says what was wrong.
	Reason string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%s at offset %d", e.Reason, e.Offset) }

func syntaxErr(off int, reason string) error { return &SyntaxError{Offset: off, Reason: reason} }

// IsSpace reports whether c is JSON white space.
func IsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// SkipSpace returns the index of the first byte at or after i that is not
// white space.
func SkipSpace(b []byte, i int) int {
	for i < len(b) && IsSpace(b[i]) {
		i++
	}
	return i
}

// Valid reports whether b holds exactly one JSON value, with optional white
// space around it.
func Valid(b []byte) bool { return Check(b) == nil }

// Check validates that b holds exactly one JSON value, with optional white
// space around it.
func Check(b []byte) error {
	i := SkipSpace(b, 0)
	end, err := CheckValue(b, i, 0)
	if err != nil {
		return err
	}
	if end = SkipSpace(b, end); end != len(b) {
		return syntaxErr(end, "unexpected data after the JSON value")
	}
	return nil
}

// CheckValue validates the value starting at b[i] and returns the index just
// past it. depth is the number of objects and arrays around the value.
func CheckValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, syntaxErr(i, "unexpected end of JSON input")
	}
	switch c := b[i]; {
	case c == '"':
		return CheckString(b, i)
	case c == '{':
		return checkObject(b, i, depth)
	case c == '[':
		return checkArray(b, i, depth)
	case c == 't':
		return checkLiteral(b, i, "true")
	case c == 'f':
		return checkLiteral(b, i, "false")
	case c == 'n':
		return checkLiteral(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return CheckNumber(b, i)
	default:
		return 0, syntaxErr(i, fmt.Sprintf("unexpected character %q", c))
	}
}

func checkObject(b []byte, i, depth int) (int, error) {
	if depth >= MaxDepth {
		return 0, syntaxErr(i, "JSON nested too deeply")
	}
	i = SkipSpace(b, i+1)
	if i >= len(b) {
		return 0, syntaxErr(i, "unexpected end of JSON input")
	}
	if b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, syntaxErr(i, "expected a string key")
		}
		ke, err := CheckString(b, i)
		if err != nil {
			return 0, err
		}
		i = SkipSpace(b, ke)
		if i >= len(b) || b[i] != ':' {
			return 0, syntaxErr(i, "expected ':'")
		}
		if i, err = CheckValue(b, SkipSpace(b, i+1), depth+1); err != nil {
			return 0, err
		}
		i = SkipSpace(b, i)
		if i >= len(b) {
			return 0, syntaxErr(i, "unexpected end of JSON input")
		}
		switch b[i] {
		case '}':
			return i + 1, nil
		case ',':
			i = SkipSpace(b, i+1)
		default:
			return 0, syntaxErr(i, "expected ',' or '}'")
		}
	}
}

func checkArray(b []byte, i, depth int) (int, error) {
	if depth >= MaxDepth {
		return 0, syntaxErr(i, "JSON nested too deeply")
	}
	i = SkipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = CheckValue(b, i, depth+1); err != nil {
			return 0, err
		}
		i = SkipSpace(b, i)
		if i >= len(b) {
			return 0, syntaxErr(i, "unexpected end of JSON input")
		}
		switch b[i] {
		case ']':
			return i + 1, nil
		case ',':
			i = SkipSpace(b, i+1)
		default:
			return 0, syntaxErr(i, "expected ',' or ']'")
		}
	}
}

func checkLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, syntaxErr(i, "invalid literal")
	}
	return i + len(lit), nil
}

// CheckNumber validates the number starting at b[i] (RFC 8259: no leading
// zeros, no bare dot, no "+", digits after "." and "e") and returns the index
// just past it.
func CheckNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return 0, syntaxErr(start, "invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, syntaxErr(start, "invalid number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return 0, syntaxErr(start, "invalid number")
		}
	}
	// "016" or "1x" ends where no value may: the caller finds the stray byte,
	// but a digit right after a leading zero is the number's own fault.
	if i < len(b) && b[i] >= '0' && b[i] <= '9' {
		return 0, syntaxErr(start, "invalid number")
	}
	return i, nil
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// stringStop marks the bytes a string scan stops at: the quote, the
// backslash and the control characters.
var stringStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// CheckString validates the string starting at the quote b[i] and returns
// the index just past its closing quote. Control characters must be escaped
// and escapes must be JSON's; invalid UTF-8 and lone surrogate escapes pass.
//
// Strings are most of a request, so this is the grammar's hot loop. The
// first bytes (keys, types, ids are short) are read eight at a time, looking
// for the quote, the backslash and the control characters at once. Past
// them, the runtime's vectorised search finds the closing quote once, the
// run before it is checked for control characters (see controlAt), and the
// escapes in that run are found with the vectorised search too. The closing
// quote is only looked for again when an escape took the one found, after
// the bytes that follow it were read a word at a time: escaped quotes come
// in numbers.
func CheckString(b []byte, i int) (int, error) { return CheckStringFrom(b, i, i+1) }

// StringEnd is CheckString for the short strings of a stream's events: it
// returns the index just after the closing quote of the string that starts
// at the quote b[i], or -1 when the string is not valid (or runs to the
// end of b). It reads eight bytes at a time and keeps no error, so it costs
// a few instructions a word where CheckString's larger loop costs more to
// enter than a short string takes to read; FuzzStringEnd holds the two
// equal.
func StringEnd(b []byte, i int) int {
	start := i
	i++
	for i+8 <= len(b) {
		m := Stops(binary.LittleEndian.Uint64(b[i:]))
		if m == 0 {
			i += 8
			continue
		}
		p := i + bits.TrailingZeros64(m)>>3
		switch b[p] {
		case '"':
			return p + 1
		case '\\':
			n, err := checkEscape(b, p, start)
			if err != nil {
				return -1
			}
			i = p + n
		default:
			return -1
		}
	}
	for i < len(b) {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			n, err := checkEscape(b, i, start)
			if err != nil {
				return -1
			}
			i += n
		case c < 0x20:
			return -1
		default:
			i++
		}
	}
	return -1
}

// CheckStringFrom is CheckString for the string that starts at the quote
// b[start], when the caller found the bytes between the quote and b[i]
// (start < i <= len(b)) free of quotes, backslashes and control characters.
func CheckStringFrom(b []byte, start, i int) (int, error) {
	short := start + 1 + shortString
	// Word by word while stops come soon: in a short string, and after an
	// escaped quote, which comes with others more often than not.
	limit := short
	for {
		for i < limit && i < len(b) {
			var m uint64
			if i+8 <= len(b) {
				m = Stops(binary.LittleEndian.Uint64(b[i:]))
			} else if m = Stops(tailWord(b, i)); m == 0 {
				// The last bytes, and no quote among them.
				return unterminated(b, i, start)
			}
			if m == 0 {
				i += 8
				continue
			}
			p := i + bits.TrailingZeros64(m)>>3
			if b[p] == '"' {
				return p + 1, nil
			}
			var err error
			if b[p] == '\\' {
				var n int
				if n, err = checkEscape(b, p, start); err == nil {
					i = p + n
					continue
				}
			} else {
				err = syntaxErr(p, "control character in string")
			}
			// Past its first bytes, a string that never ends says so
			// first.
			if p >= short && bytes.IndexByte(b[i:], '"') < 0 {
				return unterminated(b, i, start)
			}
			return 0, err
		}
		// Then the runtime's search for the quote, and for the escapes
		// before it.
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return unterminated(b, i, start)
		}
		q += i
		// The first control character before the quote, if any: escapes
		// before it are checked first, and none can hide it.
		c := q
		if k := controlAt(b[i:q]); k >= 0 {
			c = i + k
		}
		for {
			e := bytes.IndexByte(b[i:c], '\\')
			if e < 0 {
				if c < q {
					return 0, syntaxErr(c, "control character in string")
				}
				return q + 1, nil
			}
			n, err := checkEscape(b, i+e, start)
			if err != nil {
				return 0, err
			}
			i += e + n
			if i > q {
				// The quote found was escaped.
				break
			}
		}
		limit = i + 64
	}
}

// CheckKey is CheckString for an object key, which is short, and also
// reports whether the key is plain: ASCII without escapes. A key is only
// found plain when that costs nothing more; false says nothing.
func CheckKey(b []byte, i int) (end int, plain bool, err error) {
	if j := i + 1; j+16 <= len(b) {
		x := binary.LittleEndian.Uint64(b[j:])
		var high uint64
		m := Stops(x)
		if m == 0 {
			high = x & msb
			j += 8
			x = binary.LittleEndian.Uint64(b[j:])
			m = Stops(x)
		}
		if m != 0 {
			n := bits.TrailingZeros64(m) >> 3
			if b[j+n] == '"' {
				before := uint64(1)<<(8*n) - 1
				return j + n + 1, (high|x&before)&msb == 0, nil
			}
		}
	}
	end, err = CheckString(b, i)
	return end, false, err
}

// shortString is how many bytes of a string are checked in order before a
// missing closing quote takes precedence over errors after them.
const shortString = 24

// unterminated reports the error of the string that starts at start and has
// no quote at or after b[i]: the first error among its first shortString
// bytes, else that it is unterminated.
func unterminated(b []byte, i, start int) (int, error) {
	for short := min(start+1+shortString, len(b)); i < short; {
		c := b[i]
		if !stringStop[c] {
			i++
			continue
		}
		if c != '\\' {
			return 0, syntaxErr(i, "control character in string")
		}
		n, err := checkEscape(b, i, start)
		if err != nil {
			return 0, err
		}
		i += n
	}
	return 0, syntaxErr(start, "unterminated string")
}

// tailWord is the word of b's last bytes from b[i] (fewer than eight),
// filled up with bytes no string scan stops at.
func tailWord(b []byte, i int) uint64 {
	k := uint(len(b) - i)
	fill := ^uint64(0) << (8 * k) & (lsb * 'a')
	if len(b) >= 8 {
		return binary.LittleEndian.Uint64(b[len(b)-8:])>>(8*(8-k)) | fill
	}
	w := [8]byte{'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'}
	copy(w[:], b[i:])
	return binary.LittleEndian.Uint64(w[:])
}

// Stops marks with its high bit each byte of x (eight bytes of a string,
// little-endian) that a string scan stops at: the quote, the backslash and
// the control characters. Only the lowest mark is exact (a borrow can mark
// the bytes above a stop), which is the one a scan takes.
func Stops(x uint64) uint64 {
	q := x ^ (lsb * '"')
	s := x ^ (lsb * '\\')
	return ((q-lsb)&^q | (s-lsb)&^s | (x-lsb*0x20)&^x) & msb
}

// checkEscape validates the escape at the backslash b[i] of the string that
// starts at start, and returns its length.
func checkEscape(b []byte, i, start int) (int, error) {
	if i+1 >= len(b) {
		return 0, syntaxErr(start, "unterminated string")
	}
	switch b[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, nil
	case 'u':
		if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
			return 0, syntaxErr(i, "invalid \\u escape in string")
		}
		return 6, nil
	}
	return 0, syntaxErr(i, "invalid escape in string")
}

// controlAt returns the index of the first control character (below 0x20)
// in b, or -1.
//
// Sixty-four bytes at a time, a subtraction that borrows from each byte below
// 0x20 sets its high bit, which passes ASCII text at less than an instruction
// a byte. Bytes from 0xa0 up set it too: after the first block where that
// misleads, the rest of the run, likely more of the same text, is read with
// the exact test.
func controlAt(b []byte) int {
	const c = lsb * 0x20
	j := 0
	for ; j+64 <= len(b); j += 64 {
		w := (*[64]byte)(b[j : j+64])
		if ((le64(w, 0)-c)|(le64(w, 8)-c)|(le64(w, 16)-c)|(le64(w, 24)-c)|
			(le64(w, 32)-c)|(le64(w, 40)-c)|(le64(w, 48)-c)|(le64(w, 56)-c))&msb != 0 {
			break
		}
	}
	for ; j+32 <= len(b); j += 32 {
		w := (*[32]byte)(b[j : j+32])
		x0 := binary.LittleEndian.Uint64(w[:])
		x1 := binary.LittleEndian.Uint64(w[8:])
		x2 := binary.LittleEndian.Uint64(w[16:])
		x3 := binary.LittleEndian.Uint64(w[24:])
		if ((x0-c)&^x0|(x1-c)&^x1|(x2-c)&^x2|(x3-c)&^x3)&msb != 0 {
			break
		}
	}
	for ; j+8 <= len(b); j += 8 {
		x := binary.LittleEndian.Uint64(b[j:])
		if m := (x - c) &^ x & msb; m != 0 {
			return j + bits.TrailingZeros64(m)>>3
		}
	}
	if j == len(b) {
		return -1
	}
	if j >= 8 {
		// The last bytes, in the word that ends the run: the bytes it
		// reads again were clean.
		j = len(b) - 8
		x := binary.LittleEndian.Uint64(b[j:])
		if m := (x - c) &^ x & msb; m != 0 {
			return j + bits.TrailingZeros64(m)>>3
		}
		return -1
	}
	for ; j < len(b); j++ {
		if b[j] < 0x20 {
			return j
		}
	}
	return -1
}

// le64 reads the eight bytes at w[i:], little-endian.
func le64(w *[64]byte, i int) uint64 {
	return uint64(w[i]) | uint64(w[i+1])<<8 | uint64(w[i+2])<<16 | uint64(w[i+3])<<24 |
		uint64(w[i+4])<<32 | uint64(w[i+5])<<40 | uint64(w[i+6])<<48 | uint64(w[i+7])<<56
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if hexVal(c) < 0 {
			return false
		}
	}
	return true
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// ObjectWalk walks an object and validates it as it goes: the caller takes
// each key, then validates its value with Value (or with a walk of its own,
// ending with SetEnd). Parsing and validation are then one pass.
type ObjectWalk struct {
	b     []byte
	i     int
	depth int
	first bool
	// valid: the document is known valid (WalkValidObject).
	valid bool
}

// WalkObject starts a walk of the object at b[i], which depth objects and
// arrays enclose. It fails when there is no object there, or when the object
// would nest too deeply.
func WalkObject(b []byte, i, depth int) (ObjectWalk, error) {
	if i >= len(b) || b[i] != '{' {
		return ObjectWalk{}, syntaxErr(i, "expected an object")
	}
	if depth >= MaxDepth {
		return ObjectWalk{}, syntaxErr(i, "JSON nested too deeply")
	}
	return ObjectWalk{b: b, i: i + 1, depth: depth, first: true}, nil
}

// WalkValidObject is WalkObject over a document known to be valid (one that
// Check accepted, or a reader of this grammar did): its keys and values are
// read without being checked again, and Value skips a value rather than
// validating it. On bytes that are not valid JSON after all, the walk ends
// early or reads nonsense; it never reads out of bounds.
func WalkValidObject(b []byte, i, depth int) (ObjectWalk, error) {
	w, err := WalkObject(b, i, depth)
	w.valid = true
	return w, err
}

// ResumeObject continues a walk of the object that encloses b[i], which
// depth objects and arrays enclose, after its members before b[i]: a walk of
// the same bytes (in an earlier document that began with them) read them,
// and b[i] is where that walk stood after their last value. It is how a
// reader of many documents that start alike reads their common start once.
func ResumeObject(b []byte, i, depth int) ObjectWalk {
	return ObjectWalk{b: b, i: i, depth: depth}
}

// Key returns the next key, quotes included and as written, and leaves the
// walk at its value; ok is false after the closing brace, and At then says
// where the object ends.
func (o *ObjectWalk) Key() (quoted []byte, ok bool, err error) {
	b := o.b
	i := SkipSpace(b, o.i)
	if i >= len(b) {
		return nil, false, syntaxErr(i, "unexpected end of JSON input")
	}
	if b[i] == '}' && o.first {
		o.i = i + 1
		return nil, false, nil
	}
	if !o.first {
		switch b[i] {
		case '}':
			o.i = i + 1
			return nil, false, nil
		case ',':
			i = SkipSpace(b, i+1)
		default:
			return nil, false, syntaxErr(i, "expected ',' or '}'")
		}
	}
	o.first = false
	if i >= len(b) || b[i] != '"' {
		return nil, false, syntaxErr(i, "expected a string key")
	}
	var ke int
	if o.valid {
		ke = SkipString(b, i)
	} else if ke, err = CheckString(b, i); err != nil {
		return nil, false, err
	}
	quoted = b[i:ke]
	i = SkipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		return nil, false, syntaxErr(i, "expected ':'")
	}
	o.i = SkipSpace(b, i+1)
	return quoted, true, nil
}

// Value validates the value the walk is at and returns it.
func (o *ObjectWalk) Value() ([]byte, error) {
	start := o.i
	end, err := CheckOrSkip(o.b, start, o.depth+1, o.valid)
	if err != nil {
		return nil, err
	}
	o.i = end
	return o.b[start:end], nil
}

// CheckOrSkip validates the value at b[i] as CheckValue does or, in a
// document known to be valid (see WalkValidObject), skips it.
func CheckOrSkip(b []byte, i, depth int, valid bool) (int, error) {
	if !valid {
		return CheckValue(b, i, depth)
	}
	if i >= len(b) {
		return 0, syntaxErr(i, "unexpected end of JSON input")
	}
	return max(SkipValue(b, i), i+1), nil
}

// Members validates the whole of the object at b[i] (which depth objects
// and arrays enclose) and calls fn with each member's key, as written
// between its quotes, and value. It returns where the object ends.
func Members(b []byte, i, depth int, fn func(key, value []byte)) (int, error) {
	w, err := WalkObject(b, i, depth)
	if err != nil {
		return 0, err
	}
	for {
		k, ok, err := w.Key()
		if err != nil {
			return 0, err
		}
		if !ok {
			return w.At(), nil
		}
		v, err := w.Value()
		if err != nil {
			return 0, err
		}
		fn(k[1:len(k)-1], v)
	}
}

// At is where the walk is: the start of the current value, or the end of
// the object once Key returned false.
func (o *ObjectWalk) At() int { return o.i }

// Depth is the depth of the object's values.
func (o *ObjectWalk) Depth() int { return o.depth + 1 }

// SetEnd moves the walk past a value the caller validated itself.
func (o *ObjectWalk) SetEnd(end int) { o.i = end }

// ArrayWalk is ObjectWalk for arrays.
type ArrayWalk struct {
	b     []byte
	i     int
	depth int
	first bool
	valid bool
}

// WalkArray starts a walk of the array at b[i], which depth objects and
// arrays enclose.
func WalkArray(b []byte, i, depth int) (ArrayWalk, error) {
	if i >= len(b) || b[i] != '[' {
		return ArrayWalk{}, syntaxErr(i, "expected an array")
	}
	if depth >= MaxDepth {
		return ArrayWalk{}, syntaxErr(i, "JSON nested too deeply")
	}
	return ArrayWalk{b: b, i: i + 1, depth: depth, first: true}, nil
}

// WalkValidArray is WalkArray over a document known to be valid (see
// WalkValidObject).
func WalkValidArray(b []byte, i, depth int) (ArrayWalk, error) {
	w, err := WalkArray(b, i, depth)
	w.valid = true
	return w, err
}

// Next leaves the walk at the next element and returns where it starts; ok
// is false after the closing bracket.
func (a *ArrayWalk) Next() (start int, ok bool, err error) {
	b := a.b
	i := SkipSpace(b, a.i)
	if i >= len(b) {
		return 0, false, syntaxErr(i, "unexpected end of JSON input")
	}
	if b[i] == ']' && a.first {
		a.i = i + 1
		return 0, false, nil
	}
	if !a.first {
		switch b[i] {
		case ']':
			a.i = i + 1
			return 0, false, nil
		case ',':
			i = SkipSpace(b, i+1)
		default:
			return 0, false, syntaxErr(i, "expected ',' or ']'")
		}
	}
	a.first = false
	if i >= len(b) {
		return 0, false, syntaxErr(i, "unexpected end of JSON input")
	}
	a.i = i
	return i, true, nil
}

// Value validates the element the walk is at and returns it.
func (a *ArrayWalk) Value() ([]byte, error) {
	start := a.i
	end, err := CheckOrSkip(a.b, start, a.depth+1, a.valid)
	if err != nil {
		return nil, err
	}
	a.i = end
	return a.b[start:end], nil
}

// At is where the walk is.
func (a *ArrayWalk) At() int { return a.i }

// Depth is the depth of the array's elements.
func (a *ArrayWalk) Depth() int { return a.depth + 1 }

// SetEnd moves the walk past an element the caller validated itself.
func (a *ArrayWalk) SetEnd(end int) { a.i = end }
