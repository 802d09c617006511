package rawjson

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// AppendUnescaped appends the decoded form of escaped string content (the
// bytes between the quotes). Lone surrogates become U+FFFD, as encoding/json
// does; bytes that are not escapes, invalid UTF-8 included, are kept.
func AppendUnescaped(dst, in []byte) []byte {
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
	r1, ok := Hex4(in)
	if !ok {
		return utf8.RuneError, min(len(in), 2)
	}
	if !utf16.IsSurrogate(r1) {
		return r1, 6
	}
	if len(in) >= 12 && in[6] == '\\' && in[7] == 'u' {
		if r2, ok := Hex4(in[6:]); ok {
			if r := utf16.DecodeRune(r1, r2); r != utf8.RuneError {
				return r, 12
			}
		}
	}
	return utf8.RuneError, 6
}

// Hex4 reads the escape \uXXXX at the start of in.
func Hex4(in []byte) (rune, bool) {
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

// AppendEscaped appends s as JSON string content (without quotes). Only
// quotes, backslashes and control characters are escaped: <, > and & keep
// their bytes, as the Anthropic API writes them.
func AppendEscaped[S string | []byte](dst []byte, s S) []byte {
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

// AppendString appends s as a quoted JSON string.
func AppendString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	dst = AppendEscaped(dst, s)
	return append(dst, '"')
}

// AppendCompact appends the valid JSON value v without insignificant white
// space.
func AppendCompact(dst, v []byte) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case IsSpace(c):
		case c == '"':
			e := SkipString(v, i)
			dst = append(dst, v[i:e]...)
			i = e - 1
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// AppendQuotedJSON appends the valid JSON value v, compacted, as the content
// of a JSON string (without quotes): the form tool call arguments take.
func AppendQuotedJSON(dst, v []byte) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case IsSpace(c):
		case c == '"':
			e := SkipString(v, i)
			dst = AppendEscaped(dst, v[i:e])
			i = e - 1
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// SameKey reports whether two keys, as written between their quotes, spell
// the same name: "mod\u0065l" is "model".
func SameKey(a, b []byte) bool {
	if !HasBackslash(a) && !HasBackslash(b) {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(KeyName(a), KeyName(b))
}
