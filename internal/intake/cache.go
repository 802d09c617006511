package intake

import (
	"sync/atomic"

	"github.com/claude-balancer/caddy-claude-balancer/internal/prefixcache"
	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// Claude Code sends the same "tools" and "system" with every request of a
// session, and they are most of its bytes. The walk therefore keeps the
// large objects and arrays it met as top-level values (internal/prefixcache):
// when a body's value starts with the exact bytes of one it validated before,
// that value is the same value, valid at the same depth, and it is not walked
// again. For a signature, its canonical text (see walk.go), which depends on
// its bytes alone, is kept with it. A value is kept under its owner
// (Options.Owner): a client only ever meets what it sent itself.

// knownMin is the smallest value, as written, worth keeping.
const knownMin = 1 << 10

// Bounds on what the cache keeps.
const (
	knownEntries = 256
	knownBytes   = 8 << 20
)

// knownValue is what the walk learned from a value it kept.
type knownValue struct {
	// canon is what a signature's walk wrote for the value, once one did.
	canon atomic.Pointer[canonText]
}

type canonText struct {
	// text is what the walk wrote (for a large value, its hash mark and
	// hash).
	text string
	// foreign records that the value held a thinking signature of this
	// module's.
	foreign bool
}

var known = prefixcache.New[*knownValue](knownMin, knownEntries, knownBytes)

// topValue walks the top-level object or array at src[i] that is not
// "messages", and returns where it ends: a value kept from an earlier walk
// is not walked again.
func (w *walker) topValue(i int) (int, error) {
	// Canonical texts are kept as signatures write them (inlineMax).
	full := w.inline == inlineMax
	e := known.Lookup(w.owner, w.src[i:], nil)
	if e != nil {
		if !w.canon {
			return i + e.Len(), nil
		}
		if c := e.Value.canon.Load(); c != nil && full {
			w.out = append(w.out, c.text...)
			w.foreign = w.foreign || c.foreign
			return i + e.Len(), nil
		}
	}
	var end int
	var c *canonText
	if w.canon {
		var err error
		if end, c, err = w.canonValue(i); err != nil {
			return 0, err
		}
	} else {
		var err error
		if end, err = rawjson.CheckValue(w.src, i, w.depth); err != nil {
			return 0, grammarError(err)
		}
	}
	if e == nil && end-i >= knownMin {
		e = known.Keep(w.owner, w.src[i:end], &knownValue{})
	}
	if e != nil && c != nil && full {
		// A second walk of the same bytes writes the same text.
		e.Value.canon.Store(c)
	}
	return end, nil
}

// canonValue walks the value at src[i] for a signature and, for a value
// worth keeping, returns what it wrote.
func (w *walker) canonValue(i int) (int, *canonText, error) {
	start, foreign := len(w.out), w.foreign
	w.foreign = false
	end, err := w.value(i)
	if err != nil {
		return 0, nil, err
	}
	var c *canonText
	if end-i >= knownMin {
		c = &canonText{text: string(w.out[start:]), foreign: w.foreign}
	}
	w.foreign = w.foreign || foreign
	return end, c, nil
}
