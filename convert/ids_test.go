package convert

import (
	"strings"
	"testing"
)

func TestRandomIDsHaveTheAPIShapeAndDoNotRepeat(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := randomID("msg_")
		if len(id) != 28 || !strings.HasPrefix(id, "msg_") || !toolIDRe.MatchString(id) || seen[id] {
			t.Fatalf("id %q", id)
		}
		seen[id] = true
	}
}

func TestToolIDAssignment(t *testing.T) {
	var ids toolIDs
	for _, c := range []struct {
		upstream string
		kept     bool
	}{
		{"call_Qm3xN8vR2tY6wZ1aB4cD7eF0", true},
		{"toolu_01A7bQm4cN8xR2sT5vW9yZ3d", true},
		{"call_Qm3xN8vR2tY6wZ1aB4cD7eF0", false}, // repeated in one reply
		{"functions.Bash:0", false},
		{"call_0", false},
		{"D681PevKs", false},
		{"", false},
	} {
		got := ids.assign([]byte(c.upstream))
		if !toolIDRe.MatchString(got) {
			t.Fatalf("%q -> %q: not an id Anthropic accepts", c.upstream, got)
		}
		if (got == c.upstream) != c.kept {
			t.Fatalf("%q -> %q", c.upstream, got)
		}
		orig, wrapped := unwrapToolID([]byte(got))
		switch {
		case c.upstream == "" && (wrapped || !strings.HasPrefix(got, "toolu_")):
			t.Fatalf("missing id -> %q", got)
		case c.upstream != "" && !c.kept && (!wrapped || string(orig) != c.upstream):
			t.Fatalf("%q -> %q does not unwrap (%q)", c.upstream, got, orig)
		}
	}
	for _, id := range []string{"toolu_01A7bQm4cN8xR2sT5vW9yZ3d", "toolu_oai_", "toolu_oai_abcdef", "toolu_oai_abcdefX!!!"} {
		if _, ok := unwrapToolID([]byte(id)); ok {
			t.Fatalf("%q unwrapped", id)
		}
	}
}
