package intake

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/zeebo/xxh3"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// signatureVersion starts every hashed document, so that a change to the
// canonical form can never make old and new signatures collide.
const signatureVersion = "claude_balancer/dedup/v2\n"

// foreignSignature starts the signatures of thinking blocks this module made
// (convert.OwnSignaturePrefix), as a JSON string value starts.
var foreignSignature = []byte(`"claude-balancer:v1:`)

// The canonical form, and what is hashed of it.
//
// A value's canonical text is its JSON without insignificant white space,
// object members sorted by key at every level, strings and numbers as
// written. Hashing that text as one stream would copy it, and copy it again
// at every level whose members need reordering. Instead, a value whose
// canonical text is longer than inlineMax bytes stands in its parent's text
// as hashMark followed by the 16 bytes of its hash: long strings are hashed
// where they lie in the body, and an object or array is hashed as soon as it
// is complete. What is hashed is then a tree of small texts, each read once.
//
// The encoding stays one-to-one: hashMark can start no JSON value, a hash
// has a fixed length, and whether a value is replaced depends only on its
// own canonical text. Two documents sign alike exactly when their canonical
// texts are equal, but for a collision of the hash.
const (
	inlineMax = 64
	hashMark  = 0x01
	hashLen   = 1 + 16
)

// seed keys the hash for this process: signatures are never kept or
// compared across processes, and unknown seeds leave no fixed collisions to
// aim at.
var seed = func() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}()

// hash is the 128-bit hash of one text.
func hash(b []byte) [16]byte {
	h := xxh3.Hash128Seed(b, seed)
	var s [16]byte
	binary.LittleEndian.PutUint64(s[:8], h.Lo)
	binary.LittleEndian.PutUint64(s[8:], h.Hi)
	return s
}

var walkers = sync.Pool{New: func() any { return new(walker) }}

// walker validates a body in one pass over its bytes and, for a signature,
// writes the canonical form into out as it goes (see inlineMax). Objects are
// written member by member; when an object's keys turn out not to be in
// order, its members (each already canonical) are reordered in place.
type walker struct {
	src   []byte
	pos   int
	canon bool
	// inline is the longest canonical text written out in full: inlineMax,
	// or all of them for the canonical text itself (in tests).
	inline int
	out    []byte
	tmp    []byte
	spans  []span
	top    []span
	// topPlain is set when every top-level key is valid UTF-8.
	topPlain bool
	depth    int
	ignore   []string

	p                               Peek
	seenModel, seenStream, seenMeta bool
	foreign                         bool
}

// span locates one object member in out: the quoted key is out[start:keyEnd],
// the whole member out[start:end]. pre holds the key's first bytes, for
// ordering keys without reading them (see keyPrefix).
type span struct {
	start, keyEnd, end int
	pre                uint64
}

// keyPrefix returns the first eight bytes after the opening quote of the
// quoted key q, big-endian, with zeros past the closing quote. Compared as
// numbers, prefixes order keys as their bytes do; when two are equal and the
// keys are no longer than the prefix, the keys are equal. A quote only ends
// a key, and zeros pad only after it.
func keyPrefix(q []byte) uint64 {
	if len(q) >= 9 {
		return binary.BigEndian.Uint64(q[1:])
	}
	var x uint64
	for _, c := range q[1:] {
		x = x<<8 | uint64(c)
	}
	return x << (8 * (9 - len(q)))
}

func (w *walker) reset(src []byte, opt Options) {
	w.src, w.pos, w.depth, w.ignore, w.canon, w.inline = src, 0, 0, opt.Ignore, opt.Sign, inlineMax
	w.out, w.tmp, w.spans, w.top, w.topPlain = w.out[:0], w.tmp[:0], w.spans[:0], w.top[:0], true
	w.p, w.seenModel, w.seenStream, w.seenMeta, w.foreign = Peek{}, false, false, false, false
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
		if v := w.src[w.pos:end]; len(v) > w.inline {
			w.appendHash(v)
		} else {
			w.out = append(w.out, v...)
		}
	}
	w.pos = end
	return nil
}

// appendHash writes a long value as its hash.
func (w *walker) appendHash(v []byte) {
	s := hash(v)
	w.out = append(w.out, hashMark)
	w.out = append(w.out, s[:]...)
}

// fold replaces the canonical text of the value written from out[start] by
// its hash when it is long.
func (w *walker) fold(start int) {
	if len(w.out)-start <= w.inline {
		return
	}
	s := hash(w.out[start:])
	w.out = append(w.out[:start], hashMark)
	w.out = append(w.out, s[:]...)
}

func (w *walker) array() error {
	if w.depth >= rawjson.MaxDepth {
		return errorf("request body is nested too deeply")
	}
	w.depth++
	w.pos++
	open := len(w.out)
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
			w.depth--
			if w.canon {
				w.out = append(w.out, ']')
				w.fold(open)
			}
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
		ke, ascii, err := rawjson.CheckKey(w.src, ks)
		if err != nil {
			return grammarError(err)
		}
		w.pos = ke
		inner := w.src[ks+1 : ke-1]
		escaped := !ascii && rawjson.HasBackslash(inner)
		start := len(w.out)
		if w.canon {
			if escaped {
				// One spelling per key, so that keys are ordered by what
				// they mean ("syst\u0065m" is "system").
				w.out = append(w.out, canonicalKey(w.src[ks:ke])...)
			} else {
				w.out = append(w.out, w.src[ks:ke]...)
			}
			if !ascii && plain && !utf8.Valid(w.out[start:]) {
				plain = false
			}
		}
		keyEnd := len(w.out)
		var pre uint64
		if w.canon {
			if !escaped && ks+9 <= len(w.src) {
				// The key as written, and what follows it masked off.
				pre = binary.BigEndian.Uint64(w.src[ks+1:])
				if n := ke - ks - 1; n < 8 {
					pre &^= ^uint64(0) >> (8 * n)
				}
			} else {
				pre = keyPrefix(w.out[start:keyEnd])
			}
		}
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
				w.spans = append(w.spans, span{start, keyEnd, len(w.out), pre})
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
	w.spans = w.spans[:first]
	if top {
		// The signature writes the top level in order itself.
		w.top = append(w.top[:0], members...)
		w.topPlain = plain
		return nil
	}
	if len(members) == 0 {
		w.out = append(w.out[:open+1], '}')
		return nil
	}
	if !sorted(w.out, members, plain) {
		w.reorder(open, members, plain)
		return nil
	}
	// Every member is followed by a comma; the last one becomes the brace.
	w.out[len(w.out)-1] = '}'
	w.fold(open)
	return nil
}

// sorted reports whether members are in key order.
func sorted(out []byte, members []span, plain bool) bool {
	for i := 1; i < len(members); i++ {
		if a, b := &members[i-1], &members[i]; !plain || a.pre >= b.pre {
			if compare(out, a, b, plain) > 0 {
				return false
			}
		}
	}
	return true
}

// compare orders two members by key, in the order keyOrder gives.
func compare(out []byte, a, b *span, plain bool) int {
	if plain {
		if a.pre != b.pre {
			if a.pre < b.pre {
				return -1
			}
			return 1
		}
		if a.keyEnd-a.start <= 9 {
			return 0
		}
	}
	return keyOrder(plain)(out[a.start:a.keyEnd], out[b.start:b.keyEnd])
}

// reorder writes the object whose members were written after out[open],
// with its members sorted by key (in the order compare gives: any fixed
// order serves, as long as it is the same for every request), in place of
// what was written, or its hash when it is long.
func (w *walker) reorder(open int, members []span, plain bool) {
	sortMembers(w.out, members, plain)
	end := len(w.out)
	w.out = append(w.out, '{')
	for _, m := range members {
		w.out = append(w.out, w.out[m.start:m.end]...)
		w.out = append(w.out, ',')
	}
	w.out[len(w.out)-1] = '}'
	text := w.out[end:]
	if len(text) > w.inline {
		s := hash(text)
		w.out = append(w.out[:open], hashMark)
		w.out = append(w.out, s[:]...)
		return
	}
	w.out = w.out[:open+copy(w.out[open:], text)]
}

// sortMembers sorts members by key; members with equal keys keep their
// order.
func sortMembers(out []byte, members []span, plain bool) {
	if len(members) > 12 {
		slices.SortStableFunc(members, func(a, b span) int { return compare(out, &a, &b, plain) })
		return
	}
	for i := 1; i < len(members); i++ {
		m := members[i]
		j := i
		for ; j > 0; j-- {
			p := &members[j-1]
			if plain && p.pre < m.pre || (!plain || p.pre == m.pre) && compare(out, p, &m, plain) <= 0 {
				break
			}
			members[j] = *p
		}
		members[j] = m
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

// sign makes the key of the walked body: the hash of its canonical form,
// with the client's identity and beta flags as they are.
func (w *walker) sign(identity, beta string) Key {
	w.tmp = append(w.tmp[:0], signatureVersion...)
	w.tmp = w.appendTop(w.tmp)
	return Key{sum: hash(w.tmp), identity: identity, beta: normalizeBeta(beta)}
}

// appendTop appends the canonical document: its top-level members in key
// order, straight from where they were written.
func (w *walker) appendTop(dst []byte) []byte {
	sortMembers(w.out, w.top, w.topPlain)
	dst = append(dst, '{')
	for i, m := range w.top {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, w.out[m.start:m.end]...)
	}
	return append(dst, '}')
}

// normalizeBeta returns the header's flags sorted and joined with commas.
func normalizeBeta(beta string) string {
	if beta == "" || normalBeta(beta) {
		return beta
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

// normalBeta reports whether beta is already what normalizeBeta makes of it,
// as a client that sends its flags in one header, in order, writes it.
func normalBeta(beta string) bool {
	prev := ""
	for f := range strings.SplitSeq(beta, ",") {
		if f == "" || f <= prev || strings.TrimSpace(f) != f {
			return false
		}
		prev = f
	}
	return true
}
