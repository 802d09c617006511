package convert

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The converters work on raw JSON: a request is validated once, then walked
// with the non-validating iterators below, and every string that only changes
// place (message text, tool schemas, base64 images) is copied as it was
// written instead of being decoded and encoded again. This is what keeps a
// 50 KB Claude Code request well under 100 µs.

var errSyntax = errors.New("invalid json")

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 512

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// validJSON reports whether b holds exactly one JSON value (with optional
// surrounding white space).
func validJSON(b []byte) bool {
	i := skipSpace(b, 0)
	end, err := checkValue(b, i, 0)
	return err == nil && skipSpace(b, end) == len(b)
}

// vobject walks an object and validates it as it goes: the caller takes each
// key, then validates its value with value (or with a walk of its own that
// ends at setEnd). Parsing and validation are then one pass.
type vobject struct {
	b     []byte
	i     int
	depth int
	first bool
}

// newVObject starts a walk of the object at b[i]; ok is false when there is
// no object there.
func newVObject(b []byte, i, depth int) (vobject, bool) {
	if i >= len(b) || b[i] != '{' || depth >= maxDepth {
		return vobject{}, false
	}
	return vobject{b: b, i: i + 1, depth: depth, first: true}, true
}

// key returns the next key (as written between its quotes) and leaves the
// walk at its value; ok is false after the closing brace, and end() then
// says where the object ends.
func (o *vobject) key() (key []byte, ok bool, err error) {
	b := o.b
	i := skipSpace(b, o.i)
	if i < len(b) && b[i] == '}' {
		o.i = i + 1
		return nil, false, nil
	}
	if !o.first {
		if i >= len(b) || b[i] != ',' {
			return nil, false, errSyntax
		}
		i = skipSpace(b, i+1)
	}
	o.first = false
	if i >= len(b) || b[i] != '"' {
		return nil, false, errSyntax
	}
	ke, err := checkString(b, i)
	if err != nil {
		return nil, false, err
	}
	key = b[i+1 : ke-1]
	i = skipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		return nil, false, errSyntax
	}
	o.i = skipSpace(b, i+1)
	return key, true, nil
}

// value validates the value the walk is at and returns it.
func (o *vobject) value() ([]byte, error) {
	start := o.i
	end, err := checkValue(o.b, start, o.depth+1)
	if err != nil {
		return nil, err
	}
	o.i = end
	return o.b[start:end], nil
}

// at is where the walk is: the start of the current value, or the end of the
// object once key returned false.
func (o *vobject) at() int { return o.i }

// setEnd moves the walk past a value the caller validated itself.
func (o *vobject) setEnd(end int) { o.i = end }

// varray is vobject for arrays.
type varray struct {
	b     []byte
	i     int
	depth int
	first bool
}

func newVArray(b []byte, i, depth int) (varray, bool) {
	if i >= len(b) || b[i] != '[' || depth >= maxDepth {
		return varray{}, false
	}
	return varray{b: b, i: i + 1, depth: depth, first: true}, true
}

// elem leaves the walk at the next element and returns where it starts; ok
// is false after the closing bracket.
func (a *varray) elem() (start int, ok bool, err error) {
	b := a.b
	i := skipSpace(b, a.i)
	if i < len(b) && b[i] == ']' {
		a.i = i + 1
		return 0, false, nil
	}
	if !a.first {
		if i >= len(b) || b[i] != ',' {
			return 0, false, errSyntax
		}
		i = skipSpace(b, i+1)
	}
	a.first = false
	if i >= len(b) {
		return 0, false, errSyntax
	}
	a.i = i
	return i, true, nil
}

// value validates the element the walk is at and returns it.
func (a *varray) value() ([]byte, error) {
	start := a.i
	end, err := checkValue(a.b, start, a.depth+1)
	if err != nil {
		return nil, err
	}
	a.i = end
	return a.b[start:end], nil
}

func (a *varray) at() int        { return a.i }
func (a *varray) setEnd(end int) { a.i = end }

// checkValue validates the value starting at b[i] and returns the index just
// past it.
func checkValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		return checkString(b, i)
	case c == '{':
		if depth >= maxDepth {
			return 0, errSyntax
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return 0, errSyntax
			}
			end, err := checkString(b, i)
			if err != nil {
				return 0, err
			}
			i = skipSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return 0, errSyntax
			}
			if i, err = checkValue(b, skipSpace(b, i+1), depth+1); err != nil {
				return 0, err
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == '}' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = skipSpace(b, i+1)
		}
	case c == '[':
		if depth >= maxDepth {
			return 0, errSyntax
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = checkValue(b, i, depth+1); err != nil {
				return 0, err
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return 0, errSyntax
			}
			if b[i] == ']' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, errSyntax
			}
			i = skipSpace(b, i+1)
		}
	case c == 't':
		return checkLiteral(b, i, "true")
	case c == 'f':
		return checkLiteral(b, i, "false")
	case c == 'n':
		return checkLiteral(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return checkNumber(b, i)
	}
	return 0, errSyntax
}

func checkLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errSyntax
	}
	return i + len(lit), nil
}

func checkNumber(b []byte, i int) (int, error) {
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
		return 0, errSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return 0, errSyntax
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return 0, errSyntax
		}
	}
	return i, nil
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialMask marks (with its top bit) the quotes, backslashes and control
// characters among the eight bytes of x, the only bytes a string scan has to
// look at. Borrows may mark bytes after a true one as well, but the lowest
// mark is always right, and it is the only one used.
func specialMask(x uint64) uint64 {
	q := x ^ (lsb * '"')
	s := x ^ (lsb * '\\')
	return ((q-lsb)&^q | (s-lsb)&^s | (x-lsb*0x20)&^x) & msb
}

func checkString(b []byte, i int) (int, error) {
	i++
	for {
		for i+8 <= len(b) {
			if m := specialMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		for i < len(b) && b[i] >= 0x20 && b[i] != '"' && b[i] != '\\' {
			i++
		}
		if i >= len(b) {
			return 0, errSyntax
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(b) {
				return 0, errSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, errSyntax
				}
				for _, h := range b[i+2 : i+6] {
					if hexVal(h) < 0 {
						return 0, errSyntax
					}
				}
				i += 6
			default:
				return 0, errSyntax
			}
		default:
			return 0, errSyntax
		}
	}
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

// The functions below assume input that checkValue accepted. On anything
// else they stop early or return garbage spans, but never index out of range.

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	j := i + 1
	// Most strings are short keys and values: look at a few bytes before
	// paying for a vectorised search.
	for end := min(j+16, len(b)); j < end; j++ {
		switch b[j] {
		case '"':
			return j + 1
		case '\\':
			j++
		}
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

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
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
	for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
		j++
	}
	return j
}

// object iterates over the members of a raw JSON object.
type object struct {
	b []byte
	i int
	// end is where the object ends, known once next has returned false.
	end  int
	done bool
}

func newObject(v []byte) object {
	if len(v) < 2 || v[0] != '{' {
		return object{done: true}
	}
	return object{b: v, i: 1}
}

// next returns the next member: its key as written between the quotes, and
// its raw value.
func (o *object) next() (key, val []byte, ok bool) {
	if o.done {
		return nil, nil, false
	}
	b := o.b
	i := skipSpace(b, o.i)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		o.done = true
		o.end = min(i+1, len(b))
		return nil, nil, false
	}
	ke := skipString(b, i)
	key = b[i+1 : max(ke-1, i+1)]
	i = skipSpace(b, ke)
	if i < len(b) && b[i] == ':' {
		i = skipSpace(b, i+1)
	}
	ve := skipValue(b, i)
	o.i = ve
	return key, b[i:ve], true
}

// finish reads the members left and returns where the object ends.
func (o *object) finish() int {
	for _, _, ok := o.next(); ok; _, _, ok = o.next() {
	}
	return o.end
}

// array iterates over the elements of a raw JSON array.
type array struct {
	b []byte
	i int
}

func newArray(v []byte) array {
	if len(v) < 2 || v[0] != '[' {
		return array{}
	}
	return array{b: v, i: 1}
}

// start returns where the next element starts.
func (a *array) start() (int, bool) {
	b := a.b
	i := skipSpace(b, a.i)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] == ']' {
		a.i = len(b)
		return 0, false
	}
	return i, true
}

func (a *array) next() (val []byte, ok bool) {
	i, ok := a.start()
	if !ok {
		return nil, false
	}
	ve := skipValue(a.b, i)
	if ve == i {
		a.i = len(a.b)
		return nil, false
	}
	a.i = ve
	return a.b[i:ve], true
}

// nextObject returns the next element read in place, without a pass to find
// its end first; the caller reads it and hands it back with skipPast before
// asking for the next. isObject is false, and the element skipped, when it
// is not an object.
func (a *array) nextObject() (o object, isObject, ok bool) {
	i, ok := a.start()
	if !ok {
		return object{done: true}, false, false
	}
	if a.b[i] != '{' {
		a.i = max(skipValue(a.b, i), i+1)
		return object{done: true}, false, true
	}
	return object{b: a.b, i: i + 1}, true, true
}

// skipPast moves the array past an element that nextObject returned.
func (a *array) skipPast(o *object) { a.i = o.finish() }

// field returns the raw value of key in object v, or nil.
func field(v []byte, key string) []byte {
	o := newObject(v)
	for k, val, ok := o.next(); ok; k, val, ok = o.next() {
		if keyIs(k, key) {
			return val
		}
	}
	return nil
}

// keyIs reports whether a raw key (between its quotes) spells s.
func keyIs(k []byte, s string) bool {
	if string(k) == s {
		return true
	}
	// An escaped key is longer than what it spells.
	return len(k) > len(s) && hasBackslash(k) && string(appendUnescaped(nil, k)) == s
}

// keyName returns what a raw key spells; it allocates only for a key that
// holds escapes.
func keyName(k []byte) []byte {
	if hasBackslash(k) {
		return appendUnescaped(nil, k)
	}
	return k
}

func hasBackslash(b []byte) bool {
	for _, c := range b {
		if c == '\\' {
			return true
		}
	}
	return false
}

func isString(v []byte) bool { return len(v) >= 2 && v[0] == '"' }
func isObject(v []byte) bool { return len(v) >= 2 && v[0] == '{' }
func isArray(v []byte) bool  { return len(v) >= 2 && v[0] == '[' }
func isNumber(v []byte) bool { return len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) }
func isTrue(v []byte) bool   { return string(v) == "true" }

// inner returns the content of a raw string between its quotes, still
// escaped, or nil when v is not a string.
func inner(v []byte) []byte {
	if !isString(v) {
		return nil
	}
	return v[1 : len(v)-1]
}

// strIs reports whether v is a JSON string whose value is s.
func strIs(v []byte, s string) bool {
	in := inner(v)
	if in == nil {
		return false
	}
	if bytes.IndexByte(in, '\\') < 0 {
		return string(in) == s
	}
	return string(appendUnescaped(nil, in)) == s
}

// str returns the value of a JSON string, or "" when v is not one.
func str(v []byte) string {
	in := inner(v)
	if bytes.IndexByte(in, '\\') < 0 {
		return string(in)
	}
	return string(appendUnescaped(nil, in))
}

// nonEmptyString reports whether v is a string with at least one character.
func nonEmptyString(v []byte) bool { return len(v) > 2 && v[0] == '"' }

// intValue returns a JSON number as an int64, truncating fractions; ok is
// false for anything else.
func intValue(v []byte) (int64, bool) {
	if !isNumber(v) {
		return 0, false
	}
	if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsNaN(f) || f > math.MaxInt64 || f < math.MinInt64 {
		return 0, false
	}
	return int64(f), true
}

// appendUnescaped appends the decoded form of escaped string content. Lone
// surrogates become U+FFFD, as encoding/json does.
func appendUnescaped(dst, in []byte) []byte {
	for i := 0; i < len(in); {
		k := bytes.IndexByte(in[i:], '\\')
		if k < 0 {
			return append(dst, in[i:]...)
		}
		dst = append(dst, in[i:i+k]...)
		i += k
		if i+1 >= len(in) {
			return dst
		}
		c := in[i+1]
		i += 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, n := decodeU(in[i-2:])
			i += n - 2
			dst = utf8.AppendRune(dst, r)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// decodeU decodes a \uXXXX escape (and its low surrogate, if any) at the
// start of in, returning the rune and the bytes consumed.
func decodeU(in []byte) (rune, int) {
	r1, ok := hex4(in)
	if !ok {
		return utf8.RuneError, min(len(in), 2)
	}
	if !utf16.IsSurrogate(r1) {
		return r1, 6
	}
	if len(in) >= 12 && in[6] == '\\' && in[7] == 'u' {
		if r2, ok := hex4(in[6:]); ok {
			if r := utf16.DecodeRune(r1, r2); r != utf8.RuneError {
				return r, 12
			}
		}
	}
	return utf8.RuneError, 6
}

func hex4(in []byte) (rune, bool) {
	if len(in) < 6 || in[0] != '\\' || in[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range in[2:6] {
		h := hexVal(c)
		if h < 0 {
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends s as JSON string content (without quotes).
func appendEscaped[S string | []byte](dst []byte, s S) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	return append(dst, s[start:]...)
}

// appendString appends s as a quoted JSON string.
func appendString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	dst = appendEscaped(dst, s)
	return append(dst, '"')
}

// appendCompact appends the valid JSON value v without insignificant white
// space.
func appendCompact(dst, v []byte) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case isSpace(c):
		case c == '"':
			e := skipString(v, i)
			dst = append(dst, v[i:e]...)
			i = e - 1
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendQuotedJSON appends the valid JSON value v, compacted, as the content
// of a JSON string (without quotes): the form tool call arguments take.
func appendQuotedJSON(dst, v []byte) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case isSpace(c):
		case c == '"':
			e := skipString(v, i)
			dst = appendEscaped(dst, v[i:e])
			i = e - 1
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
