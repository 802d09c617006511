package convert

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var jsonCases = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `false`, `null`, ` {"a" : [1, {"b":null}] } `,
	`"\u00e9\ud83d\ude00\n\"\\\/"`, `"` + strings.Repeat("x", 100) + `"`, `{"a":"` + strings.Repeat(`\n`, 50) + `"}`,
	`{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{a:1}`, `01`, `1.`, `.5`, `-`, `1e`, `tru`, `nul`, `"abc`, `"\x"`,
	`"\u12g4"`, "\"a\x01b\"", "\"" + strings.Repeat("y", 20) + "\x1f\"", `[1 2]`, `{"a":1 "b":2}`, `"a" "b"`, ``, ` `,
	strings.Repeat("[", maxDepth-1) + strings.Repeat("]", maxDepth-1),
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range jsonCases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.60q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

func TestValidJSONRejectsDeepNesting(t *testing.T) {
	deep := strings.Repeat("[", maxDepth+10) + strings.Repeat("]", maxDepth+10)
	if validJSON([]byte(deep)) {
		t.Fatal("nesting beyond maxDepth accepted")
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, want := validJSON(b), json.Valid(b)
		if got != want && !(want && strings.Count(string(b), "[")+strings.Count(string(b), "{") >= maxDepth) {
			t.Fatalf("validJSON(%q) = %v, encoding/json says %v", b, got, want)
		}
		if !got {
			return
		}
		// The non-validating walkers agree with the validator's spans.
		b = trimSpace(b)
		if end := skipValue(b, 0); end != len(b) {
			t.Fatalf("skipValue(%q) = %d, want %d", b, end, len(b))
		}
		var v any
		_ = json.Unmarshal(b, &v)
		// encoding/json replaces invalid UTF-8; the converters keep bytes
		// as they came.
		if s, ok := v.(string); ok && utf8.Valid(b) {
			if got := string(appendUnescaped(nil, inner(b))); got != s {
				t.Fatalf("appendUnescaped(%q) = %q, want %q", b, got, s)
			}
		}
	})
}

func TestObjectAndArrayIterate(t *testing.T) {
	v := []byte(` {"a" : 1, "b\u0063":[1,{"x":"}"}], "d":"q\"}"} `)
	o := newObject(trimSpace(v))
	var keys, vals []string
	for k, val, ok := o.next(); ok; k, val, ok = o.next() {
		keys = append(keys, string(keyName(k)))
		vals = append(vals, string(val))
	}
	if strings.Join(keys, ",") != "a,bc,d" || strings.Join(vals, " ") != `1 [1,{"x":"}"}] "q\"}"` {
		t.Fatalf("keys %q vals %q", keys, vals)
	}
	a := newArray([]byte(`[ {"k":1}, 2 , {"k":[3]} ]`))
	var got []string
	for o, isObj, ok := a.nextObject(); ok; o, isObj, ok = a.nextObject() {
		if !isObj {
			got = append(got, "-")
			continue
		}
		_, val, _ := o.next()
		got = append(got, string(val))
		a.skipPast(&o)
	}
	if strings.Join(got, " ") != "1 - [3]" {
		t.Fatalf("nextObject gave %q", got)
	}
}

func TestKeyIsMatchesEscapedKeys(t *testing.T) {
	for _, c := range []struct {
		key, s string
		want   bool
	}{
		{"role", "role", true}, {`r\u006fle`, "role", true}, {"rol", "role", false}, {`ro\u006c`, "role", false},
	} {
		if got := keyIs([]byte(c.key), c.s); got != c.want {
			t.Errorf("keyIs(%q, %q) = %v", c.key, c.s, got)
		}
	}
}

func TestAppendQuotedJSONRoundTrips(t *testing.T) {
	for _, in := range []string{`{"a": "x\"y\\z\n", "b" : [1, 2.5, true, null]}`, `{}`, `"s"`, `[ ]`} {
		q := appendString(nil, "") // a valid empty string to start from
		q = append(q[:1], appendQuotedJSON(nil, []byte(in))...)
		q = append(q, '"')
		var s string
		if err := json.Unmarshal(q, &s); err != nil {
			t.Fatalf("%s: %v (%s)", in, err, q)
		}
		var a, b any
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			t.Fatalf("decoded %q is not JSON: %v", s, err)
		}
		_ = json.Unmarshal([]byte(in), &b)
		if ja, jb := mustJSON(t, a), mustJSON(t, b); ja != jb || strings.ContainsAny(s, " \n") && !strings.Contains(in, "\\n") {
			t.Fatalf("round trip of %s gave %s", in, s)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAppendStringEscapes(t *testing.T) {
	for _, s := range []string{"plain", "q\"b\\", "ctl\x00\x1f\t\r\n", "utf8 é €"} {
		var got string
		if err := json.Unmarshal(appendString(nil, s), &got); err != nil || got != s {
			t.Errorf("appendString(%q) = %s (%v)", s, appendString(nil, s), err)
		}
	}
}

func TestIntValue(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{{"12", 12, true}, {"12.9", 12, true}, {"1e3", 1000, true}, {`"1"`, 0, false}, {"1e400", 0, false}} {
		if got, ok := intValue([]byte(c.in)); got != c.want || ok != c.ok {
			t.Errorf("intValue(%s) = %d, %v", c.in, got, ok)
		}
	}
}
