package rawjson

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendDecodedMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		`plain`, `a\"b\\c\/d\b\f\n\r\t`, `\u00e9\u4e2d`, `\ud83d\ude00`, `\ud83d`, `\ude00x`, `\ud83d\u0041`,
		"caf\xc3\xa9", "bad\xffbyte", `\u0000`, "\xc3\\u00a9", "\\u00e9\xa9", "\xed\xa0\x80", "\xf0\x9f\x98",
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+s+`"`), &want); err != nil {
			t.Fatal(err)
		}
		if got := string(AppendDecoded([]byte("kept"), []byte(s))); got != "kept"+want {
			t.Errorf("AppendDecoded(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestNextObjectReadsInPlace(t *testing.T) {
	a := NewArray([]byte(`[ {"k":1}, 2 , {"k":[3]} ]`))
	var got []string
	for o, isObj, ok := a.NextObject(); ok; o, isObj, ok = a.NextObject() {
		if !isObj {
			got = append(got, "-")
			continue
		}
		_, val, _ := o.Next()
		got = append(got, string(val))
		a.SkipPast(&o)
	}
	if strings.Join(got, " ") != "1 - [3]" {
		t.Fatalf("NextObject gave %q", got)
	}
}

func TestKeyIsMatchesEscapedKeys(t *testing.T) {
	for _, c := range []struct {
		key, s string
		want   bool
	}{
		{"role", "role", true}, {`r\u006fle`, "role", true}, {"rol", "role", false}, {`ro\u006c`, "role", false},
	} {
		if got := KeyIs([]byte(c.key), c.s); got != c.want {
			t.Errorf("KeyIs(%q, %q) = %v", c.key, c.s, got)
		}
	}
}

func TestAppendQuotedJSONRoundTrips(t *testing.T) {
	for _, in := range []string{`{"a": "x\"y\\z\n", "b" : [1, 2.5, true, null]}`, `{}`, `"s"`, `[ ]`} {
		q := append([]byte{'"'}, AppendQuotedJSON(nil, []byte(in))...)
		q = append(q, '"')
		var s string
		if err := json.Unmarshal(q, &s); err != nil {
			t.Fatalf("%s: %v (%s)", in, err, q)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, []byte(in)); err != nil {
			t.Fatal(err)
		}
		if s != want.String() {
			t.Fatalf("AppendQuotedJSON(%s) holds %s, want %s", in, s, want.Bytes())
		}
	}
}

func TestAppendStringEscapesEveryControl(t *testing.T) {
	for _, s := range []string{"q\"b\\", "ctl\x00\x1f\x7f\t\r\n\b\f", "utf8 é €"} {
		var got string
		if err := json.Unmarshal(AppendString(nil, s), &got); err != nil || got != s {
			t.Errorf("AppendString(%q) = %s (%v)", s, AppendString(nil, s), err)
		}
	}
}

func TestIntTruncatesAndRefusesOutOfRange(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"12.9", 12, true}, {"-12.9", -12, true}, {"9223372036854775807", 1<<63 - 1, true},
		{"-9223372036854775808", -1 << 63, true}, {"9223372036854775808", 0, false}, {"1e400", 0, false},
	} {
		if got, ok := Int([]byte(c.in)); got != c.want || ok != c.ok {
			t.Errorf("Int(%s) = %d, %v", c.in, got, ok)
		}
	}
}

// walkCases are seeds for the walks: containers, escapes, nesting at the
// limit, and the broken forms a walk must refuse.
var walkCases = append([]string{
	`{"a":[1,{"b":null}],"a\u0062":"}","c":{"d":[]}}`, `[ {"k":1}, 2 , {"k":[3]} ]`,
	strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1),
}, cases...)

// FuzzValidJSON holds the walks that trust validated input to what the
// validating walks saw: the same members and elements, the same spans, and
// values that encoding/json reads the same.
func FuzzValidJSON(f *testing.F) {
	for _, c := range walkCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, want := Valid(b), json.Valid(b)
		if got != want && !(want && strings.Count(string(b), "[")+strings.Count(string(b), "{") >= MaxDepth) {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", b, got, want)
		}
		if !got {
			return
		}
		i := SkipSpace(b, 0)
		end := SkipValue(b, i)
		if SkipSpace(b, end) != len(b) {
			t.Fatalf("SkipValue(%q) = %d, want the end of the value", b, end)
		}
		v := b[i:end]
		switch v[0] {
		case '{':
			o, w := NewObject(v), mustWalkObject(t, v)
			for {
				k, val, ok := o.Next()
				wk, wok, err := w.Key()
				if err != nil || ok != wok {
					t.Fatalf("%q: Object.Next ok=%v, ObjectWalk.Key ok=%v err=%v", v, ok, wok, err)
				}
				if !ok {
					break
				}
				wval, err := w.Value()
				if err != nil || !bytes.Equal(k, wk[1:len(wk)-1]) || !bytes.Equal(val, wval) {
					t.Fatalf("%q: Object gave %q:%q, ObjectWalk %q:%q (%v)", v, k, val, wk, wval, err)
				}
			}
			if end := o.Finish(); end != len(v) || w.At() != len(v) {
				t.Fatalf("%q: Object ends at %d, ObjectWalk at %d, want %d", v, end, w.At(), len(v))
			}
		case '[':
			a, w := NewArray(v), mustWalkArray(t, v)
			for {
				val, ok := a.Next()
				_, wok, err := w.Next()
				if err != nil || ok != wok {
					t.Fatalf("%q: Array.Next ok=%v, ArrayWalk.Next ok=%v err=%v", v, ok, wok, err)
				}
				if !ok {
					break
				}
				if wval, err := w.Value(); err != nil || !bytes.Equal(val, wval) {
					t.Fatalf("%q: Array gave %q, ArrayWalk %q (%v)", v, val, wval, err)
				}
			}
		}
		// encoding/json replaces invalid UTF-8; the functions below keep
		// bytes as they came.
		if !utf8.Valid(v) {
			return
		}
		// Compacted JSON in a string, as tool call arguments carry it, reads
		// back as the compacted value.
		q := append([]byte{'"'}, AppendQuotedJSON(nil, v)...)
		q = append(q, '"')
		var s string
		if err := json.Unmarshal(q, &s); err != nil || s != string(AppendCompact(nil, v)) {
			t.Fatalf("AppendQuotedJSON(%q) = %q (%v)", v, q, err)
		}
		var x any
		_ = json.Unmarshal(v, &x)
		if s, ok := x.(string); ok {
			if got := string(AppendUnescaped(nil, Inner(v))); got != s {
				t.Fatalf("AppendUnescaped(%q) = %q, want %q", v, got, s)
			}
		}
	})
}

func mustWalkObject(t *testing.T, v []byte) ObjectWalk {
	t.Helper()
	w, err := WalkObject(v, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func mustWalkArray(t *testing.T, v []byte) ArrayWalk {
	t.Helper()
	w, err := WalkArray(v, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

var documentSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `false`, `null`, ` {"a" : [1, 2.5, "x\n\u00e9\ud83d\ude00"] } `,
	`{"a":}`, `[1,]`, `{"a" 1}`, `01`, `1.`, `-`, `1e`, `"\x"`, `"\u12"`, "\"a\x01\"", `tru`, `nul`, `[`, `{"a":1}x`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
	"\"bad\xffbyte \\u00e9\"", `"\ud83d\u0041"`,
}

// FuzzValidDocumentMatchesJSONValid holds Check, compaction and decoding to
// encoding/json's: the same documents accepted (but for nesting past
// MaxDepth), the same compact form, the same decoded strings.
func FuzzValidDocumentMatchesJSONValid(f *testing.F) {
	for _, s := range documentSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Check(b)
		if got, want := err == nil, json.Valid(b); got != want &&
			!(want && strings.Count(string(b), "[")+strings.Count(string(b), "{") >= MaxDepth) {
			t.Fatalf("Check(%q) = %v, json.Valid = %v", b, err, want)
		}
		if err != nil {
			return
		}
		i := SkipSpace(b, 0)
		if end := SkipValue(b, i); SkipSpace(b, end) != len(b) {
			t.Errorf("SkipValue(%q) = %d; want the end of the value", b, end)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber() // numbers beyond float64 are still valid JSON
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, b); err != nil {
			t.Fatal(err)
		}
		if got := AppendCompact(nil, b[i:]); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendCompact(%q) = %q, json.Compact = %q", b, got, want.Bytes())
		}
		if s, ok := v.(string); ok {
			raw := bytes.TrimSpace(b)
			if got := string(AppendDecoded(nil, Inner(raw))); got != s {
				t.Errorf("AppendDecoded(%q) = %q, encoding/json = %q", raw, got, s)
			}
		}
	})
}

func TestMembers(t *testing.T) {
	b := []byte(` {"a":1,"b\u0022":{"c":[2]},"a":"x"} tail`)
	var got []string
	end, err := Members(b, 1, 0, func(k, v []byte) { got = append(got, string(k)+"="+string(v)) })
	if err != nil || string(b[end:]) != " tail" || strings.Join(got, " ") != `a=1 b\u0022={"c":[2]} a="x"` {
		t.Fatalf("end %d, %v: %q", end, err, got)
	}
	for _, bad := range []string{`{"a":1,}`, `{"a" 1}`, `{"a":[}`, `[1]`, `{"a":1`} {
		if _, err := Members([]byte(bad), 0, 0, func(k, v []byte) {}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// skipStringReference is SkipString a byte at a time.
func skipStringReference(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '"':
			return j + 1
		case '\\':
			j++
		}
	}
	return len(b)
}

// SkipString finds the end a byte-at-a-time scan finds, for any bytes after
// the opening quote: quotes, escaped quotes and runs of backslashes at every
// position of a word, short strings and long ones, and no end at all.
func FuzzSkipStringMatchesReference(f *testing.F) {
	for _, s := range []string{`"a"`, `"\""`, `"\\"`, `"\\\""x"`, `"abcdefg\"hijklmnop\\\\"q`, `"` + strings.Repeat(`\\`, 20) + `"`,
		`"` + strings.Repeat("x", 40) + `\"` + strings.Repeat("y", 7) + `"`, `"unterminated\`, `"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || b[0] != '"' {
			return
		}
		if got, want := SkipString(b, 0), skipStringReference(b, 0); got != want {
			t.Fatalf("SkipString(%q) = %d, want %d", b, got, want)
		}
	})
}
