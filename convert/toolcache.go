package convert

import (
	"bytes"

	"github.com/claude-balancer/caddy-claude-balancer/internal/prefixcache"
)

// Claude Code sends the same "tools" with every request of a session, and
// they are most of its bytes (34 KB of a 52 KB request). The tools a request
// defines are therefore kept once read (internal/prefixcache): when a body's
// "tools" value starts with the exact bytes of an array read before, it is
// that array, defining the same tools at the same offsets from its start,
// and it is not read again. What is kept depends on the bytes alone.

// Bounds on the tools arrays kept.
const (
	toolsMin     = 1 << 10 // the smallest array worth keeping
	toolsEntries = 64
	toolsBytes   = 4 << 20
)

var toolsKept = prefixcache.New[*keptTools](toolsMin, toolsEntries, toolsBytes)

// keptTools are the tools read from an array, as spans of it.
type keptTools struct {
	tools []toolSpan
	// validated: the walk that read the array validated it; one that read
	// a body known valid (AppendValidRequest) did not, and what it kept
	// serves only such bodies.
	validated bool
}

// toolSpan is a tool whose name, description and schema are spans of the
// array it was read from.
type toolSpan struct {
	name, description, schema [2]int
	deferred, active          bool
}

// lookupTools returns the tools of the array b starts with, if one was
// kept, and the array's length; for a body being validated, only one that
// was validated when it was read.
func lookupTools(b []byte, validating bool) (*keptTools, int) {
	e := toolsKept.Lookup("", b, func(k *keptTools) bool { return k.validated || !validating })
	if e == nil {
		return nil, 0
	}
	return e.Value, e.Len()
}

// keepTools keeps body[i:end], a tools array, with the tools read from it,
// slices of body; validated tells whether the walk that read it validated
// it.
func keepTools(body []byte, i, end int, tools []tool, validated bool) {
	raw := body[i:end]
	if len(raw) < toolsMin {
		return
	}
	ok := true
	span := func(v []byte) [2]int {
		if v == nil {
			return [2]int{-1, -1}
		}
		// v is a slice of body: its capacity says where it starts.
		s := cap(body) - cap(v) - i
		if s < 0 || s+len(v) > len(raw) || !bytes.Equal(raw[s:s+len(v)], v) {
			ok = false
			return [2]int{}
		}
		return [2]int{s, s + len(v)}
	}
	k := &keptTools{tools: make([]toolSpan, len(tools)), validated: validated}
	for n, t := range tools {
		k.tools[n] = toolSpan{name: span(t.name), description: span(t.description), schema: span(t.schema),
			deferred: t.deferred, active: t.active}
	}
	if ok {
		toolsKept.Keep("", raw, k)
	}
}

// appendTools appends the tools of k to dst, as slices of b, which starts
// with the bytes of the array they were read from.
func (k *keptTools) appendTools(dst []tool, b []byte) []tool {
	get := func(s [2]int) []byte {
		if s[0] < 0 {
			return nil
		}
		return b[s[0]:s[1]:s[1]]
	}
	for _, t := range k.tools {
		dst = append(dst, tool{name: get(t.name), description: get(t.description), schema: get(t.schema),
			deferred: t.deferred, active: t.active})
	}
	return dst
}
