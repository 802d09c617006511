package balancer

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

func TestFoldSystemMessages(t *testing.T) {
	const (
		sysS  = `{"role":"system","content":"Be brief."}`
		sysB  = `{"role":"system","content":[{"type":"text","text":"Line \"one\""},{"type":"image","source":{}},{"type":"text","text":"two","cache_control":{"type":"ephemeral"}}]}`
		foldS = `{"type":"text","text":"Be brief."}`
		foldB = `{"type":"text","text":"Line \"one\"\ntwo","cache_control":{"type":"ephemeral"}}`
		asst  = `{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"role":"system"}}]}`
	)
	for _, tc := range []struct{ name, in, want string }{
		{
			"after a user turn with string content",
			`[{"role":"user","content":"hi"},` + sysS + `]`,
			`[{"role":"user","content":[{"type":"text","text":"hi"},` + foldS + `]}]`,
		},
		{
			"blocks joined, cache_control kept, other blocks dropped",
			`[{"role":"user","content":[{"type":"text","text":"hi"}]},` + sysB + `]`,
			`[{"role":"user","content":[{"type":"text","text":"hi"},` + foldB + `]}]`,
		},
		{
			"consecutive system messages",
			`[{"role":"user","content":"hi"},` + sysS + `,` + sysB + `]`,
			`[{"role":"user","content":[{"type":"text","text":"hi"},` + foldS + `,` + foldB + `]}]`,
		},
		{
			"after an assistant turn, joins the next user turn behind its tool results",
			`[{"role":"user","content":"go"},` + asst + `,` + sysS + `,{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"},{"type":"text","text":"next"}]}]`,
			`[{"role":"user","content":"go"},` + asst + `,{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"},` + foldS + `,{"type":"text","text":"next"}]}]`,
		},
		{
			"before the next user turn with string content",
			`[` + sysS + `,{"role":"user","content":"hi"}]`,
			`[{"role":"user","content":[` + foldS + `,{"type":"text","text":"hi"}]}]`,
		},
		{
			"first of several, before the first user turn",
			`[` + sysS + `, ` + sysB + ` , {"role":"user","content":"hi"}]`,
			`[{"role":"user","content":[` + foldS + `,` + foldB + `,{"type":"text","text":"hi"}]}]`,
		},
		{
			"last, after an assistant turn: a user message of its own",
			`[{"role":"user","content":"hi"},{"role":"assistant","content":"yes"},` + sysS + `]`,
			`[{"role":"user","content":"hi"},{"role":"assistant","content":"yes"},{"role":"user","content":[` + foldS + `]}]`,
		},
		{
			"between two assistant turns",
			`[{"role":"user","content":"hi"},{"role":"assistant","content":"a"},` + sysS + `,` + sysB + `,{"role":"assistant","content":"b"}]`,
			`[{"role":"user","content":"hi"},{"role":"assistant","content":"a"},{"role":"user","content":[` + foldS + `,` + foldB + `]},{"role":"assistant","content":"b"}]`,
		},
		{
			"only tool results in the next user turn",
			`[` + asst + `,` + sysS + `,{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]`,
			`[` + asst + `,{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"},` + foldS + `]}]`,
		},
		{
			"empty user content",
			`[{"role":"user","content":[]},` + sysS + `]`,
			`[{"role":"user","content":[` + foldS + `]}]`,
		},
		{
			"empty string content",
			`[{"role":"user","content":""},` + sysS + `]`,
			`[{"role":"user","content":[` + foldS + `]}]`,
		},
		{
			"a system message without text is dropped",
			`[{"role":"user","content":"hi"}, {"role":"system","content":[{"type":"text","text":""}]}, {"role":"assistant","content":"a"}]`,
			`[{"role":"user","content":"hi"}, {"role":"assistant","content":"a"}]`,
		},
		{
			"only a system message without text",
			`[{"role":"system","content":""}]`,
			`[]`,
		},
		{
			"escaped keys and role",
			`[{"role":"user","content":"hi"},{"r\u006fle":"syst\u0065m","c\u006fntent":"x"}]`,
			`[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"x"}]}]`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Bytes around the messages, and inside the kept ones, as sent.
			head := `{"model":"m",  "system":[{"type":"text","text":"top"}],"messages" : `
			tail := " ,\"x\":\"caf\\u00e9 \xff\",\"stream\":true}"
			in := head + tc.in + tail
			out, changed := foldSystemMessages([]byte(in))
			if !changed {
				t.Fatalf("nothing folded")
			}
			if want := head + tc.want + tail; string(out) != want {
				t.Fatalf("got\n%s\nwant\n%s", out, want)
			}
			if !rawjson.Valid(out) {
				t.Fatalf("invalid JSON: %s", out)
			}
			var doc struct {
				Messages []struct {
					Role string `json:"role"`
				} `json:"messages"`
			}
			if err := json.Unmarshal([]byte(strings.ToValidUTF8(string(out), "?")), &doc); err != nil {
				t.Fatal(err)
			}
			for i, m := range doc.Messages {
				if m.Role == "system" || i > 0 && m.Role == "user" && doc.Messages[i-1].Role == "user" {
					t.Fatalf("message %d: %s after %+v", i, m.Role, doc.Messages)
				}
			}
		})
	}
}

func TestFoldSystemMessagesLeavesOtherBodiesAlone(t *testing.T) {
	for _, in := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","system":"s","messages":[{"role":"user","content":"role system"}]}`,
		`{"model":"m","messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"role":"system"}}]}]}`,
		`{"model":"m","messages":{"role":"system"}}`,
		`not json`,
		`{"model":"m","messages":[{"role":"system","content":"x"}`,
	} {
		out, changed := foldSystemMessages([]byte(in))
		if changed || string(out) != in {
			t.Errorf("%s: changed to %s", in, out)
		}
	}
}

func FuzzFoldSystemMessages(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"system","content":"x"}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}}]},{"role":"assistant","content":"b"},{"role":"system","content":"c"},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}]}`))
	f.Add([]byte(`{"model":"m","messages":[ {"role":"system","content":""} , {"role":"system","content":"y"} ]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, changed := foldSystemMessages(in)
		if !changed {
			if string(out) != string(in) {
				t.Fatalf("unchanged but different")
			}
			return
		}
		if !rawjson.Valid(out) {
			t.Fatalf("%s folded into invalid JSON %s", in, out)
		}
		// No system message is left, and folding again changes nothing.
		if again, changed := foldSystemMessages(out); changed {
			t.Fatalf("%s folded twice: %s then %s", in, out, again)
		}
	})
}

func TestFoldedBodyOnlyForFoldProviders(t *testing.T) {
	body := []byte(`{"model":"claude-x","messages":[{"role":"user","content":"hi"},{"role":"system","content":"x"}]}`)
	peek, err := PeekBody(body)
	if err != nil || !peek.SystemMessages {
		t.Fatalf("peek: %+v %v", peek, err)
	}
	req := &Request{Body: body, Peek: peek, Header: http.Header{}}
	plain, _ := anthropicCodec{}.body(req, "")
	if string(plain) != string(body) {
		t.Fatalf("a provider without fold_system got %s", plain)
	}
	folded, _ := anthropicCodec{fold: true}.body(req, "other-model")
	want := `{"model":"other-model","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"text","text":"x"}]}]}`
	if string(folded) != want {
		t.Fatalf("folded %s", folded)
	}
	// A request without system messages is not even looked at.
	body2 := []byte(`{"model":"claude-x","messages":[{"role":"user","content":"hi"}]}`)
	peek2, _ := PeekBody(body2)
	req2 := &Request{Body: body2, Peek: peek2, Header: http.Header{}}
	if out, _ := (anthropicCodec{fold: true}).body(req2, ""); &out[0] != &body2[0] {
		t.Fatalf("a body without system messages was copied")
	}
}
