package rawjson

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// checkStringReference is the byte-by-byte scan CheckString once was: its
// results, error offsets and reasons included, are what CheckString must
// keep.
func checkStringReference(b []byte, i int) (int, error) {
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
		if c := controlAtReference(run); c >= 0 {
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

func controlAtReference(b []byte) int {
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

// sameCheck reports whether CheckString and the reference agree on b at i:
// the same end, or the same error at the same offset.
func sameCheck(t *testing.T, b []byte, i int, resume bool) {
	t.Helper()
	end, err := CheckString(b, i)
	wantEnd, wantErr := checkStringReference(b, i)
	if (err == nil) != (wantErr == nil) || end != wantEnd {
		t.Fatalf("CheckString(%q, %d) = %d, %v; want %d, %v", b, i, end, err, wantEnd, wantErr)
	}
	if err != nil {
		var got, want *SyntaxError
		if !errors.As(err, &got) || !errors.As(wantErr, &want) || *got != *want {
			t.Fatalf("CheckString(%q, %d) = %v; want %v", b, i, err, wantErr)
		}
	}
	if !resume {
		return
	}
	// Resumed past a prefix free of stops, around the word boundaries and
	// at the first stop, the scan ends the same way.
	clean := i + 1
	for clean < len(b) && !stringStop[b[clean]] {
		clean++
	}
	for _, j := range []int{i + 8, i + 9, i + 16, i + 17, i + 24, i + 25, i + 26, i + 33, clean} {
		if j > clean {
			continue
		}
		if e, err := CheckStringFrom(b, i, j); e != end || fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("CheckStringFrom(%q, %d, %d) = %d, %v; want %d, %v", b, i, j, e, err, end, wantErr)
		}
	}
}

// TestCheckStringMatchesReference puts every kind of special byte at every
// offset around the word and short-string boundaries, with and without a
// closing quote after it, and near the end of the input.
func TestCheckStringMatchesReference(t *testing.T) {
	specials := []string{
		`"`, `\"`, `\\`, `\n`, `\u00e9`, `\u00`, `\ud83d\ude00`, `\x`, `\`, "\x00", "\x01", "\x1f", "\n",
		"\x7f", "\x80", "\xff", "\xe4\xb8\xad", " ", "\\\x01", `\u12"4`, `\"\"`,
	}
	tails := []string{``, `"`, `tail"`, "ab\x01cd\"", `ab\qcd"`, "\x02", `\"`, `xx\"yy`, strings.Repeat("z", 40) + `"`,
		strings.Repeat("w", 40) + "\x03" + `"`, strings.Repeat(`\n`, 30) + `"`}
	for off := range 70 {
		pad := strings.Repeat("a", off)
		for _, s := range specials {
			for _, s2 := range append([]string{""}, specials...) {
				for _, tail := range tails {
					in := []byte(`"` + pad + s + s2 + tail)
					sameCheck(t, in, 0, s2 == "")
					// The same string later in a buffer, and with bytes
					// after it.
					sameCheck(t, append([]byte(`{"k":`), in...), 5, false)
					sameCheck(t, append(in, `,"x":1}`...), 0, s2 == "")
				}
			}
		}
	}
}

// FuzzCheckStringMatchesReference holds CheckString to the reference scan on
// any input, and CheckKey, CheckStringFrom and StringEnd to CheckString.
func FuzzCheckStringMatchesReference(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c), uint8(0))
	}
	f.Add([]byte(`"`+strings.Repeat(`ab\n`, 40)+`"`), uint8(0))
	f.Add([]byte(`x"`+strings.Repeat("a", 30)+"\x01"+`\"`+strings.Repeat("b", 30)), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, at uint8) {
		i := int(at)
		if i >= len(b) {
			i = 0
		}
		if len(b) == 0 || b[i] != '"' {
			b = append(append(b[:i:i], '"'), b[i:]...)
		}
		sameCheck(t, b, i, false)
		end, plain, err := CheckKey(b, i)
		wantEnd, wantErr := CheckString(b, i)
		if got := StringEnd(b, i); (wantErr == nil && got != wantEnd) || (wantErr != nil && got != -1) {
			t.Fatalf("StringEnd(%q, %d) = %d; CheckString says %d, %v", b, i, got, wantEnd, wantErr)
		}
		if end != wantEnd || (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
			t.Fatalf("CheckKey(%q, %d) = %d, %v; CheckString says %d, %v", b, i, end, err, wantEnd, wantErr)
		}
		if plain && (bytes.IndexByte(b[i+1:end-1], '\\') >= 0 || bytes.ContainsFunc(b[i+1:end-1], func(r rune) bool { return r >= 0x80 })) {
			t.Fatalf("CheckKey(%q, %d) says plain", b, i)
		}
		// Resumed past every prefix of the string free of stops, the scan
		// ends the same way.
		for j := i + 1; j <= len(b); j++ {
			end, err := CheckStringFrom(b, i, j)
			if end != wantEnd || (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("CheckStringFrom(%q, %d, %d) = %d, %v; CheckString says %d, %v", b, i, j, end, err, wantEnd, wantErr)
			}
			if j == len(b) || stringStop[b[j]] {
				break
			}
		}
	})
}

// BenchmarkCheckString scans strings of the lengths a request holds.
func BenchmarkCheckString(b *testing.B) {
	for _, tt := range []struct{ name, s string }{
		{"key", `"type"`},
		{"20B", `"` + strings.Repeat("x", 20) + `"`},
		{"100B", `"` + strings.Repeat("lorem ips ", 10) + `"`},
		{"4KB", `"` + strings.Repeat("lorem ipsum dolor sit amet ", 150) + `"`},
		{"4KB-escapes", `"` + strings.Repeat(`lorem ipsum dolor sit amet\n`, 150) + `"`},
		{"4KB-cjk", `"` + strings.Repeat("日本語のテキストです。", 120) + `"`},
	} {
		in := []byte(tt.s + `,"next":1}`)
		b.Run(tt.name, func(b *testing.B) {
			b.SetBytes(int64(len(tt.s)))
			for b.Loop() {
				if _, err := CheckString(in, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCheckKeyIsCheckString holds CheckKey to CheckString, and its plain to
// what the key holds.
func TestCheckKeyIsCheckString(t *testing.T) {
	for _, k := range []string{`""`, `"a"`, `"type"`, `"1234567"`, `"12345678"`, `"123456789012345"`,
		`"1234567890123456"`, `"12345678901234567"`, `"é"`, `"abcdefgé"`, `"abcdefghé"`, `"a\nb"`, `"a\u0062"`,
		"\"a\x01\"", `"unterminated`, `"abcdefghijklmno\"pq"`, "\"abcdefghijklmn\xff\""} {
		for _, after := range []string{``, `:1}`, `:"a long value that follows the key"}`} {
			in := []byte(k + after)
			end, plain, err := CheckKey(in, 0)
			wantEnd, wantErr := CheckString(in, 0)
			if end != wantEnd || (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("CheckKey(%q) = %d, %v; CheckString says %d, %v", in, end, err, wantEnd, wantErr)
			}
			if err != nil {
				continue
			}
			inner := in[1 : end-1]
			isPlain := !bytes.ContainsAny(inner, "\\") && !bytes.ContainsFunc(inner, func(r rune) bool { return r >= 0x80 })
			if plain && !isPlain {
				t.Errorf("CheckKey(%q) says plain", in)
			}
			if !plain && isPlain && len(after) > 3 && len(inner) < 16 {
				t.Errorf("CheckKey(%q) missed a plain key", in)
			}
		}
	}
}

// TestControlAtFindsTheFirstControlCharacter compares controlAt with a byte
// loop on runs of every length, with bytes that look like control
// characters to a subtraction (0x80 and up) and real ones.
func TestControlAtFindsTheFirstControlCharacter(t *testing.T) {
	alphabet := []byte{0x00, 0x01, 0x1f, 0x20, 'a', 0x7f, 0x80, 0x9f, 0xa0, 0xe4, 0xff}
	state := uint64(1)
	next := func() uint64 {
		state ^= state << 13
		state ^= state >> 7
		state ^= state << 17
		return state
	}
	for n := range 300 {
		for range 20 {
			b := bytes.Repeat([]byte{'x'}, n)
			// Mostly text, with a few special bytes anywhere.
			for range next() % 4 {
				if n > 0 {
					b[next()%uint64(n)] = alphabet[next()%uint64(len(alphabet))]
				}
			}
			want := -1
			for j, c := range b {
				if c < 0x20 {
					want = j
					break
				}
			}
			if got := controlAt(b); got != want {
				t.Fatalf("controlAt(%q) = %d, want %d", b, got, want)
			}
		}
	}
}
