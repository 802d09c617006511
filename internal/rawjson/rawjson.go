// Package rawjson is the module's one JSON grammar: what every package
// accepts as JSON, and the tools to walk it without decoding it.
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
	w := ObjectWalk{b: b, i: i + 1, depth: depth, first: true}
	for {
		_, ok, err := w.Key()
		if err != nil {
			return 0, err
		}
		if !ok {
			return w.i, nil
		}
		if _, err := w.Value(); err != nil {
			return 0, err
		}
	}
}

func checkArray(b []byte, i, depth int) (int, error) {
	if depth >= MaxDepth {
		return 0, syntaxErr(i, "JSON nested too deeply")
	}
	w := ArrayWalk{b: b, i: i + 1, depth: depth, first: true}
	for {
		_, ok, err := w.Next()
		if err != nil {
			return 0, err
		}
		if !ok {
			return w.i, nil
		}
		if _, err := w.Value(); err != nil {
			return 0, err
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
// Strings are most of a request, so this is the grammar's hot loop. Short
// strings (keys, types, ids) are read byte by byte with a table; past a few
// bytes the runtime's vectorised search finds the next quote and the next
// backslash, and the run up to the first of them only has to be free of
// control characters, which eight bytes at a time cost three operations to
// check.
func CheckString(b []byte, i int) (int, error) {
	start := i
	i++
	for short := min(i+24, len(b)); i < short; {
		c := b[i]
		if !stringStop[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			n, err := checkEscape(b, i, start)
			if err != nil {
				return 0, err
			}
			i += n
		default:
			return 0, syntaxErr(i, "control character in string")
		}
	}
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return 0, syntaxErr(start, "unterminated string")
		}
		run := b[i : i+q]
		esc := bytes.IndexByte(run, '\\')
		if esc >= 0 {
			run = run[:esc]
		}
		if c := controlAt(run); c >= 0 {
			return 0, syntaxErr(i+c, "control character in string")
		}
		if esc < 0 {
			return i + q + 1, nil
		}
		i += esc
		n, err := checkEscape(b, i, start)
		if err != nil {
			return 0, err
		}
		i += n
	}
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
func controlAt(b []byte) int {
	j := 0
	for ; j+16 <= len(b); j += 16 {
		x := binary.LittleEndian.Uint64(b[j:])
		y := binary.LittleEndian.Uint64(b[j+8:])
		if ((x-lsb*0x20)&^x|(y-lsb*0x20)&^y)&msb != 0 {
			break
		}
	}
	for ; j < len(b); j++ {
		if b[j] < 0x20 {
			return j
		}
	}
	return -1
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
	ke, err := CheckString(b, i)
	if err != nil {
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
	end, err := CheckValue(o.b, start, o.depth+1)
	if err != nil {
		return nil, err
	}
	o.i = end
	return o.b[start:end], nil
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
	end, err := CheckValue(a.b, start, a.depth+1)
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
