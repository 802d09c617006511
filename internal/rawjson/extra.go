package rawjson

import "unicode/utf8"

// AppendDecoded appends escaped string content (the bytes between the
// quotes) decoded as encoding/json decodes it: AppendUnescaped's result, with
// each byte of invalid UTF-8 replaced by U+FFFD. It is for text that is read,
// such as text whose tokens are counted; text that is passed on keeps its
// bytes with AppendUnescaped.
func AppendDecoded(dst, in []byte) []byte {
	n := len(dst)
	dst = AppendUnescaped(dst, in)
	if utf8.Valid(dst[n:]) {
		return dst
	}
	// Decoded escapes are whole UTF-8 sequences, so a byte that is invalid
	// here was invalid in the input, and nothing else is.
	m := len(dst)
	for i := n; i < m; {
		r, size := utf8.DecodeRune(dst[i:m])
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, dst[i:i+size]...)
		}
		i += size
	}
	return dst[:n+copy(dst[n:], dst[m:])]
}
