package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

var jsonSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `false`, `null`, ` {"a" : [1, 2.5, "x\n\u00e9\ud83d\ude00"] } `,
	`{"a":}`, `[1,]`, `{"a" 1}`, `01`, `1.`, `-`, `1e`, `"\x"`, `"\u12"`, "\"a\x01\"", `tru`, `nul`, `[`, `{"a":1}x`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
}

func TestValidDocumentMatchesJSONValid(t *testing.T) {
	deep := []string{ // encoding/json's nesting limit is 10000
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
	}
	for _, s := range append(deep, jsonSeeds...) {
		if got, want := validDocument([]byte(s)) == nil, json.Valid([]byte(s)); got != want {
			t.Errorf("validDocument(%.40q) valid = %v, json.Valid = %v", s, got, want)
		}
	}
}

func FuzzValidDocumentMatchesJSONValid(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := validDocument(b)
		if got, want := err == nil, json.Valid(b); got != want {
			t.Fatalf("validDocument(%q) = %v, json.Valid = %v", b, err, want)
		}
		if err != nil {
			return
		}
		i := skipSpace(b, 0)
		if end, ok := skipValue(b, i); !ok || skipSpace(b, end) != len(b) {
			t.Errorf("skipValue(%q) = %d, %v; want the end of the value", b, end, ok)
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
		if got := compact(nil, b[i:]); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("compact(%q) = %q, json.Compact = %q", b, got, want.Bytes())
		}
		if s, ok := v.(string); ok {
			raw := bytes.TrimSpace(b)
			if got := string(unescape(nil, raw[1:len(raw)-1])); got != s {
				t.Errorf("unescape(%q) = %q, encoding/json = %q", raw, got, s)
			}
		}
	})
}

func TestUnescapeMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		`plain`, `a\"b\\c\/d\b\f\n\r\t`, `\u00e9\u4e2d`, `\ud83d\ude00`, `\ud83d`, `\ude00x`, `\ud83d\u0041`,
		"caf\xc3\xa9", "bad\xffbyte", `\u0000`,
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+s+`"`), &want); err != nil {
			t.Fatal(err)
		}
		if got := string(unescape(nil, []byte(s))); got != want {
			t.Errorf("unescape(%q) = %q, want %q", s, got, want)
		}
	}
}

// FuzzCountNeverPanics feeds arbitrary bodies: a count or an error, never a panic, and every body that is not
// JSON is a client error.
func FuzzCountNeverPanics(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Add(fixtureBody(f))
	f.Add(request(`[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"iVBORw0KGgo="}},{"type":"document","source":{"type":"base64","data":"JVBERi0="}},{"type":"tool_result","content":[{"type":"text","text":"x"},1]}]}]`, `"tools":[{"name":"a"}]`))
	c := mustCounter(f, Options{CacheSize: 256})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := c.Count(b)
		if err == nil && n < requestOverhead+messageOverhead {
			t.Errorf("Count(%q) = %d, below the framing of one message", b, n)
		}
		if !json.Valid(b) && !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("Count(%q) on invalid JSON: %v, want an invalid request error", b, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("Count(%q): internal error %v", b, err)
		}
	})
}
