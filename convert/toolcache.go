package convert

import "github.com/claude-balancer/caddy-claude-balancer/internal/prefixcache"

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
	name, description, schema span
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
	all := true
	at := func(v []byte) span {
		s, ok := spanOf(raw, v)
		all = all && ok
		return s
	}
	k := &keptTools{tools: make([]toolSpan, len(tools)), validated: validated}
	for n, t := range tools {
		k.tools[n] = toolSpan{name: at(t.name), description: at(t.description), schema: at(t.schema),
			deferred: t.deferred, active: t.active}
	}
	if all {
		toolsKept.Keep("", raw, k)
	}
}

// appendTools appends the tools of k to dst, as slices of b, which starts
// with the bytes of the array they were read from.
func (k *keptTools) appendTools(dst []tool, b []byte) []tool {
	for _, t := range k.tools {
		dst = append(dst, tool{name: t.name.of(b), description: t.description.of(b), schema: t.schema.of(b),
			deferred: t.deferred, active: t.active})
	}
	return dst
}
