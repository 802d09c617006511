package tokens

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// The grammar, compaction and string decoding are tested against encoding/json in internal/rawjson; these
// tests hold the walk of a request to the grammar.

var jsonSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `false`, `null`, ` {"a" : [1, 2.5, "x\n\u00e9\ud83d\ude00"] } `,
	`{"a":}`, `[1,]`, `{"a" 1}`, `01`, `1.`, `-`, `1e`, `"\x"`, `"\u12"`, "\"a\x01\"", `tru`, `nul`, `[`, `{"a":1}x`,
	`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
}

// TestSyntaxErrorsNameTheOffset: a body that breaks the grammar is a client error that says what broke where,
// whether the break is in a block counted afresh, in a cached block, or around them.
func TestSyntaxErrorsNameTheOffset(t *testing.T) {
	c := mustCounter(t, Options{CacheSize: 16})
	block := `{"type":"text","text":"cached"}`
	mustCount(t, c, request(userBlocks(block)))
	for _, tc := range []struct {
		name, body, at, reason string
	}{
		{"number", string(request(`[{"role":"user","content":"a","n":016}]`)), `016`, "invalid number"},
		{"control character", string(request(`[{"role":"user","content":"a` + "\x01" + `"}]`)), "\x01", "control character in string"},
		{"escape", string(request(`[{"role":"user","content":[{"type":"text","text":"\q"}]}]`)), `\q`, "invalid escape in string"},
		{"after a cached block", string(request(`[{"role":"user","content":[` + block + ` x]}]`)), ` x`, "expected ',' or ']'"},
		{"after the messages", string(request(userBlocks(block) + ` x`)), ` x`, "expected ',' or '}'"},
		{"inside a block", string(request(userBlocks(`{"type":"text" "text":"a"}`))), ` "text":"a"}`, "expected ',' or '}'"},
		{"after the body", string(request(`[{"role":"user","content":"a"}]`)) + ` x`, ` x`, "unexpected data after the JSON value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off := strings.Index(tc.body, tc.at)
			if tc.at[0] == ' ' {
				off++
			}
			want := "invalid JSON: " + tc.reason + " at offset " + strconv.Itoa(off)
			if _, err := c.Count([]byte(tc.body)); err == nil || err.Error() != want || !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("Count(%s) = %v, want %q", tc.body, err, want)
			}
		})
	}
}

// TestCountRefusesNestingPastMaxDepth: one nesting limit for the whole module, in blocks counted afresh and in
// the cached ones alike.
func TestCountRefusesNestingPastMaxDepth(t *testing.T) {
	c := mustCounter(t, Options{CacheSize: 16})
	// The input of a tool_use block sits in 5 containers: the body, messages, the message, its content and
	// the block.
	input := func(levels int) string { return strings.Repeat("[", levels) + strings.Repeat("]", levels) }
	block := func(levels int) string {
		return `{"type":"tool_use","id":"t","name":"n","input":` + input(levels) + `}`
	}
	ok := request(userBlocks(block(rawjson.MaxDepth - 5)))
	for range 2 { // counted, then cached
		mustCount(t, c, ok)
	}
	deep := string(request(userBlocks(block(rawjson.MaxDepth - 4))))
	want := "invalid JSON: JSON nested too deeply at offset " + strconv.Itoa(strings.Index(deep, "[[")+rawjson.MaxDepth-5)
	if _, err := c.Count([]byte(deep)); err == nil || err.Error() != want {
		t.Fatalf("Count of %d levels = %v, want %q", rawjson.MaxDepth+1, err, want)
	}
	// A block cached where it nests less deeply (a system block sits in 2 containers) vouches for nothing
	// deeper.
	system := block(rawjson.MaxDepth - 4)
	mustCount(t, c, request(`[{"role":"user","content":"Hi"}]`, `"system":[`+system+`]`))
	if _, err := c.Count(request(userBlocks(system))); err == nil || !strings.Contains(err.Error(), "JSON nested too deeply") {
		t.Fatalf("Count of a cached block nested past MaxDepth = %v", err)
	}
	// Nor are blocks nested in a tool result spared.
	nested := string(request(`[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[` +
		block(rawjson.MaxDepth-6) + `]}]}]`))
	if _, err := c.Count([]byte(nested)); err == nil || !strings.Contains(err.Error(), "JSON nested too deeply") {
		t.Fatalf("Count of a tool result nested past MaxDepth = %v", err)
	}
}

// TestEscapedNamesReadAsTheySpell: keys and type names are compared by what they spell, as the API reads them.
func TestEscapedNamesReadAsTheySpell(t *testing.T) {
	c := mustCounter(t, Options{Calibration: 1})
	plain := mustCount(t, c, request(userBlocks(`{"type":"text","text":"hello world"}`)))
	escaped := mustCount(t, c, request(userBlocks(`{"typ\u0065":"t\u0065xt","t\u0065xt":"hello world"}`)))
	if want := oracle(t, "hello world") + requestOverhead + messageOverhead; plain != want || escaped != want {
		t.Fatalf("plain %d, escaped %d, want %d", plain, escaped, want)
	}
}

// FuzzCountNeverPanics feeds arbitrary bodies: a count or an error, never a panic; every body that is not JSON
// is a client error, and no body that is JSON is called a JSON error.
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
		valid := rawjson.Valid(b)
		if !valid && !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("Count(%q) on invalid JSON: %v, want an invalid request error", b, err)
		}
		if valid && err != nil && strings.HasPrefix(err.Error(), "invalid JSON") {
			t.Errorf("Count(%q) on valid JSON: %v", b, err)
		}
		if !json.Valid(b) && valid {
			t.Errorf("rawjson.Valid(%q) but not json.Valid", b)
		}
		if err != nil && !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("Count(%q): internal error %v", b, err)
		}
	})
}
