package intake

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	inlineMax = 512
	hashMark  = 0x01
)

// msb marks the high bit of each byte of a word.
const msb = 0x8080808080808080

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
// order, its members (each already canonical) are written again after it in
// order, and moved back or hashed from there.
type walker struct {
	src   []byte
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
	// owner is who sent the body (Options.Owner).
	owner string

	p                               Peek
	seenModel, seenStream, seenMeta bool
	foreign                         bool
	// inMessages is set while the walk is inside the top-level "messages".
	inMessages bool
	systemMsg  bool
	// digesting asks for the digest of a Pre (see Prepare), gathered in
	// digest; digestMessages is set while the walk is inside a "messages"
	// that the signature does not ignore.
	digesting, digestMessages bool
	digest                    uint64
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
	w.src, w.depth, w.ignore, w.canon, w.inline = src, 0, opt.Ignore, opt.Sign, inlineMax
	w.owner = opt.Owner
	w.out, w.tmp, w.spans, w.top, w.topPlain = w.out[:0], w.tmp[:0], w.spans[:0], w.top[:0], true
	w.p, w.seenModel, w.seenStream, w.seenMeta, w.foreign, w.inMessages, w.systemMsg = Peek{}, false, false, false, false, false, false
	w.digesting, w.digestMessages, w.digest = false, false, 0
	if w.canon && cap(w.out) < 4096 {
		// Room for the words short keys and values are copied with.
		w.out = make([]byte, 0, 4096)
	}
}

// release returns w to the pool unless it grew so large that keeping it would
// pin memory a rare huge body needed once. The walker lets go of the body; its
// buffers are written afresh by each request before they are read.
func (w *walker) release() {
	w.src, w.ignore, w.owner = nil, nil, ""
	if cap(w.out) > 8<<20 || cap(w.tmp) > 8<<20 {
		return
	}
	walkers.Put(w)
}

func (w *walker) syntax(at int, reason string) error {
	return grammarError(&rawjson.SyntaxError{Offset: at, Reason: reason})
}

func (w *walker) document() error {
	src := w.src
	i := rawjson.SkipSpace(src, 0)
	if i >= len(src) || src[i] != '{' {
		return errorf("request body must be a JSON object")
	}
	i, err := w.object(i, true)
	if err != nil {
		return err
	}
	if i = rawjson.SkipSpace(src, i); i != len(src) {
		return w.syntax(i, "unexpected data after the JSON object")
	}
	return nil
}

// value walks the value at or after src[i] (white space first) and returns
// where it ends.
func (w *walker) value(i int) (int, error) {
	src := w.src
	i = rawjson.SkipSpace(src, i)
	if i >= len(src) {
		return 0, w.syntax(i, "unexpected end of JSON input")
	}
	switch src[i] {
	case '{':
		return w.object(i, false)
	case '[':
		return w.array(i)
	case '"':
		if w.canon {
			return w.str(i)
		}
	}
	// Strings, numbers and literals: the grammar's own checks.
	end, err := rawjson.CheckValue(src, i, w.depth)
	if err != nil {
		return 0, grammarError(err)
	}
	if w.digestMessages {
		w.digestValue(src[i:end])
	}
	if w.canon {
		if end-i > w.inline {
			w.appendHash(src[i:end])
		} else {
			w.appendValue(i, end)
		}
	}
	return end, nil
}

// str reads and writes the string at src[i], and returns where it ends. A
// short string (at most 15 bytes) is checked and copied in two words; the
// rest of a longer one is left to the grammar.
func (w *walker) str(i int) (int, error) {
	src, start := w.src, len(w.out)
	from := i + 1
	if i+17 <= len(src) && start+17 <= cap(w.out) {
		k := (*[17]byte)(src[i : i+17])
		// The first byte a string scan stops at must be the closing quote.
		n := -1
		if m := rawjson.Stops(binary.LittleEndian.Uint64(k[1:9])); m != 0 {
			n = bits.TrailingZeros64(m) >> 3
		} else if m = rawjson.Stops(binary.LittleEndian.Uint64(k[9:17])); m != 0 {
			n = 8 + bits.TrailingZeros64(m)>>3
		} else {
			from = i + 17
		}
		if n >= 0 && k[1+n] == '"' && n+2 <= w.inline {
			*(*[17]byte)(w.out[start : start+17]) = *k
			w.out = w.out[:start+n+2]
			if w.digestMessages {
				w.digestValue(src[i : i+n+2])
			}
			return i + n + 2, nil
		}
	}
	end, err := rawjson.CheckStringFrom(src, i, from)
	if err != nil {
		return 0, grammarError(err)
	}
	if w.digestMessages {
		w.digestValue(src[i:end])
	}
	if end-i > w.inline {
		w.appendHash(src[i:end])
	} else {
		w.appendValue(i, end)
	}
	return end, nil
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

// array walks the array at src[i] and returns where it ends.
func (w *walker) array(i int) (int, error) {
	if w.depth >= rawjson.MaxDepth {
		return 0, errorf("request body is nested too deeply")
	}
	src, canon := w.src, w.canon
	w.depth++
	open := len(w.out)
	if canon {
		w.out = append(w.out, '[')
	}
	if i = rawjson.SkipSpace(src, i+1); i < len(src) && src[i] == ']' {
		if canon {
			w.out = append(w.out, ']')
		}
		w.depth--
		return i + 1, nil
	}
	for {
		var err error
		if i, err = w.value(i); err != nil {
			return 0, err
		}
		if i = rawjson.SkipSpace(src, i); i >= len(src) {
			return 0, w.syntax(i, "unexpected end of JSON input")
		}
		switch src[i] {
		case ',':
			i++
			if canon {
				w.out = append(w.out, ',')
			}
		case ']':
			w.depth--
			if canon {
				w.out = append(w.out, ']')
				w.fold(open)
			}
			return i + 1, nil
		default:
			return 0, w.syntax(i, "expected ',' or ']'")
		}
	}
}

// object walks the object at src[i] and returns where it ends.
func (w *walker) object(i int, top bool) (int, error) {
	if w.depth >= rawjson.MaxDepth {
		return 0, errorf("request body is nested too deeply")
	}
	src, canon := w.src, w.canon
	w.depth++
	open := len(w.out)
	if canon {
		w.out = append(w.out, '{')
	}
	first := len(w.spans)
	plain := true
	if i = rawjson.SkipSpace(src, i+1); i < len(src) && src[i] == '}' {
		if canon {
			w.out = append(w.out, '}')
		}
		w.depth--
		return i + 1, nil
	}
	for {
		if i = rawjson.SkipSpace(src, i); i >= len(src) || src[i] != '"' {
			return 0, w.syntax(i, "expected a string key")
		}
		ks := i
		ke, escaped, keyPlain, err := w.memberKey(ks)
		if err != nil {
			return 0, err
		}
		plain = plain && keyPlain
		if i = rawjson.SkipSpace(src, ke); i >= len(src) || src[i] != ':' {
			return 0, w.syntax(i, "expected ':'")
		}
		valueStart := rawjson.SkipSpace(src, i+1)
		if top {
			if i, err = w.topMember(ks, ke, escaped, valueStart); err != nil {
				return 0, err
			}
		} else {
			sig := ke-ks >= len(`"signature"`) && isSignature(src[ks+1:ke-1], escaped)
			if canon && valueStart < len(src) && src[valueStart] == '"' {
				i, err = w.str(valueStart)
			} else {
				i, err = w.value(valueStart)
			}
			if err != nil {
				return 0, err
			}
			if sig && bytes.HasPrefix(src[valueStart:i], foreignSignature) {
				w.foreign = true
			}
			// A message's role: the objects three levels down in "messages".
			if w.depth == 3 && w.inMessages && rawjson.KeyIs(src[ks+1:ke-1], "role") && rawjson.StrIs(src[valueStart:i], "system") {
				w.systemMsg = true
			}
			if canon {
				w.spans[len(w.spans)-1].end = len(w.out)
				w.out = append(w.out, ',')
			}
		}
		if i = rawjson.SkipSpace(src, i); i >= len(src) {
			return 0, w.syntax(i, "unexpected end of JSON input")
		}
		if src[i] == '}' {
			i++
			break
		}
		if src[i] != ',' {
			return 0, w.syntax(i, "expected ',' or '}'")
		}
		i++
	}
	w.depth--
	if !canon {
		return i, nil
	}
	members := w.spans[first:]
	w.spans = w.spans[:first]
	if top {
		// The signature writes the top level in order itself.
		w.top = append(w.top[:0], members...)
		w.topPlain = plain
		return i, nil
	}
	if !sorted(w.out, members, plain) {
		w.reorder(open, members, plain)
		return i, nil
	}
	// Every member is followed by a comma; the last one becomes the brace.
	w.out[len(w.out)-1] = '}'
	w.fold(open)
	return i, nil
}

// memberKey reads the key at src[ks] and returns where it ends, whether it
// holds escapes and, for a signature, whether it is valid UTF-8. For a
// signature it writes the key and a colon, and starts the member's span (its
// end is set once the value is written).
func (w *walker) memberKey(ks int) (ke int, escaped, plain bool, err error) {
	start := len(w.out)
	if w.canon && ks+17 <= len(w.src) && start+18 <= cap(w.out) {
		// A short plain key (ASCII without escapes, at most 15 bytes) is
		// checked, copied with its colon and given its prefix (see
		// keyPrefix) from two words.
		k := (*[17]byte)(w.src[ks : ks+17])
		lo := binary.LittleEndian.Uint64(k[1:9])
		hi := binary.LittleEndian.Uint64(k[9:17])
		// The first byte a string scan stops at must be the closing quote,
		// and the bytes before it ASCII. m&-m is the stop's high bit alone:
		// less one, it masks the bytes before the stop.
		n := -1
		var high, pre uint64
		if m := rawjson.Stops(lo); m != 0 {
			n = bits.TrailingZeros64(m) >> 3
			stop := m & -m
			high, pre = lo&(stop-1), lo&(stop<<1-1)
		} else if m = rawjson.Stops(hi); m != 0 {
			n = 8 + bits.TrailingZeros64(m)>>3
			high, pre = lo|hi&(m&-m-1), lo
		}
		if n >= 0 && high&msb == 0 && k[1+n] == '"' {
			o := (*[18]byte)(w.out[start : start+18])
			o[0] = '"'
			binary.LittleEndian.PutUint64(o[1:9], lo)
			binary.LittleEndian.PutUint64(o[9:17], hi)
			o[n+2] = ':'
			w.out = w.out[:start+n+3]
			w.spans = append(w.spans, span{start: start, keyEnd: start + n + 2, pre: bits.ReverseBytes64(pre)})
			return ks + n + 2, false, true, nil
		}
	}
	ke, ascii, err := rawjson.CheckKey(w.src, ks)
	if err != nil {
		return 0, false, false, grammarError(err)
	}
	escaped = !ascii && rawjson.HasBackslash(w.src[ks+1:ke-1])
	if !w.canon {
		return ke, escaped, true, nil
	}
	keyEnd, pre := w.key(ks, ke, escaped)
	w.spans = append(w.spans, span{start: start, keyEnd: keyEnd, pre: pre})
	return ke, escaped, ascii || utf8.Valid(w.out[start:keyEnd]), nil
}

// isSignature reports whether a key, as written between its quotes, is
// "signature".
func isSignature(inner []byte, escaped bool) bool {
	if len(inner) < len("signature") {
		return false
	}
	if escaped {
		return string(rawjson.AppendUnescaped(nil, inner)) == "signature"
	}
	return string(inner) == "signature"
}

// topMember walks the value of the top-level member whose key is src[ks:ke]
// and finds what the balancer needs in it; for a signature it ends the
// member, or drops it when it is ignored.
func (w *walker) topMember(ks, ke int, escaped bool, valueStart int) (int, error) {
	spelled := w.src[ks+1 : ke-1]
	if escaped {
		spelled = rawjson.AppendUnescaped(nil, spelled)
	}
	var end int
	var err error
	messages := string(spelled) == "messages"
	switch {
	case !messages && w.owner != "" && valueStart < len(w.src) && !isScalar(w.src, valueStart):
		// Objects and arrays outside the conversation (tools, system)
		// are mostly what the previous request sent (see cache.go).
		if end, err = w.topValue(valueStart); err != nil {
			return 0, err
		}
	case !w.canon && !messages:
		// Outside the conversation nothing needs a closer look: the
		// grammar's own walk validates it.
		if end, err = rawjson.CheckValue(w.src, valueStart, w.depth); err != nil {
			return 0, grammarError(err)
		}
	default:
		w.inMessages = messages
		w.digestMessages = messages && w.digesting && !w.ignored(spelled)
		end, err = w.value(valueStart)
		w.inMessages, w.digestMessages = false, false
		if err != nil {
			return 0, err
		}
	}
	if w.digesting && valueStart < end && isScalar(w.src, valueStart) && !w.ignored(spelled) {
		w.digestValue(w.src[valueStart:end])
	}
	if err := w.field(spelled, valueStart, end); err != nil {
		return 0, err
	}
	if w.canon {
		m := &w.spans[len(w.spans)-1]
		if w.ignored(spelled) {
			w.out = w.out[:m.start]
			w.spans = w.spans[:len(w.spans)-1]
		} else {
			m.end = len(w.out)
			w.out = append(w.out, ',')
		}
	}
	return end, nil
}

// isScalar reports whether the value at src[i] is a scalar (neither an object
// nor an array).
func isScalar(src []byte, i int) bool { return src[i] != '{' && src[i] != '[' }

// key writes the key src[ks:ke] (with escapes, once resolved) and a colon,
// and returns where the key ends in out and its prefix (see keyPrefix).
func (w *walker) key(ks, ke int, escaped bool) (int, uint64) {
	start := len(w.out)
	if escaped {
		// One spelling per key, so that keys are ordered by what they mean
		// ("syst\u0065m" is "system").
		w.out = append(w.out, canonicalKey(w.src[ks:ke])...)
	} else {
		w.out = append(w.out, w.src[ks:ke]...)
	}
	end := len(w.out)
	w.out = append(w.out, ':')
	return end, keyPrefix(w.out[start:end])
}

// appendValue writes the value src[i:j] as it is: up to 64 bytes in one
// copy of that size, when the body and out have room for it.
func (w *walker) appendValue(i, j int) {
	n, k := j-i, len(w.out)
	if n <= 64 && i+64 <= len(w.src) && k+64 <= cap(w.out) {
		*(*[64]byte)(w.out[k : k+64]) = *(*[64]byte)(w.src[i : i+64])
		w.out = w.out[:k+n]
		return
	}
	w.out = append(w.out, w.src[i:j]...)
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
	end := len(w.out)
	// The sorted text is as long as the text, and short members are
	// copied a few words at a time: room for both.
	if cap(w.out)-end < end-open+64 {
		w.out = slices.Grow(w.out, end-open+64)
	}
	out := w.out[:cap(w.out)]
	k := end
	out[k] = '{'
	k++
	var order [16]uint8
	if plain && len(members) <= len(order) && sortShort(members, order[:len(members)]) {
		for _, j := range order[:len(members)] {
			k = copyMember(out, k, members[j])
		}
	} else {
		sortMembers(out, members, plain)
		for _, m := range members {
			k = copyMember(out, k, m)
		}
	}
	out[k-1] = '}'
	text := out[end:k]
	if len(text) > w.inline {
		s := hash(text)
		w.out = append(w.out[:open], hashMark)
		w.out = append(w.out, s[:]...)
		return
	}
	w.out = w.out[:open+copy(w.out[open:end], text)]
}

// copyMember copies member m and a comma to out[k:], which has room for
// them and sixty-four bytes more, and returns where they end.
func copyMember(out []byte, k int, m span) int {
	if n := m.end - m.start; n <= 64 {
		src, dst := (*[64]byte)(out[m.start:m.start+64]), (*[64]byte)(out[k:k+64])
		*dst = *src
		k += n
	} else {
		k += copy(out[k:], out[m.start:m.end])
	}
	out[k] = ','
	return k + 1
}

// sortShort sorts a short object's members (of plain keys) by key prefix,
// writing their order into order, members with equal keys in their order.
// It reports false when two prefixes are equal but the keys may not be.
func sortShort(members []span, order []uint8) bool {
	var pre [16]uint64
	for i := range order {
		m := &members[i]
		p := m.pre
		j := i
		for ; j > 0 && pre[j-1] > p; j-- {
			pre[j], order[j] = pre[j-1], order[j-1]
		}
		if j > 0 && pre[j-1] == p && (m.keyEnd-m.start > 9 || members[order[j-1]].keyEnd-members[order[j-1]].start > 9) {
			return false
		}
		pre[j], order[j] = p, uint8(i)
	}
	return true
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

// lastBeta is the last header normalizeBeta sorted, and what it made of
// it: a client sends the same flags with every request.
var lastBeta atomic.Pointer[[2]string]

// normalizeBeta returns the header's flags sorted and joined with commas.
func normalizeBeta(beta string) string {
	if beta == "" {
		return beta
	}
	if last := lastBeta.Load(); last != nil && last[0] == beta {
		return last[1]
	}
	if normalBeta(beta) {
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
	norm := strings.Join(slices.Compact(flags), ",")
	lastBeta.Store(&[2]string{beta, norm})
	return norm
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
