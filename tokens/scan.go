package tokens

import (
	"bytes"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// The request walker reads JSON with a small hand-written scanner instead of encoding/json for two reasons:
// the cache key of a content block is its exact raw bytes, and a block already in the cache must cost no more
// than finding where it ends (a string is skipped with bytes.IndexByte instead of byte-by-byte validation).
// Every byte that is not a cache hit is validated strictly, with the same grammar as json.Valid (a fuzz test
// holds the two equal); a cache hit is a byte-for-byte copy of a block that was validated when it was cached.

// maxDepth matches encoding/json's nesting limit so both accept and reject the same documents.
const maxDepth = 10000

// syntaxError is a JSON grammar error at a byte offset of the body.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at offset %d", e.msg, e.off) }

func errAt(off int, format string, args ...any) error {
	return &syntaxError{off: off, msg: fmt.Sprintf(format, args...)}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// validValue checks the JSON value starting at b[i] (leading white space allowed) and returns the offset just
// past it.
func validValue(b []byte, i, depth int) (int, error) {
	i = skipSpace(b, i)
	if i >= len(b) {
		return i, errAt(i, "unexpected end of JSON input")
	}
	switch c := b[i]; {
	case c == '{':
		return validObject(b, i, depth+1)
	case c == '[':
		return validArray(b, i, depth+1)
	case c == '"':
		return validString(b, i)
	case c == '-' || (c >= '0' && c <= '9'):
		return validNumber(b, i)
	case c == 't':
		return validLiteral(b, i, "true")
	case c == 'f':
		return validLiteral(b, i, "false")
	case c == 'n':
		return validLiteral(b, i, "null")
	default:
		return i, errAt(i, "invalid character %q looking for beginning of value", c)
	}
}

func validLiteral(b []byte, i int, lit string) (int, error) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return i, errAt(i, "invalid literal, expected %s", lit)
	}
	return i + len(lit), nil
}

func validObject(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, errAt(i, "exceeded max depth")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, errAt(i, "expected string for object key")
		}
		var err error
		if i, err = validString(b, i); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return i, errAt(i, "expected colon after object key")
		}
		if i, err = validValue(b, i+1, depth); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, errAt(i, "unexpected end of JSON input")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, errAt(i, "expected comma or end of object")
		}
	}
}

func validArray(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, errAt(i, "exceeded max depth")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = validValue(b, i, depth); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, errAt(i, "unexpected end of JSON input")
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1, nil
		default:
			return i, errAt(i, "expected comma or end of array")
		}
	}
}

// validString checks the string starting at the quote b[i] and returns the offset past its closing quote.
func validString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, nil
		case c == '\\':
			if j+1 >= len(b) {
				return j, errAt(j, "unexpected end of JSON input")
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) {
					return j, errAt(j, "unexpected end of JSON input")
				}
				for _, h := range b[j+2 : j+6] {
					if hexVal(h) < 0 {
						return j, errAt(j, "invalid \\u escape")
					}
				}
				j += 6
			default:
				return j, errAt(j, "invalid escape %q", b[j+1])
			}
		case c < 0x20:
			return j, errAt(j, "invalid control character in string")
		default:
			j++
		}
	}
	return len(b), errAt(len(b), "unexpected end of JSON input")
}

func validNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return i, errAt(start, "invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return i, errAt(start, "invalid number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return i, errAt(start, "invalid number")
		}
	}
	return i, nil
}

// validDocument reports whether b is exactly one JSON value with optional surrounding white space.
func validDocument(b []byte) error {
	i, err := validValue(b, 0, 0)
	if err != nil {
		return err
	}
	if i = skipSpace(b, i); i != len(b) {
		return errAt(i, "invalid character %q after top-level value", b[i])
	}
	return nil
}

// skipValue returns the end of the value starting at b[i] without validating it; it is only trusted when the
// span it returns is either validated afterwards or identical to a span validated before. ok is false when
// the input ends first.
func skipValue(b []byte, i int) (end int, ok bool) {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); {
			switch b[j] {
			case '"':
				e, ok := skipString(b, j)
				if !ok {
					return len(b), false
				}
				j = e
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
			j++
		}
		return len(b), false
	default:
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j, true
			}
			j++
		}
		return j, true
	}
}

// skipString returns the offset past the closing quote of the string opening at b[i].
func skipString(b []byte, i int) (int, bool) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b), false
		}
		q := j + k
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, true
		}
		j = q + 1
	}
}

// eachMember iterates over the members of the object opening at b[i], validating its structure (fn validates
// the values). fn gets the decoded key and the value's offset, and returns the offset past the value.
func eachMember(b []byte, i, depth int, fn func(key []byte, v int) (int, error)) (int, error) {
	if depth > maxDepth {
		return i, errAt(i, "exceeded max depth")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, errAt(i, "expected string for object key")
		}
		ke, err := validString(b, i)
		if err != nil {
			return ke, err
		}
		key := b[i+1 : ke-1]
		i = skipSpace(b, ke)
		if i >= len(b) || b[i] != ':' {
			return i, errAt(i, "expected colon after object key")
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return i, errAt(i, "unexpected end of JSON input")
		}
		if bytes.IndexByte(key, '\\') >= 0 {
			key = unescape(nil, key)
		}
		if i, err = fn(key, i); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, errAt(i, "unexpected end of JSON input")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, errAt(i, "expected comma or end of object")
		}
	}
}

// eachElement iterates over the elements of an array; fn gets the element's offset (white space skipped) and
// returns the offset past it.
func eachElement(b []byte, i, depth int, fn func(n, v int) (int, error)) (int, error) {
	if depth > maxDepth {
		return i, errAt(i, "exceeded max depth")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		if i >= len(b) {
			return i, errAt(i, "unexpected end of JSON input")
		}
		var err error
		if i, err = fn(n, i); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, errAt(i, "unexpected end of JSON input")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return i + 1, nil
		default:
			return i, errAt(i, "expected comma or end of array")
		}
	}
}

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// unescape appends the decoded form of a validated JSON string body (without quotes) to dst. Like
// encoding/json, it turns invalid UTF-8 and lone surrogates into U+FFFD.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			if s[i+1] != 'u' {
				dst = append(dst, unescapeByte(s[i+1]))
				i += 2
				continue
			}
			r := hex4(s[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if r2 := utf16.DecodeRune(r, hex4(s[i+2:])); r2 != utf8.RuneError {
						dst = utf8.AppendRune(dst, r2)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = utf8.AppendRune(dst, r)
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
		}
	}
	return dst
}

func hex4(s []byte) rune {
	return hexVal(s[0])<<12 | hexVal(s[1])<<8 | hexVal(s[2])<<4 | hexVal(s[3])
}

func unescapeByte(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return c // '"', '\\' and '/'
}

// compact appends the validated JSON value v to dst without insignificant white space, the way the API
// re-serialises tool inputs and schemas.
func compact(dst, v []byte) []byte {
	in := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if in {
			dst = append(dst, c)
			switch c {
			case '\\':
				i++
				dst = append(dst, v[i])
			case '"':
				in = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
		case '"':
			in = true
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
