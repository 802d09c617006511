package dedup

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
	"github.com/zeebo/blake3"
)

// Key identifies a group of identical requests: the BLAKE3 hash of a request's
// canonical body, its client identity and its anthropic-beta header.
type Key [32]byte

// String returns the key in hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// DefaultIgnore is the list of top-level body fields left out of the
// signature unless configured otherwise: max_tokens changes between a request
// and its retry (clients lower it after an overflow) without changing the
// answer that is already on its way.
var DefaultIgnore = []string{"max_tokens"}

// signatureVersion starts every hashed input, so that a change to the
// canonical form can never make old and new signatures collide.
const signatureVersion = "claude_balancer/dedup/v1\n"

// Signature returns the key of a Messages API request. body is the raw JSON
// request body; it is made canonical (object members sorted by key at every
// level, insignificant whitespace removed; strings and numbers keep their
// bytes) with the top-level fields named in ignore left out. "stream" is
// always left out, because a streaming and a non-streaming request share one
// answer. identity is the client's identity (its client key, or the
// credential it passes through), so that two clients never share an answer.
// beta is the anthropic-beta header, several values joined with commas; its
// flags are compared as a set. Signature fails when body is not a JSON object.
func Signature(body []byte, ignore []string, identity, beta string) (Key, error) {
	return SignatureWith(body, ignore, identity, beta, nil)
}

// FieldFunc receives each top-level member of a body as Signature walks it:
// the key as written (quotes included) and where its value starts and ends
// in the body. A caller that needs a few top-level fields gets them from the
// same pass.
type FieldFunc func(quotedKey []byte, valueStart, valueEnd int)

// SignatureWith is Signature that also reports every top-level member to
// field (when not nil).
func SignatureWith(body []byte, ignore []string, identity, beta string, field FieldFunc) (Key, error) {
	c := canonPool.Get().(*canonicalizer)
	defer c.release()
	c.reset(body, ignore)
	c.field = field
	if err := c.document(); err != nil {
		return Key{}, fmt.Errorf("dedup: request body: %w", err)
	}
	h := c.hasher
	if h == nil {
		h = blake3.New()
		c.hasher = h
	}
	h.Reset()
	var n [binary.MaxVarintLen64]byte
	h.Write([]byte(signatureVersion))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(identity)))])
	h.Write([]byte(identity))
	beta = normalizeBeta(beta)
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(beta)))])
	h.Write([]byte(beta))
	c.writeTop(h)
	var k Key
	h.Sum(k[:0])
	return k, nil
}

// writeTop writes the canonical document: its top-level members in key
// order, straight from where they were written, sparing the copy a reorder
// would make of the request's largest values.
func (c *canonicalizer) writeTop(w io.Writer) {
	cmp := keyOrder(c.topPlain)
	slices.SortStableFunc(c.top, func(a, b span) int {
		return cmp(c.out[a.start:a.keyEnd], c.out[b.start:b.keyEnd])
	})
	w.Write([]byte{'{'})
	for i, m := range c.top {
		if i > 0 {
			w.Write([]byte{','})
		}
		w.Write(c.out[m.start:m.end])
	}
	w.Write([]byte{'}'})
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

var canonPool = sync.Pool{New: func() any { return new(canonicalizer) }}

// canonicalizer writes the canonical form of a JSON document into out in one
// pass over its bytes, validating as it goes. Objects are written member by
// member; when an object's keys turn out not to be in order, its members
// (each already canonical) are reordered in place.
type canonicalizer struct {
	src   []byte
	pos   int
	out   []byte
	tmp   []byte
	spans []span
	top   []span
	// topPlain is set when every top-level key is valid UTF-8.
	topPlain bool
	depth    int
	ignore   []string
	field    FieldFunc
	hasher   *blake3.Hasher
}

// span locates one object member in out: the quoted key is out[start:keyEnd],
// the whole member out[start:end].
type span struct{ start, keyEnd, end int }

var (
	errSyntax   = errors.New("invalid JSON")
	errNotObj   = errors.New("not a JSON object")
	errTooDeep  = errors.New("JSON nested too deeply")
	errTrailing = errors.New("data after the JSON object")
)

func (c *canonicalizer) reset(src []byte, ignore []string) {
	c.src, c.pos, c.depth, c.ignore, c.field = src, 0, 0, ignore, nil
	c.out, c.tmp, c.spans, c.top, c.topPlain = c.out[:0], c.tmp[:0], c.spans[:0], c.top[:0], true
	if cap(c.out) < len(src) {
		c.out = make([]byte, 0, len(src))
	}
}

// release returns c to the pool unless it grew so large that keeping it would
// pin memory a rare huge body needed once.
func (c *canonicalizer) release() {
	c.src, c.ignore, c.field = nil, nil, nil
	if cap(c.out) > 8<<20 || cap(c.tmp) > 8<<20 {
		return
	}
	canonPool.Put(c)
}

func (c *canonicalizer) document() error {
	c.skipSpace()
	if c.pos >= len(c.src) || c.src[c.pos] != '{' {
		return errNotObj
	}
	if err := c.object(true); err != nil {
		return err
	}
	c.skipSpace()
	if c.pos != len(c.src) {
		return errTrailing
	}
	return nil
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.src) {
		switch c.src[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) value() error {
	c.skipSpace()
	if c.pos >= len(c.src) {
		return errSyntax
	}
	switch ch := c.src[c.pos]; {
	case ch == '{':
		return c.object(false)
	case ch == '[':
		return c.array()
	case ch == '"':
		return c.string()
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	case ch == '-' || ('0' <= ch && ch <= '9'):
		return c.number()
	}
	return errSyntax
}

func (c *canonicalizer) literal(lit string) error {
	if !bytes.HasPrefix(c.src[c.pos:], []byte(lit)) {
		return errSyntax
	}
	c.out = append(c.out, lit...)
	c.pos += len(lit)
	return nil
}

func (c *canonicalizer) number() error {
	end, err := rawjson.CheckNumber(c.src, c.pos)
	if err != nil {
		return errSyntax
	}
	c.out = append(c.out, c.src[c.pos:end]...)
	c.pos = end
	return nil
}

func (c *canonicalizer) string() error {
	end, err := rawjson.CheckString(c.src, c.pos)
	if err != nil {
		return errSyntax
	}
	c.out = append(c.out, c.src[c.pos:end]...)
	c.pos = end
	return nil
}

func (c *canonicalizer) array() error {
	if c.depth++; c.depth > rawjson.MaxDepth {
		return errTooDeep
	}
	c.pos++
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.src) && c.src[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		c.depth--
		return nil
	}
	for {
		if err := c.value(); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.src) {
			return errSyntax
		}
		switch c.src[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			c.depth--
			return nil
		default:
			return errSyntax
		}
	}
}

func (c *canonicalizer) object(top bool) error {
	if c.depth++; c.depth > rawjson.MaxDepth {
		return errTooDeep
	}
	c.pos++
	open := len(c.out)
	c.out = append(c.out, '{')
	first := len(c.spans)
	plain := true
	c.skipSpace()
	if c.pos < len(c.src) && c.src[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		c.depth--
		return nil
	}
	for {
		c.skipSpace()
		if c.pos >= len(c.src) || c.src[c.pos] != '"' {
			return errSyntax
		}
		start := len(c.out)
		if err := c.string(); err != nil {
			return err
		}
		if bytes.IndexByte(c.out[start:], '\\') >= 0 {
			// One spelling per key, so that keys are ordered by what they
			// mean ("syst\u0065m" is "system").
			c.out = append(c.out[:start], canonicalKey(c.out[start:])...)
		}
		keyEnd := len(c.out)
		if plain && !utf8.Valid(c.out[start:keyEnd]) {
			plain = false
		}
		c.skipSpace()
		if c.pos >= len(c.src) || c.src[c.pos] != ':' {
			return errSyntax
		}
		c.pos++
		c.out = append(c.out, ':')
		c.skipSpace()
		valueStart := c.pos
		if err := c.value(); err != nil {
			return err
		}
		if top && c.field != nil {
			c.field(c.out[start:keyEnd], valueStart, c.pos)
		}
		if top && c.ignored(c.out[start:keyEnd]) {
			c.out = c.out[:start]
		} else {
			c.spans = append(c.spans, span{start, keyEnd, len(c.out)})
			c.out = append(c.out, ',')
		}
		c.skipSpace()
		if c.pos >= len(c.src) {
			return errSyntax
		}
		if c.src[c.pos] == '}' {
			c.pos++
			break
		}
		if c.src[c.pos] != ',' {
			return errSyntax
		}
		c.pos++
	}
	c.depth--
	members := c.spans[first:]
	defer func() { c.spans = c.spans[:first] }()
	if top {
		// Signature hashes the top level in order itself.
		c.top = append(c.top[:0], members...)
		c.topPlain = plain
		return nil
	}
	if len(members) == 0 {
		c.out = append(c.out[:open+1], '}')
		return nil
	}
	cmp := keyOrder(plain)
	if !c.sorted(members, cmp) {
		c.reorder(open, members, cmp)
	}
	// Every member is followed by a comma; the last one becomes the brace.
	c.out[len(c.out)-1] = '}'
	return nil
}

func (c *canonicalizer) sorted(members []span, cmp func(a, b []byte) int) bool {
	for i := 1; i < len(members); i++ {
		if cmp(c.out[members[i-1].start:members[i-1].keyEnd], c.out[members[i].start:members[i].keyEnd]) > 0 {
			return false
		}
	}
	return true
}

// reorder rewrites the members written after out[open] sorted by key, in the
// order cmp gives (see keyOrder): any fixed order serves, as long as it is the
// same for every request.
func (c *canonicalizer) reorder(open int, members []span, cmp func(a, b []byte) int) {
	base := open + 1
	c.tmp = append(c.tmp[:0], c.out[base:]...)
	slices.SortStableFunc(members, func(a, b span) int {
		return cmp(c.tmp[a.start-base:a.keyEnd-base], c.tmp[b.start-base:b.keyEnd-base])
	})
	c.out = c.out[:base]
	for _, m := range members {
		c.out = append(c.out, c.tmp[m.start-base:m.end-base]...)
		c.out = append(c.out, ',')
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

// ignored reports whether a top-level key (quoted, as written) is left out of
// the signature.
func (c *canonicalizer) ignored(quoted []byte) bool {
	key := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(key, '\\') >= 0 {
		var s string
		if json.Unmarshal(quoted, &s) != nil {
			return false
		}
		key = []byte(s)
	}
	if string(key) == "stream" {
		return true
	}
	for _, name := range c.ignore {
		if string(key) == name {
			return true
		}
	}
	return false
}
