package intake

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// PeekBody peeks without signing, as the balancer does with de-duplication
// off.
func PeekBody(body []byte) (Peek, error) {
	p, _, err := Read(body, Options{})
	return p, err
}

func TestPeekBody(t *testing.T) {
	for _, tc := range []struct {
		name, body, model, session string
		stream                     bool
	}{
		{"plain", `{"model":"m","stream":true,"messages":[]}`, "m", "", true},
		{"whitespace", " {\n \"model\" : \"m\\u00e9\" , \"stream\" : false } ", "mé", "", false},
		{"escaped quotes in other fields", `{"system":"say \"model\":\"x\"","model":"real"}`, "real", "", false},
		{"json user_id", `{"model":"m","metadata":{"user_id":"{\"device_id\":\"d\",\"session_id\":\"sess-1\"}"}}`, "m", "sess-1", false},
		{"legacy user_id", `{"model":"m","metadata":{"user_id":"user_abc_account_def_session_sess-2"}}`, "m", "sess-2", false},
		{"stream null", `{"model":"m","stream":null}`, "m", "", false},
		{"json-only escapes", `{"model":"vendor\/m\ud83d\ude00","metadata":{"user_id":"{\"session_id\":\"a\\/b\"}"}}`, "vendor/m\U0001F600", "a/b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PeekBody([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if p.Model != tc.model || p.Stream != tc.stream || p.Session != tc.session {
				t.Fatalf("got %+v", p)
			}
			// The walk validated the body whole, and its Peek says so,
			// as Prepare's does.
			if !p.Valid() {
				t.Fatal("Read's Peek does not say the body is valid")
			}
			if p, _, err := Prepare([]byte(tc.body), Options{}); err != nil || !p.Valid() {
				t.Fatalf("Prepare: %v, valid %v", err, p.Valid())
			}
		})
	}
	if (Peek{Model: "m"}).Valid() {
		t.Fatal("a Peek made by hand says its body is valid")
	}
}

func TestPeekBodyRejects(t *testing.T) {
	for name, body := range map[string]string{
		"empty":           ``,
		"array":           `[]`,
		"no model":        `{"messages":[]}`,
		"empty model":     `{"model":""}`,
		"number model":    `{"model":1}`,
		"duplicate model": `{"model":"a","model":"b"}`,
		"duplicate meta":  `{"model":"a","metadata":{},"metadata":{}}`,
		"bad stream":      `{"model":"a","stream":"yes"}`,
		"truncated":       `{"model":"a","messages":[{"role":"user"`,
		"mismatched":      `{"model":"a","messages":[}`,
		"trailing":        `{"model":"a"} x`,
		"unterminated":    `{"model":"a`,
		"bad literal":     `{"model":"a","x":tru}`,
		"too deep":        `{"model":"a","x":` + strings.Repeat("[", rawjson.MaxDepth) + strings.Repeat("]", rawjson.MaxDepth) + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := PeekBody([]byte(body))
			var be *Error
			if !errors.As(err, &be) {
				t.Fatalf("err = %v, want an Error", err)
			}
		})
	}
}

func TestWithModelReplacesOnlyTheModel(t *testing.T) {
	in := []byte(`{"a":1, "model" :  "old" ,"b":"model \"old\""}`)
	p, err := PeekBody(in)
	if err != nil {
		t.Fatal(err)
	}
	out := p.WithModel(in, `new"one`)
	if string(out) != `{"a":1, "model" :  "new\"one" ,"b":"model \"old\""}` {
		t.Fatalf("got %s", out)
	}
	if string(in) != `{"a":1, "model" :  "old" ,"b":"model \"old\""}` {
		t.Fatal("input modified")
	}
}

func TestPeekClaudeCodeFixture(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/claude-code-2.1.332-request.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Body json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	p, err := PeekBody(fx.Body)
	if err != nil {
		t.Fatal(err)
	}
	if p.Model != "claude-opus-5-5" || !p.Stream || p.Session != "00000000-0000-4000-8000-000000000000" {
		t.Fatalf("got %+v", p)
	}
}

func BenchmarkPeekClaudeCodeFixture(b *testing.B) {
	raw, err := os.ReadFile("../../testdata/claude-code-2.1.332-request.json")
	if err != nil {
		b.Fatal(err)
	}
	var fx struct {
		Body json.RawMessage `json:"body"`
	}
	_ = json.Unmarshal(raw, &fx)
	b.SetBytes(int64(len(fx.Body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PeekBody(fx.Body); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzPeekBody checks that no input panics and that whatever PeekBody
// accepts, encoding/json accepts too, with the same model.
func FuzzPeekBody(f *testing.F) {
	f.Add([]byte(`{"model":"m","stream":true,"metadata":{"user_id":"u_session_s"}}`))
	f.Add([]byte(`{"model":"m\u00e9","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`))
	f.Add([]byte(`{"model":"a","x":[1,-2.5e3,true,false,null,{}]}`))
	f.Add([]byte(`{"model":"a"`))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := PeekBody(in)
		if err != nil {
			return
		}
		var v struct {
			Model string `json:"model"`
		}
		if json.Unmarshal(in, &v) != nil {
			// The scanner is lenient on number and escape details, which
			// the provider judges; structure must still have been sound.
			return
		}
		if v.Model != p.Model && !strings.ContainsRune(v.Model, '\uFFFD') {
			t.Fatalf("model %q, encoding/json says %q", p.Model, v.Model)
		}
		out := p.WithModel(in, "replaced")
		q, err := PeekBody(out)
		if err != nil || q.Model != "replaced" {
			t.Fatalf("after WithModel: %v %q", err, q.Model)
		}
	})
}

func TestForeignThinkingIsFoundInTheSameWalk(t *testing.T) {
	own := `{"model":"m","messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"claude-balancer:v1:abc"},{"type":"text","text":"x"}]}]}`
	genuine := `{"model":"m","messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"EqQBCkgIARABGAIiQ"}]}]}`
	quoted := `{"model":"m","messages":[{"role":"user","content":"the text \"signature\":\"claude-balancer:v1:\" is not a block"}]}`
	escaped := `{"model":"m","messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"t","sign\u0061ture":"claude-balancer:v1:abc"}]}]}`
	for _, sign := range []bool{false, true} {
		for body, want := range map[string]bool{own: true, genuine: false, quoted: false, escaped: true} {
			p, _, err := Read([]byte(body), Options{Sign: sign})
			if err != nil || p.ForeignThinking != want {
				t.Errorf("sign %v, %.60s: foreign %v, err %v", sign, body, p.ForeignThinking, err)
			}
		}
	}
}

func TestSystemMessagesAreFoundInTheSameWalk(t *testing.T) {
	for _, sign := range []bool{false, true} {
		for body, want := range map[string]bool{
			`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"system","content":"be brief"}]}`:                              true,
			`{"messages":[{"content":[{"type":"text","text":"x"}],"role":"system"}],"model":"m"}`:                                           true,
			`{"model":"m","messages":[{"r\u006fle":"syst\u0065m","content":"x"}]}`:                                                          true,
			`{"model":"m","messages":[{"role":"user","content":"hi"}]}`:                                                                     false,
			`{"model":"m","system":"s","messages":[{"role":"user","content":"hi"}]}`:                                                        false,
			`{"model":"m","system":[{"role":"system"}],"messages":[{"role":"user","content":"hi"}]}`:                                        false,
			`{"model":"m","messages":[{"role":"user","content":"the text \"role\":\"system\" is not a message"}]}`:                          false,
			`{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"role":"system"}}]}]}`: false,
			`{"model":"m","messages":[{"role":"user","content":[{"role":"system"}]}]}`:                                                      false,
			`{"model":"m","messages":[{"role":"System","content":"x"}]}`:                                                                    false,
		} {
			p, _, err := Read([]byte(body), Options{Sign: sign})
			if err != nil || p.SystemMessages != want {
				t.Errorf("sign %v, %s: system %v, err %v", sign, body, p.SystemMessages, err)
			}
		}
	}
}

// TestCaseVariantsOfKnownKeysAreRefused: a provider whose decoder folds case
// would read "Model" (or "ſtream", whose long s folds to s) as the field, so
// the balancer would route, allow and account one model while the provider
// runs another.
func TestCaseVariantsOfKnownKeysAreRefused(t *testing.T) {
	for _, body := range []string{
		`{"model":"claude-haiku","Model":"claude-opus"}`,
		`{"MODEL":"x","model":"m"}`,
		`{"model":"m","Stream":true}`,
		`{"model":"m","ſtream":true}`,
		`{"model":"m","metaData":{"user_id":"u"}}`,
		`{"model":"m","\u004dodel":"x"}`,
	} {
		if _, err := PeekBody([]byte(body)); err == nil || !strings.Contains(err.Error(), "case-sensitive") {
			t.Errorf("%s: %v", body, err)
		}
	}
	for _, body := range []string{
		`{"model":"m","models":["a"]}`,
		`{"model":"m","stream_options":{}}`,
		`{"model":"m","modal":"x"}`,
	} {
		if _, err := PeekBody([]byte(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
}
