package intake

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/zeebo/blake3"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// signatureVersion starts every hashed input, so that a change to the
// canonical form can never make old and new signatures collide.
const signatureVersion = "claude_balancer/dedup/v1\n"

// foreignSignature starts the signatures of thinking blocks this module made
// (convert.OwnSignaturePrefix), as a JSON string value starts.
var foreignSignature = []byte(`"claude-balancer:v1:`)

var walkers = sync.Pool{New: func() any { return new(walker) }}

// walker validates a body in one pass over its bytes and, for a signature,
// writes its canonical form into out as it goes: object members sorted by key
// at every level, insignificant white space removed, strings and numbers kept
// as written. Objects are written member by member; when an object's keys turn
// out not to be in order, its members (each already canonical) are reordered
// in place.
type walker struct {
	src   []byte
	pos   int
	canon bool
	out   []byte
	tmp   []byte
	spans []span
	top   []span
	// topPlain is set when every top-level key is valid UTF-8.
	topPlain bool
	depth    int
	ignore   []string
	hasher   *blake3.Hasher

	p                               Peek
	seenModel, seenStream, seenMeta bool
	foreign                         bool
}

// span locates one object member in out: the quoted key is out[start:keyEnd],
// the whole member out[start:end].
type span struct{ start, keyEnd, end int }

func (w *walker) reset(src []byte, opt Options) {
	w.src, w.pos, w.depth, w.ignore, w.canon = src, 0, 0, opt.Ignore, opt.Sign
	w.out, w.tmp, w.spans, w.top, w.topPlain = w.out[:0], w.tmp[:0], w.spans[:0], w.top[:0], true
	w.p, w.seenModel, w.seenStream, w.seenMeta, w.foreign = Peek{}, false, false, false, false
	if w.canon && cap(w.out) < len(src) {
		w.out = make([]byte, 0, len(src))
	}
}

// release returns w to the pool unless it grew so large that keeping it would
// pin memory a rare huge body needed once. No bytes of one request stay
// reachable from the pool.
func (w *walker) release() {
	w.src, w.ignore = nil, nil
	if cap(w.out) > 8<<20 || cap(w.tmp) > 8<<20 {
		return
	}
	walkers.Put(w)
}

func (w *walker) syntax(reason string) error {
	return grammarError(&rawjson.SyntaxError{Offset: w.pos, Reason: reason})
}

func (w *walker) document() error {
	w.skipSpace()
	if w.pos >= len(w.src) || w.src[w.pos] != '{' {
		return errorf("request body must be a JSON object")
	}
	if err := w.object(true); err != nil {
		return err
	}
	w.skipSpace()
	if w.pos != len(w.src) {
		return w.syntax("unexpected data after the JSON object")
	}
	return nil
}

func (w *walker) skipSpace() { w.pos = rawjson.SkipSpace(w.src, w.pos) }

func (w *walker) value() error {
	w.skipSpace()
	if w.pos >= len(w.src) {
		return w.syntax("unexpected end of JSON input")
	}
	switch ch := w.src[w.pos]; {
	case ch == '{':
		return w.object(false)
	case ch == '[':
		return w.array()
	}
	// Strings, numbers and literals: the grammar's own checks.
	end, err := rawjson.CheckValue(w.src, w.pos, w.depth)
	if err != nil {
		return grammarError(err)
	}
	if w.canon {
		w.out = append(w.out, w.src[w.pos:end]...)
	}
	w.pos = end
	return nil
}

func (w *walker) array() error {
	if w.depth >= rawjson.MaxDepth {
		return errorf("request body is nested too deeply")
	}
	w.depth++
	w.pos++
	if w.canon {
		w.out = append(w.out, '[')
	}
	w.skipSpace()
	if w.pos < len(w.src) && w.src[w.pos] == ']' {
		w.pos++
		if w.canon {
			w.out = append(w.out, ']')
		}
		w.depth--
		return nil
	}
	for {
		if err := w.value(); err != nil {
			return err
		}
		w.skipSpace()
		if w.pos >= len(w.src) {
			return w.syntax("unexpected end of JSON input")
		}
		switch w.src[w.pos] {
		case ',':
			w.pos++
			if w.canon {
				w.out = append(w.out, ',')
			}
		case ']':
			w.pos++
			if w.canon {
				w.out = append(w.out, ']')
			}
			w.depth--
			return nil
		default:
			return w.syntax("expected ',' or ']'")
		}
	}
}

func (w *walker) object(top bool) error {
	if w.depth >= rawjson.MaxDepth {
		return errorf("request body is nested too deeply")
	}
	w.depth++
	w.pos++
	open := len(w.out)
	if w.canon {
		w.out = append(w.out, '{')
	}
	first := len(w.spans)
	plain := true
	w.skipSpace()
	if w.pos < len(w.src) && w.src[w.pos] == '}' {
		w.pos++
		if w.canon {
			w.out = append(w.out, '}')
		}
		w.depth--
		return nil
	}
	for {
		w.skipSpace()
		if w.pos >= len(w.src) || w.src[w.pos] != '"' {
			return w.syntax("expected a string key")
		}
		ks := w.pos
		ke, err := rawjson.CheckString(w.src, ks)
		if err != nil {
			return grammarError(err)
		}
		w.pos = ke
		inner := w.src[ks+1 : ke-1]
		escaped := rawjson.HasBackslash(inner)
		start := len(w.out)
		if w.canon {
			if escaped {
				// One spelling per key, so that keys are ordered by what
				// they mean ("syst\u0065m" is "system").
				w.out = append(w.out, canonicalKey(w.src[ks:ke])...)
			} else {
				w.out = append(w.out, w.src[ks:ke]...)
			}
			if plain && !utf8.Valid(w.out[start:]) {
				plain = false
			}
		}
		keyEnd := len(w.out)
		w.skipSpace()
		if w.pos >= len(w.src) || w.src[w.pos] != ':' {
			return w.syntax("expected ':'")
		}
		w.pos++
		if w.canon {
			w.out = append(w.out, ':')
		}
		w.skipSpace()
		valueStart := w.pos
		var spelled []byte
		if top || len(inner) >= len("signature") {
			spelled = inner
			if escaped {
				spelled = rawjson.AppendUnescaped(nil, inner)
			}
		}
		if top && !w.canon && string(spelled) != "messages" {
			// Outside the conversation nothing needs a closer look: the
			// grammar's own walk validates it.
			end, err := rawjson.CheckValue(w.src, w.pos, w.depth)
			if err != nil {
				return grammarError(err)
			}
			w.pos = end
		} else if err := w.value(); err != nil {
			return err
		}
		if !top && string(spelled) == "signature" && bytes.HasPrefix(w.src[valueStart:w.pos], foreignSignature) {
			w.foreign = true
		}
		if top {
			if err := w.field(spelled, valueStart, w.pos); err != nil {
				return err
			}
		}
		if w.canon {
			if top && w.ignored(spelled) {
				w.out = w.out[:start]
			} else {
				w.spans = append(w.spans, span{start, keyEnd, len(w.out)})
				w.out = append(w.out, ',')
			}
		}
		w.skipSpace()
		if w.pos >= len(w.src) {
			return w.syntax("unexpected end of JSON input")
		}
		if w.src[w.pos] == '}' {
			w.pos++
			break
		}
		if w.src[w.pos] != ',' {
			return w.syntax("expected ',' or '}'")
		}
		w.pos++
	}
	w.depth--
	if !w.canon {
		return nil
	}
	members := w.spans[first:]
	defer func() { w.spans = w.spans[:first] }()
	if top {
		// The signature hashes the top level in order itself.
		w.top = append(w.top[:0], members...)
		w.topPlain = plain
		return nil
	}
	if len(members) == 0 {
		w.out = append(w.out[:open+1], '}')
		return nil
	}
	cmp := keyOrder(plain)
	if !w.sorted(members, cmp) {
		w.reorder(open, members, cmp)
	}
	// Every member is followed by a comma; the last one becomes the brace.
	w.out[len(w.out)-1] = '}'
	return nil
}

func (w *walker) sorted(members []span, cmp func(a, b []byte) int) bool {
	for i := 1; i < len(members); i++ {
		if cmp(w.out[members[i-1].start:members[i-1].keyEnd], w.out[members[i].start:members[i].keyEnd]) > 0 {
			return false
		}
	}
	return true
}

// reorder rewrites the members written after out[open] sorted by key, in the
// order cmp gives (see keyOrder): any fixed order serves, as long as it is the
// same for every request.
func (w *walker) reorder(open int, members []span, cmp func(a, b []byte) int) {
	base := open + 1
	w.tmp = append(w.tmp[:0], w.out[base:]...)
	slices.SortStableFunc(members, func(a, b span) int {
		return cmp(w.tmp[a.start-base:a.keyEnd-base], w.tmp[b.start-base:b.keyEnd-base])
	})
	w.out = w.out[:base]
	for _, m := range members {
		w.out = append(w.out, w.tmp[m.start-base:m.end-base]...)
		w.out = append(w.out, ',')
	}
}

// keyOrder returns the order of an object's quoted keys (escapes already
// resolved): by their bytes when all of them are valid UTF-8 (plain), else by
// what they decode to. Keys are kept as written, but a key holding invalid
// UTF-8 decodes with U+FFFD in place of each bad byte, so "\x88" and "\xe4"
// name the same member: ordered as equals, the stable sort keeps them in
// their order and a later duplicate still wins, as it did in the request.
func keyOrder(plain bool) func(a, b []byte) int {
	if plain {
		return bytes.Compare
	}
	return func(a, b []byte) int { return bytes.Compare(decodedKey(a), decodedKey(b)) }
}

func decodedKey(quoted []byte) []byte {
	if utf8.Valid(quoted) {
		return quoted
	}
	return canonicalKey(quoted)
}

// canonicalKey returns a quoted key with its escapes resolved, written the
// way encoding/json writes strings (without HTML escaping).
func canonicalKey(quoted []byte) []byte {
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return quoted
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// ignored reports whether a top-level key (as spelled) is left out of the
// signature.
func (w *walker) ignored(key []byte) bool {
	if string(key) == "stream" {
		return true
	}
	for _, name := range w.ignore {
		if string(key) == name {
			return true
		}
	}
	return false
}

// sign hashes the canonical body with the client's identity and beta flags.
func (w *walker) sign(identity, beta string) Key {
	h := w.hasher
	if h == nil {
		h = blake3.New()
		w.hasher = h
	}
	h.Reset()
	var n [binary.MaxVarintLen64]byte
	h.Write([]byte(signatureVersion))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(identity)))])
	h.Write([]byte(identity))
	beta = normalizeBeta(beta)
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(beta)))])
	h.Write([]byte(beta))
	w.writeTop(h)
	var k Key
	h.Sum(k[:0])
	return k
}

// writeTop writes the canonical document: its top-level members in key
// order, straight from where they were written, sparing the copy a reorder
// would make of the request's largest values.
func (w *walker) writeTop(dst io.Writer) {
	cmp := keyOrder(w.topPlain)
	slices.SortStableFunc(w.top, func(a, b span) int {
		return cmp(w.out[a.start:a.keyEnd], w.out[b.start:b.keyEnd])
	})
	dst.Write([]byte{'{'})
	for i, m := range w.top {
		if i > 0 {
			dst.Write([]byte{','})
		}
		dst.Write(w.out[m.start:m.end])
	}
	dst.Write([]byte{'}'})
}

// normalizeBeta returns the header's flags sorted and joined with commas.
func normalizeBeta(beta string) string {
	if beta == "" {
		return ""
	}
	flags := strings.Split(beta, ",")
	n := 0
	for _, f := range flags {
		if f = strings.TrimSpace(f); f != "" {
			flags[n] = f
			n++
		}
	}
	flags = flags[:n]
	slices.Sort(flags)
	return strings.Join(slices.Compact(flags), ",")
}
