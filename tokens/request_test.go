package tokens

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestMarkerCutMatchesLastIndex: markerCut finds the last marker of its
// window, as a backward search does, wherever and however often it occurs.
func TestMarkerCutMatchesLastIndex(t *testing.T) {
	reference := func(raw []byte) int {
		start := max(0, len(raw)-96)
		k := bytes.LastIndex(raw[start:], []byte(markerPrefix))
		if k < 0 {
			return len(raw)
		}
		k += start
		if k < 2 {
			return len(raw)
		}
		rest := raw[k+len(markerPrefix):]
		if len(rest) < 2 || string(rest[len(rest)-2:]) != "}}" || bytes.ContainsAny(rest[:len(rest)-2], "{}[]\\") {
			return len(raw)
		}
		return k
	}
	marker := `,"cache_control":{"type":"ephemeral"}}`
	cases := []string{
		`{"type":"text","text":"hi"` + marker,
		`{"type":"text","text":"` + strings.Repeat("x", 200) + `"` + marker,
		`{"a":1` + strings.TrimSuffix(marker, "}") + `,"b":2}` + marker[:len(marker)-1] + `}`,
		`{"a":"` + markerPrefix + `"` + marker,
		markerPrefix + markerPrefix + `"type":"ephemeral"}}`,
		`{"type":"text","text":"hi"}`,
		`{` + marker[1:],
		``,
	}
	rng := rand.New(rand.NewPCG(3, 4))
	parts := []string{markerPrefix, `"type":"ephemeral"`, `}`, `}}`, `"x"`, `,`, `{`, `[`, `\`, `ab`}
	for range 3000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		if got, want := markerCut([]byte(c)), reference([]byte(c)); got != want {
			t.Fatalf("markerCut(%q) = %d, want %d", c, got, want)
		}
	}
}
