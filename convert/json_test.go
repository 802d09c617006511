package convert

import (
	"strings"
	"testing"
)

// The grammar and its walks are tested in internal/rawjson; these tests hold
// the converters' spellings of them to what the converters rely on.

func TestVObjectGivesKeysBetweenQuotes(t *testing.T) {
	body := []byte(` { "a" : 1 , "b\u0063" : [ {"x":true} , 2 ] } `)
	o, ok := newVObject(body, skipSpace(body, 0), 0)
	if !ok {
		t.Fatal("no object")
	}
	var keys, vals []string
	for {
		k, more, err := o.key()
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
		keys = append(keys, string(k))
		if !keyIs(k, "bc") {
			v, err := o.value()
			if err != nil {
				t.Fatal(err)
			}
			vals = append(vals, string(v))
			continue
		}
		// A walk of the caller's own, handed back with setEnd.
		a, ok := newVArray(body, o.at(), 1)
		if !ok {
			t.Fatalf("no array at %d", o.at())
		}
		for {
			start, more, err := a.elem()
			if err != nil {
				t.Fatal(err)
			}
			if !more {
				break
			}
			if _, isObj := newVObject(body, start, 2); isObj {
				vals = append(vals, "{")
			}
			v, err := a.value()
			if err != nil {
				t.Fatal(err)
			}
			vals = append(vals, string(v))
		}
		o.setEnd(a.at())
	}
	if strings.Join(keys, ",") != `a,b\u0063` || strings.Join(vals, " ") != `1 { {"x":true} 2` {
		t.Fatalf("keys %q vals %q", keys, vals)
	}
	if skipSpace(body, o.at()) != len(body) {
		t.Fatalf("walk ends at %d of %d", o.at(), len(body))
	}
	if _, ok := newVObject([]byte(`{}`), 0, maxDepth); ok {
		t.Fatal("an object past maxDepth was walked")
	}
	if _, ok := newVArray([]byte(`{}`), 0, 0); ok {
		t.Fatal("an object was walked as an array")
	}
	bad, _ := newVObject([]byte(`{"a":1,}`), 0, 0)
	if _, _, err := bad.key(); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.value(); err != nil {
		t.Fatal(err)
	}
	if _, more, err := bad.key(); err == nil || more {
		t.Fatalf("trailing comma: more %v, err %v", more, err)
	}
}

// TestFieldTakesTheLastOfDuplicateKeys: a member read by name is the one the
// whole-request walk keeps, and the one encoding/json keeps.
func TestFieldTakesTheLastOfDuplicateKeys(t *testing.T) {
	if got := field([]byte(`{"type":"text","typ\u0065":"image"}`), "type"); string(got) != `"image"` {
		t.Fatalf("field = %s", got)
	}
	body := `{"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"first","user_id":"last"}}`
	out, err := Request([]byte(body), "m", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"user":"last"`) {
		t.Fatalf("user of duplicate user_id keys: %s", out)
	}
}

func TestValidJSONRefusesNestingPastMaxDepth(t *testing.T) {
	ok := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	if !validJSON([]byte(ok)) || validJSON([]byte("["+ok+"]")) {
		t.Fatalf("maxDepth %d: the limit is not where it should be", maxDepth)
	}
	deep := `{"messages":[{"role":"user","content":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}]}`
	if _, err := Request([]byte(deep), "m", Options{}); err == nil {
		t.Fatal("a request nested past maxDepth was converted")
	}
}
