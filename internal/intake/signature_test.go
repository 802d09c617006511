package intake

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// defaultIgnore is de-duplication's default.
var defaultIgnore = []string{"max_tokens"}

// canonical returns the canonical form the signature hashes, written out
// in full: the same walk as the signature's, with no value replaced by its
// hash.
func canonical(body []byte, ignore []string) ([]byte, error) {
	w := new(walker)
	w.reset(body, Options{Sign: true, Ignore: ignore})
	w.inline = math.MaxInt
	if err := w.document(); err != nil {
		return nil, err
	}
	return w.appendTop(nil), nil
}

// Signature signs body as de-duplication does.
func Signature(body []byte, ignore []string, identity, beta string) (Key, error) {
	_, k, err := Read(body, Options{Sign: true, Ignore: ignore, Identity: identity, Beta: beta})
	return k, err
}

// peekError reports an error that is the peek's, not the grammar's: a
// canonical form exists, but the balancer refuses the request.
func peekError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "duplicate ") || strings.HasPrefix(msg, "model:") || strings.HasPrefix(msg, "stream:") ||
		strings.Contains(msg, "keys are case-sensitive")
}

func mustSign(t testing.TB, body string, ignore []string, identity, beta string) Key {
	t.Helper()
	if !strings.Contains(body, `"model"`) {
		body = strings.Replace(body, "{", `{"model":"m",`, 1)
	}
	k, err := Signature([]byte(body), ignore, identity, beta)
	if err != nil {
		t.Fatalf("Signature(%s): %v", body, err)
	}
	return k
}

const baseBody = `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,` +
	`"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],` +
	`"system":[{"type":"text","text":"You are Claude Code."}],"temperature":1}`

func TestSignatureIgnoresRetryNoiseAndLayout(t *testing.T) {
	base := mustSign(t, baseBody, defaultIgnore, "client-a", "claude-code-20250219,interleaved-thinking-2025-05-14")
	basePre, _ := prepared(t, baseBody, "claude-code-20250219,interleaved-thinking-2025-05-14")
	same := []struct {
		name, body, beta string
	}{
		{"max_tokens differs", strings.Replace(baseBody, `"max_tokens":1024`, `"max_tokens":32000`, 1), ""},
		{"max_tokens absent", strings.Replace(baseBody, `"max_tokens":1024,`, ``, 1), ""},
		{"stream differs", strings.Replace(baseBody, `"stream":true`, `"stream":false`, 1), ""},
		{"stream absent", strings.Replace(baseBody, `"stream":true,`, ``, 1), ""},
		{"top-level key order", `{"temperature":1,"system":[{"type":"text","text":"You are Claude Code."}],"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"stream":true,"model":"claude-sonnet-4-5","max_tokens":1024}`, ""},
		{"nested key order", `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"content":[{"cache_control":{"type":"ephemeral"},"text":"hi","type":"text"}],"role":"user"}],"system":[{"text":"You are Claude Code.","type":"text"}],"temperature":1}`, ""},
		{"whitespace", "{\n  \"model\" : \"claude-sonnet-4-5\",\t\"max_tokens\": 1024, \"stream\": true,\r\n  \"messages\": [ { \"role\": \"user\", \"content\": [ {\"type\": \"text\", \"text\": \"hi\", \"cache_control\": {\"type\": \"ephemeral\"} } ] } ],\n \"system\": [{\"type\":\"text\",\"text\":\"You are Claude Code.\"}], \"temperature\": 1 }\n", ""},
		{"beta flags reordered and spaced", baseBody, " interleaved-thinking-2025-05-14 , claude-code-20250219,"},
	}
	for _, tt := range same {
		t.Run(tt.name, func(t *testing.T) {
			beta := tt.beta
			if beta == "" {
				beta = "claude-code-20250219,interleaved-thinking-2025-05-14"
			}
			if got := mustSign(t, tt.body, defaultIgnore, "client-a", beta); got != base {
				t.Error("signature changed")
			}
			// The Pre of identical requests is equal too, and their
			// Tickets sign as Read does.
			if pre, key := prepared(t, tt.body, beta); pre != basePre || key != base {
				t.Errorf("Pre equal %v, Key equal %v", pre == basePre, key == base)
			}
		})
	}
}

// prepared returns the Pre and the Key of a body through Prepare, with the
// default ignore list and identity "client-a".
func prepared(t testing.TB, body, beta string) (Pre, Key) {
	t.Helper()
	_, tk, err := Prepare([]byte(body), Options{Ignore: defaultIgnore, Identity: "client-a", Beta: beta})
	if err != nil {
		t.Fatalf("Prepare(%s): %v", body, err)
	}
	if tk.Signed() {
		t.Fatal("Prepare signed the body")
	}
	k, ok := tk.Key()
	if !ok || !tk.Signed() {
		t.Fatal("no Key")
	}
	// Signed in the walk, the same body has the same Pre and Key.
	_, eager, err := Prepare([]byte(body), Options{Ignore: defaultIgnore, Identity: "client-a", Beta: beta, Sign: true})
	if err != nil || !eager.Signed() {
		t.Fatalf("Prepare with Sign: signed %v, %v", eager.Signed(), err)
	}
	if k2, _ := eager.Key(); k2 != k || eager.Pre != tk.Pre {
		t.Fatalf("Prepare with Sign: Pre equal %v, Key equal %v", eager.Pre == tk.Pre, k2 == k)
	}
	return tk.Pre, k
}

func TestSignatureSeparatesDifferentRequests(t *testing.T) {
	beta := "claude-code-20250219"
	base := mustSign(t, baseBody, defaultIgnore, "client-a", beta)
	differ := []struct {
		name, body, identity, beta string
		ignore                     []string
	}{
		{"other client", baseBody, "client-b", beta, defaultIgnore},
		{"no client identity", baseBody, "", beta, defaultIgnore},
		{"other beta header", baseBody, "client-a", beta + ",context-1m-2025-08-07", defaultIgnore},
		{"no beta header", baseBody, "client-a", "", defaultIgnore},
		{"other message text", strings.Replace(baseBody, `"hi"`, `"hi!"`, 1), "client-a", beta, defaultIgnore},
		{"other model", strings.Replace(baseBody, `sonnet`, `opus`, 1), "client-a", beta, defaultIgnore},
		{"other temperature", strings.Replace(baseBody, `"temperature":1`, `"temperature":0`, 1), "client-a", beta, defaultIgnore},
		{"array order", strings.Replace(baseBody, `"system":[{"type":"text","text":"You are Claude Code."}]`, `"system":[{"type":"text","text":"You are Claude Code."},{"type":"text","text":"x"}]`, 1), "client-a", beta, defaultIgnore},
		{"cache_control dropped", strings.Replace(baseBody, `,"cache_control":{"type":"ephemeral"}`, ``, 1), "client-a", beta, defaultIgnore},
		{"max_tokens counted when not ignored", baseBody, "client-a", beta, nil},
		{"max_tokens nested is not ignored", strings.Replace(baseBody, `"type":"ephemeral"`, `"type":"ephemeral","max_tokens":1`, 1), "client-a", beta, defaultIgnore},
		{"identity and beta boundary", baseBody, "client-a" + beta, "", defaultIgnore},
	}
	for _, tt := range differ {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustSign(t, tt.body, tt.ignore, tt.identity, tt.beta); got == base {
				t.Error("signature did not change")
			}
		})
	}
}

func TestSignatureIgnoresConfiguredFields(t *testing.T) {
	ignore := []string{"max_tokens", "metadata", "temperature"}
	a := mustSign(t, `{"model":"m","metadata":{"user_id":"a"},"temperature":1,"messages":[]}`, ignore, "", "")
	b := mustSign(t, `{"model":"m","metadata":{"user_id":"b"},"messages":[],"te\u006dperature":0}`, ignore, "", "")
	if a != b {
		t.Error("configured fields were not ignored")
	}
}

func TestSignatureRejectsInvalidBodies(t *testing.T) {
	for _, body := range []string{
		``, `   `, `[]`, `"x"`, `1`, `null`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1}x`, `{"a":1}{}`,
		`{"a":tru}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":"\x"}`, `{"a":"\u12"}`,
		"{\"a\":\"\x01\"}", `{"a":[1,]}`, `{"a":[1 2]}`, `{a:1}`, `{"a":"unterminated}`,
		`{"a":` + strings.Repeat("[", rawjson.MaxDepth+1) + strings.Repeat("]", rawjson.MaxDepth+1) + `}`,
	} {
		// Refused by the grammar, before the peek looks for a model.
		if _, err := Signature([]byte(body), defaultIgnore, "", ""); err == nil || peekError(err) {
			t.Errorf("Signature(%.40q): %v", body, err)
		}
	}
}

func TestStringScanFindsSpecialBytesAtEveryOffset(t *testing.T) {
	for off := range 17 {
		pad := strings.Repeat("é", off/2) + strings.Repeat("a", off%2)
		for _, bad := range []string{"\x01", "\x1f", "\n"} {
			body := `{"a":"` + pad + bad + `tail after the bad byte"}`
			if _, err := canonical([]byte(body), nil); err == nil {
				t.Errorf("offset %d: control byte %q accepted", off, bad)
			}
		}
		for _, ok := range []string{`\"`, `\\`, `\u00e9`, "\x7f", "\xff"} {
			body := `{"a":"` + pad + ok + `tail after the special byte"}`
			got, err := canonical([]byte(body), nil)
			if err != nil || string(got) != body {
				t.Errorf("offset %d: %q: got %q, %v", off, ok, got, err)
			}
		}
		body := `{"a":"` + pad + `","b":1}`
		if got, err := canonical([]byte(body), nil); err != nil || string(got) != body {
			t.Errorf("offset %d: closing quote: got %q, %v", off, got, err)
		}
	}
}

func TestCanonicalFormSortsKeysAndDropsWhitespace(t *testing.T) {
	got, err := canonical([]byte(` { "b" : [ 1 , { "z" : null , "a" : "s p\"ace" } , -0.5e+3 ] , "a" : { } , "stream" : true , "c" : [ ] } `), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{},"b":[1,{"a":"s p\"ace","z":null},-0.5e+3],"c":[]}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// FuzzCanonical checks the canonicaliser against encoding/json: it accepts
// exactly the JSON objects, and its output means the same as its input with
// the ignored fields removed.
func FuzzCanonical(f *testing.F) {
	f.Add([]byte(baseBody))
	f.Add([]byte(`{"b":{"d":1,"c":[true,false,null]},"a":"\u00e9\n","a":2}`))
	f.Add([]byte(`{"x":1e10,"y":-0,"z":"\ud83d\ude00"}`))
	f.Add([]byte(`{"a":1e400}`))
	f.Add([]byte(`{"syst\u0065m":"B","system":"A"}`))
	f.Add(largeBody(""))
	f.Add(largeBody(`,"tools":[{"b":1,"a":"` + strings.Repeat("x", 1100) + `"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := canonical(body, defaultIgnore)
		if err != nil && peekError(err) {
			return
		}
		// Numbers stay as written, so they are compared as written:
		// 1e400 is valid JSON that no float64 holds.
		decode := func(b []byte, v *any) error {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			if err := d.Decode(v); err != nil {
				return err
			}
			if d.More() {
				return errors.New("trailing data")
			}
			return nil
		}
		var want any
		isObject := decode(body, &want) == nil && reflect.TypeOf(want) == reflect.TypeOf(map[string]any{})
		if !json.Valid(body) || nesting(body) > rawjson.MaxDepth {
			isObject = false
		}
		if (err == nil) != isObject {
			t.Fatalf("canonical(%q) err = %v, but valid object = %v", body, err, isObject)
		}
		if err != nil {
			return
		}
		m := want.(map[string]any)
		delete(m, "stream")
		delete(m, "max_tokens")
		var back any
		if err := decode(got, &back); err != nil {
			t.Fatalf("canonical form %q of %q is not JSON: %v", got, body, err)
		}
		if !reflect.DeepEqual(back, want) {
			t.Fatalf("canonical form %q means something else than %q", got, body)
		}
		again, err := canonical(got, nil)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("canonical form is not stable: %q -> %q (%v)", got, again, err)
		}
		// What is signed is the canonical text, whichever values stand in
		// it as their hashes.
		// Equal canonical forms have equal Pres (the Pre is a necessary
		// condition of an equal Key).
		// Whether the walk signs or not (Options.Sign) changes neither.
		_, a, errA := Prepare(body, Options{Ignore: defaultIgnore, Owner: "fuzz"})
		_, b, errB := Prepare(got, Options{Ignore: defaultIgnore, Sign: true, Owner: "fuzz"})
		if (errA == nil) != (errB == nil) || errA != nil && !peekError(errA) || errA == nil && a.Pre != b.Pre {
			t.Fatalf("%q and its canonical form %q: Pre equal %v (%v, %v)", body, got, a.Pre == b.Pre, errA, errB)
		}
		if errA == nil {
			ka, _ := a.Key()
			kb, _ := b.Key()
			if ka != kb {
				t.Fatalf("%q and its canonical form %q sign differently through Prepare", body, got)
			}
		}
		for _, inline := range []int{0, 17, inlineMax} {
			if signWith(t, body, inline, "c", "") != signWith(t, got, inline, "c", "") {
				t.Fatalf("inline %d: %q signs unlike its canonical form %q", inline, body, got)
			}
		}
	})
}

// nesting returns the deepest nesting of arrays and objects in a JSON text.
func nesting(b []byte) int {
	depth, most, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (c == '[' || c == '{'):
			depth++
			most = max(most, depth)
		case !inString && (c == ']' || c == '}'):
			depth--
		}
	}
	return most
}

func TestEscapedKeysAreOrderedByMeaning(t *testing.T) {
	a := mustSign(t, `{"syst\u0065m":"B","system":"A"}`, nil, "c", "")
	b := mustSign(t, `{"system":"B","system":"A"}`, nil, "c", "")
	c := mustSign(t, `{"system":"A","syst\u0065m":"B"}`, nil, "c", "")
	if a != b {
		t.Fatal("two spellings of one key sign differently")
	}
	if a == c {
		t.Fatal("bodies whose last key differs share a signature")
	}
}

// compactBody returns body without insignificant whitespace, as clients send
// it.
func compactBody(t testing.TB, body []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func claudeCodeBody(t testing.TB) []byte {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/claude-code-2.1.332-request.json")
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Body json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	return rec.Body
}

// bigBody returns a Claude Code request grown to about size bytes by
// repeating its conversation.
func bigBody(t testing.TB, size int) []byte {
	t.Helper()
	var req map[string]json.RawMessage
	if err := json.Unmarshal(claudeCodeBody(t), &req); err != nil {
		t.Fatal(err)
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(req["messages"], &msgs); err != nil {
		t.Fatal(err)
	}
	grown := msgs
	for n := len(req["messages"]); n < size; n += len(req["messages"]) {
		grown = append(grown, msgs...)
	}
	req["messages"], _ = json.Marshal(grown)
	out, _ := json.MarshalIndent(req, "", " ")
	return out
}

func TestSignatureOfRecordedClaudeCodeRequest(t *testing.T) {
	body := claudeCodeBody(t)
	a, err := Signature(body, defaultIgnore, "k", "")
	if err != nil {
		t.Fatal(err)
	}
	var v any
	_ = json.Unmarshal(body, &v)
	compact, _ := json.Marshal(v)
	b, err := Signature(compact, defaultIgnore, "k", "")
	if err != nil || a != b {
		t.Errorf("re-encoded request signs differently (%v)", err)
	}
}

func BenchmarkSignature(b *testing.B) {
	for _, tt := range []struct {
		name string
		body []byte
	}{
		{"claude-code-53KB", claudeCodeBody(b)},
		{"claude-code-compact", compactBody(b, claudeCodeBody(b))},
		{"2MB", bigBody(b, 2<<20)},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.SetBytes(int64(len(tt.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Signature(tt.body, defaultIgnore, "client", "claude-code-20250219"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Duplicate keys mean "the last one wins", so reordering them changes the
// request: the signature must keep them apart, at the top level and below,
// also when two spellings decode to the same key (invalid UTF-8 decodes to
// U+FFFD).
func TestSignatureKeepsTheOrderOfDuplicateKeys(t *testing.T) {
	pairs := [][2]string{
		{`{"model":"m","a":1,"a":2}`, `{"model":"m","a":2,"a":1}`},
		{`{"model":"m","x":{"a":1,"a":2}}`, `{"model":"m","x":{"a":2,"a":1}}`},
		{"{\"model\":\"m\",\"x\":{\"\x880\":0,\"\xe40\":[]}}", "{\"model\":\"m\",\"x\":{\"\xe40\":[],\"\x880\":0}}"},
		{"{\"\x880\":0,\"\xe40\":[]}", "{\"\xe40\":[],\"\x880\":0}"},
		{"{\"\xef\xbf\xbd\":0,\"\xe4\":1}", "{\"\xe4\":1,\"\xef\xbf\xbd\":0}"},
	}
	for _, p := range pairs {
		a := mustSign(t, p[0], defaultIgnore, "c", "")
		b := mustSign(t, p[1], defaultIgnore, "c", "")
		if a == b {
			t.Errorf("%q and %q share a signature, but mean different things", p[0], p[1])
		}
		// Each is stable under its own canonical form.
		for _, body := range p {
			got, err := canonical([]byte(body), defaultIgnore)
			if err != nil {
				t.Fatalf("canonical(%q): %v", body, err)
			}
			again, err := canonical(got, nil)
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("canonical form of %q is not stable: %q -> %q", body, got, again)
			}
		}
	}
}

// BenchmarkRead is the whole intake of a request: validation, peek and, for
// de-duplication, the signature.
func BenchmarkRead(b *testing.B) {
	body := compactBody(b, claudeCodeBody(b))
	for _, tt := range []struct {
		name string
		opt  Options
	}{
		{"sign", Options{Sign: true, Ignore: defaultIgnore, Identity: "client", Beta: "claude-code-20250219"}},
		{"peek", Options{}},
		// The same client's next request, whose tools and system are
		// the ones it sent before (cache.go).
		{"sign_known", Options{Sign: true, Ignore: defaultIgnore, Identity: "client", Beta: "claude-code-20250219", Owner: "client"}},
		{"peek_known", Options{Owner: "client"}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Read(body, tt.opt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What a request without an identical twin in flight costs with
	// de-duplication on: validation, peek and the digest of its Pre.
	for _, owner := range []string{"", "client"} {
		name := "prepare"
		if owner != "" {
			name = "prepare_known"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			opt := Options{Ignore: defaultIgnore, Identity: "client", Beta: "claude-code-20250219", Owner: owner}
			for b.Loop() {
				if _, _, err := Prepare(body, opt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
