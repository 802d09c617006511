package rawjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var cases = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `false`, `null`, ` {"a" : [1, {"b":null}] } `,
	`"\u00e9\ud83d\ude00\n\"\\\/"`, `"` + strings.Repeat("x", 100) + `"`, `{"a":"` + strings.Repeat(`\n`, 50) + `"}`,
	`{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{a:1}`, `01`, `016`, `-016`, `[016]`, `{"a":016}`, `1.`, `.5`, `-`, `1e`,
	`+1`, `1e+`, `tru`, `nul`, `"abc`, `"\x"`, `"\u12g4"`, "\"a\x01b\"", "\"" + strings.Repeat("y", 20) + "\x1f\"",
	"\"tab\there\"", `[1 2]`, `{"a":1 "b":2}`, `"a" "b"`, ``, ` `, `[,1]`, `{,}`, `{"a":1,,"b":2}`,
	"\"\xff\xfe invalid utf-8\"", `"\ud800 lone surrogate"`, `"\udc00"`,
	strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth),
}

func TestValidAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range cases {
		if got, want := Valid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("Valid(%.60q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

func TestInvalidUTF8AndLoneSurrogatesPass(t *testing.T) {
	for _, c := range []string{"\"\xff\"", `"\ud800"`, `{"k\udfff":"\ud83d"}`, "{\"\xc3\":1}"} {
		if err := Check([]byte(c)); err != nil {
			t.Errorf("Check(%q) = %v, want accepted", c, err)
		}
	}
}

func TestDepthLimit(t *testing.T) {
	ok := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	if err := Check([]byte(ok)); err != nil {
		t.Fatalf("%d levels refused: %v", MaxDepth, err)
	}
	deep := `{"a":` + ok + `}`
	err := Check([]byte(deep))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Reason != "JSON nested too deeply" {
		t.Fatalf("%d levels: err = %v", MaxDepth+1, err)
	}
}

func TestSyntaxErrorsSayWhere(t *testing.T) {
	for _, tc := range []struct {
		in     string
		off    int
		reason string
	}{
		{`{"a":016}`, 5, "invalid number"},
		{"{\"a\":\"x\x01\"}", 7, "control character in string"},
		{`{"a":"\q"}`, 6, "invalid escape in string"},
		{`{"a" 1}`, 5, "expected ':'"},
		{`[1 2]`, 3, "expected ',' or ']'"},
		{`{"a":1} x`, 8, "unexpected data after the JSON value"},
	} {
		err := Check([]byte(tc.in))
		var se *SyntaxError
		if !errors.As(err, &se) || se.Offset != tc.off || se.Reason != tc.reason {
			t.Errorf("Check(%q) = %v, want %q at %d", tc.in, err, tc.reason, tc.off)
		}
	}
}

func TestObjectAndArrayIterate(t *testing.T) {
	v := []byte(`{"a" : 1, "b\u0063":[1,{"x":"}"}], "d":"q\"}"}`)
	o := NewObject(v)
	var keys, vals []string
	for k, val, ok := o.Next(); ok; k, val, ok = o.Next() {
		keys = append(keys, string(KeyName(k)))
		vals = append(vals, string(val))
	}
	if strings.Join(keys, ",") != "a,bc,d" || strings.Join(vals, " ") != `1 [1,{"x":"}"}] "q\"}"` {
		t.Fatalf("keys %q vals %q", keys, vals)
	}
	if got := Field(v, "bc"); string(got) != `[1,{"x":"}"}]` {
		t.Fatalf("Field by escaped key = %s", got)
	}
	if got := Field([]byte(`{"k":1,"k":2}`), "k"); string(got) != "2" {
		t.Fatalf("Field of a duplicate = %s, want the last", got)
	}
}

func TestSameKeyComparesSpelledNames(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"model", "model", true},
		{`mod\u0065l`, "model", true},
		{`\u006dodel`, `mod\u0065l`, true},
		{"model", "Model", false},
		{`a\/b`, "a/b", true},
	} {
		if got := SameKey([]byte(tc.a), []byte(tc.b)); got != tc.same {
			t.Errorf("SameKey(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

func TestStrAndInt(t *testing.T) {
	if s := Str([]byte(`"vendor\/m\ud83d\ude00"`)); s != "vendor/m\U0001F600" {
		t.Fatalf("Str = %q", s)
	}
	if s := Str([]byte(`"\ud800x"`)); s != "\uFFFDx" {
		t.Fatalf("lone surrogate: %q", s)
	}
	for in, want := range map[string]int64{"12": 12, "-3": -3, "1.9": 1, "1e3": 1000} {
		if n, ok := Int([]byte(in)); !ok || n != want {
			t.Errorf("Int(%s) = %d %v", in, n, ok)
		}
	}
	for _, in := range []string{`"1"`, "1e300", "true"} {
		if _, ok := Int([]byte(in)); ok {
			t.Errorf("Int(%s) accepted", in)
		}
	}
}

func TestAppendStringRoundTrips(t *testing.T) {
	for _, s := range []string{"plain", "quote\" back\\ nl\n tab\t ctl\x01", "<tag> & \u2028", "é😀"} {
		out := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil || back != s {
			t.Errorf("AppendString(%q) = %s: %v %q", s, out, err, back)
		}
		if string(AppendUnescaped(nil, Inner(out))) != s {
			t.Errorf("AppendUnescaped(%s) differs", out)
		}
	}
}

func FuzzCheck(f *testing.F) {
	for _, c := range cases {
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
		// The walks that trust validated input agree with the validator.
		v := SkipSpaceLeft(b)
		if end := SkipValue(v, 0); SkipSpace(v, end) != len(v) {
			t.Fatalf("SkipValue(%q) = %d, want %d", v, end, len(v))
		}
		var x any
		_ = json.Unmarshal(b, &x)
		if s, ok := x.(string); ok && utf8.Valid(b) {
			end := SkipValue(v, 0)
			if got := Str(v[:end]); got != s {
				t.Fatalf("Str(%q) = %q, want %q", b, got, s)
			}
		}
		if m, ok := x.(map[string]any); ok && utf8.Valid(b) {
			for k := range m {
				if Field(v, k) == nil {
					t.Fatalf("Field(%q, %q) = nil", b, k)
				}
			}
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	body := []byte(`{"model":"claude","messages":[{"role":"user","content":[{"type":"text","text":"` +
		strings.Repeat("lorem ipsum dolor sit amet, \\\"quoted\\\" ", 1000) + `"}]}],"max_tokens":1024}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := Check(body); err != nil {
			b.Fatal(err)
		}
	}
}
