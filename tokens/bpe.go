package tokens

import (
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// encoder counts the tokens of one text. Implementations are safe for concurrent use.
type encoder interface {
	count(text []byte) int
}

// Encoding names accepted by Options.Encoding.
const (
	// EncodingCL100K is the default: it tracks Claude's tokenizer best on the samples measured (README).
	EncodingCL100K = "cl100k_base"
	// EncodingO200K is accepted but counted by tiktoken-go itself, about 15 times slower.
	EncodingO200K = "o200k_base"
)

var (
	loaderOnce sync.Once

	encodersMu sync.Mutex
	encoders   = map[string]encoder{}
)

// useOfflineLoader points tiktoken-go at the tables embedded in tiktoken-go-loader. Its default loader
// downloads them, which must never happen: call this before any tiktoken.GetEncoding.
func useOfflineLoader() {
	loaderOnce.Do(func() { tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader()) })
}

// loadEncoder returns the process-wide encoder for name, loading it on first use. Ranks come only from the
// tables embedded in tiktoken-go-loader: nothing is ever downloaded.
func loadEncoder(name string) (encoder, error) {
	useOfflineLoader()
	encodersMu.Lock()
	defer encodersMu.Unlock()
	if e, ok := encoders[name]; ok {
		return e, nil
	}
	var e encoder
	switch name {
	case EncodingCL100K:
		ranks, err := tiktoken_loader.NewOfflineLoader().LoadTiktokenBpe(name + ".tiktoken")
		if err != nil {
			return nil, fmt.Errorf("load %s ranks: %w", name, err)
		}
		e = newCL100K(ranks)
	default:
		tk, err := tiktoken.GetEncoding(name)
		if err != nil {
			return nil, fmt.Errorf("load encoding %q: %w", name, err)
		}
		e = tiktokenEncoder{tk: tk}
	}
	encoders[name] = e
	return e, nil
}

// tiktokenEncoder counts with tiktoken-go itself. EncodeOrdinary never panics: special-token text such as
// "<|endoftext|>" is counted as ordinary text, as Claude would see it.
//
// tiktoken-go merges each piece in time quadratic in its length, with no bound, so text is fed to it in
// chunks of at most slowChunk bytes. A chunk ends before a space that sits between two other characters,
// where every tiktoken expression starts a new piece anyway, so the count does not change; only a run of
// slowChunk bytes without such a space is cut elsewhere.
type tiktokenEncoder struct{ tk *tiktoken.Tiktoken }

const slowChunk = 1024

func (e tiktokenEncoder) count(text []byte) int {
	n := 0
	for len(text) > slowChunk {
		cut := chunkEnd(text[:slowChunk+1])
		n += len(e.tk.EncodeOrdinary(string(text[:cut])))
		text = text[cut:]
	}
	return n + len(e.tk.EncodeOrdinary(string(text)))
}

// chunkEnd returns the last offset in w (but its final byte) before a space preceded and followed by
// something other than ASCII white space, else the last rune boundary.
func chunkEnd(w []byte) int {
	for i := len(w) - 2; i > 0; i-- {
		if w[i] == ' ' && !isASCIISpace(w[i-1]) && !isASCIISpace(w[i+1]) {
			return i
		}
	}
	i := len(w) - 1
	for i > 1 && !utf8.RuneStart(w[i]) {
		i--
	}
	return i
}

func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// cl100k reproduces tiktoken's cl100k_base: the pre-tokenizer below is a hand-written equivalent of the
// regular expression
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// followed by the same byte-pair merge. tiktoken-go runs that expression through a backtracking engine over a
// rune copy of the text, which costs about 600 ns a byte; this runs over the bytes in place, allocates nothing
// and only counts. Tests hold both equal on real text and under fuzzing.
type cl100k struct {
	// The ranks of tokens, split by length because a merge looks up mostly short byte strings: two-byte
	// tokens in a flat table, three to seven bytes packed into an integer key, longer ones by their hash.
	// None of the three holds a pointer, so the garbage collector never walks the vocabulary.
	pairs *[1 << 16]int32
	short map[uint64]int32
	long  *longTable
	// memo remembers the counts of pieces that needed merging (identifiers, rare words): they recur, and a
	// merge costs a few dozen rank lookups. Each slot packs a 44-bit tag of the piece's hash with its count
	// in one atomic word, so readers and writers need no lock and a torn entry cannot exist; a piece whose
	// slot holds another piece is merged again.
	memo *[memoSlots]atomic.Uint64
	seed maphash.Seed
}

const (
	memoSlots = 1 << 16
	memoBits  = 20 // low bits of a slot hold the count
)

func newCL100K(ranks map[string]int) *cl100k {
	e := &cl100k{
		pairs: new([1 << 16]int32),
		short: make(map[uint64]int32),
		memo:  new([memoSlots]atomic.Uint64),
		seed:  maphash.MakeSeed(),
	}
	for i := range e.pairs {
		e.pairs[i] = noRank
	}
	long := map[string]int32{}
	for tok, r := range ranks {
		switch b := []byte(tok); {
		case len(b) == 2:
			e.pairs[uint16(b[0])<<8|uint16(b[1])] = int32(r)
		case len(b) >= 3 && len(b) <= shortMax:
			e.short[pack(b)] = int32(r)
		case len(b) > shortMax:
			long[tok] = int32(r)
		}
	}
	e.long = newLongTable(long)
	return e
}

// longTable holds the ranks of the tokens longer than shortMax bytes. A map keyed by string would hold tens
// of thousands of pointers, which every garbage collection in the process would follow; this keys them by a
// 64-bit hash, keeps their bytes in one block to compare against, and holds no pointer but its slices.
type longTable struct {
	index map[uint64]uint32 // hash of a token's bytes → its entry
	text  []byte            // the tokens' bytes, one after another
	ends  []uint32          // entry i's bytes end at ends[i] and start where entry i-1's end
	ranks []int32
	seed  maphash.Seed
}

func newLongTable(ranks map[string]int32) *longTable {
	for {
		t := &longTable{index: make(map[uint64]uint32, len(ranks)), seed: maphash.MakeSeed()}
		collided := false
		for tok, r := range ranks {
			h := maphash.String(t.seed, tok)
			if _, ok := t.index[h]; ok {
				// Two tokens with one hash (about one chance in 10¹⁰ per start): hash again with another seed.
				collided = true
				break
			}
			t.index[h] = uint32(len(t.ranks))
			t.text = append(t.text, tok...)
			t.ends = append(t.ends, uint32(len(t.text)))
			t.ranks = append(t.ranks, r)
		}
		if !collided {
			return t
		}
	}
}

func (t *longTable) rank(b []byte) (int32, bool) {
	i, ok := t.index[maphash.Bytes(t.seed, b)]
	if !ok {
		return 0, false
	}
	start := uint32(0)
	if i > 0 {
		start = t.ends[i-1]
	}
	if string(t.text[start:t.ends[i]]) != string(b) {
		return 0, false
	}
	return t.ranks[i], true
}

const (
	noRank   = math.MaxInt32
	shortMax = 7
)

// pack keys a byte string of at most shortMax bytes by its bytes and its length.
func pack(b []byte) uint64 {
	k := uint64(len(b)) << 56
	for i, c := range b {
		k |= uint64(c) << (8 * i)
	}
	return k
}

// rank returns the rank of the token b (at least two bytes), or noRank.
func (e *cl100k) rank(b []byte) int32 {
	switch {
	case len(b) == 2:
		return e.pairs[uint16(b[0])<<8|uint16(b[1])]
	case len(b) <= shortMax:
		if r, ok := e.short[pack(b)]; ok {
			return r
		}
	default:
		if r, ok := e.long.rank(b); ok {
			return r
		}
	}
	return noRank
}

// maxPiece bounds the bytes merged at once. The merge is quadratic in the piece length and tiktoken has no
// bound at all, so a megabyte with no separator would pin a core; longer pieces (none occur in ordinary text
// or code) are merged in chunks, which can only add a token at each cut.
const maxPiece = 256

type class uint8

const (
	classOther   class = iota // [^\s\p{L}\p{N}]
	classLetter               // \p{L}
	classNumber               // \p{N}
	classSpace                // \s other than \r and \n
	classNewline              // [\r\n]
)

var asciiClass = func() (t [utf8.RuneSelf]class) {
	for c := range t {
		t[c] = runeClass(rune(c))
	}
	return t
}()

// runeClass uses the same Unicode tables as the regexp2 engine of tiktoken-go (Go's unicode package).
func runeClass(r rune) class {
	switch {
	case r == '\r' || r == '\n':
		return classNewline
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.IsSpace(r):
		return classSpace
	}
	return classOther
}

func classAt(s []byte, i int) (class, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, n := utf8.DecodeRune(s[i:])
	return runeClass(r), n
}

func (e *cl100k) count(s []byte) int {
	n := 0
	for i := 0; i < len(s); {
		j := nextPiece(s, i)
		n += e.countPiece(s[i:j])
		i = j
	}
	return n
}

// nextPiece returns the end of the pre-tokenizer match starting at s[i], trying the alternatives of the
// expression in order as the regular expression engine does.
func nextPiece(s []byte, i int) int {
	c, n := classAt(s, i)
	if s[i] == '\'' {
		if k := contraction(s, i+1); k > 0 {
			return i + 1 + k
		}
	}
	switch c {
	case classLetter:
		return skipClass(s, i+n, classLetter, len(s))
	case classNumber:
		return skipClass(s, i+n, classNumber, 2)
	case classSpace, classOther:
		if j := i + n; j < len(s) {
			if c2, n2 := classAt(s, j); c2 == classLetter {
				return skipClass(s, j+n2, classLetter, len(s))
			}
		}
	}
	j := i
	if s[i] == ' ' {
		j++
	}
	if j < len(s) {
		if c2, _ := classAt(s, j); c2 == classOther {
			j = skipClass(s, j, classOther, len(s))
			for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
				j++
			}
			return j
		}
	}
	// A run of white space: up to its last line break if it has one (\s*[\r\n]+), else all of it at the end
	// of the text, all but its last character before other text (\s+(?!\S)), or a lone character (\s+).
	end, lastNL, last := i, -1, i
	for end < len(s) {
		c2, n2 := classAt(s, end)
		if c2 != classSpace && c2 != classNewline {
			break
		}
		if c2 == classNewline {
			lastNL = end
		}
		last = end
		end += n2
	}
	switch {
	case lastNL >= 0:
		return lastNL + 1
	case end == len(s) || last == i:
		return end
	}
	return last
}

// skipClass advances over at most limit characters of class c.
func skipClass(s []byte, i int, c class, limit int) int {
	for k := 0; k < limit && i < len(s); k++ {
		c2, n := classAt(s, i)
		if c2 != c {
			break
		}
		i += n
	}
	return i
}

// contraction returns the length of the contraction suffix ('s 't 're 've 'm 'll 'd, any case) at s[i:],
// or 0. No non-ASCII rune lower-cases to these letters, which a test checks.
func contraction(s []byte, i int) int {
	if i >= len(s) {
		return 0
	}
	switch s[i] | 0x20 {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if i+1 < len(s) && s[i+1]|0x20 == 'e' {
			return 2
		}
	case 'l':
		if i+1 < len(s) && s[i+1]|0x20 == 'l' {
			return 2
		}
	}
	return 0
}

func (e *cl100k) countPiece(p []byte) int {
	if len(p) <= 1 {
		return len(p)
	}
	if e.rank(p) != noRank {
		return 1
	}
	h := maphash.Bytes(e.seed, p)
	slot, tag := &e.memo[h%memoSlots], h>>memoBits
	if v := slot.Load(); v != 0 && v>>memoBits == tag {
		return int(v & (1<<memoBits - 1))
	}
	n := e.chunks(p)
	if n < 1<<memoBits {
		slot.Store(tag<<memoBits | uint64(n))
	}
	return n
}

// chunks merges a piece in chunks of at most maxPiece bytes.
func (e *cl100k) chunks(p []byte) int {
	n := 0
	for len(p) > maxPiece {
		cut := maxPiece
		for cut > 0 && !utf8.RuneStart(p[cut]) {
			cut--
		}
		if cut == 0 {
			cut = maxPiece
		}
		n += e.merge(p[:cut])
		p = p[cut:]
	}
	return n + e.merge(p)
}

// merge counts the tokens of one piece with tiktoken's byte-pair merge: repeatedly join the adjacent pair whose
// joined bytes have the lowest rank.
func (e *cl100k) merge(p []byte) int {
	if len(p) <= 1 {
		return len(p)
	}
	type part struct{ start, rank int32 }
	var buf [maxPiece + 1]part
	parts := buf[:len(p)+1]
	rank := func(i, skip int) int32 {
		if i+skip+2 < len(parts) {
			return e.rank(p[parts[i].start:parts[i+skip+2].start])
		}
		return noRank
	}
	for i := range parts {
		parts[i] = part{start: int32(i), rank: noRank}
	}
	for i := 0; i < len(parts)-2; i++ {
		parts[i].rank = rank(i, 0)
	}
	for len(parts) > 1 {
		minRank, minIdx := int32(noRank), -1
		for i := 0; i < len(parts)-1; i++ {
			if parts[i].rank < minRank {
				minRank, minIdx = parts[i].rank, i
			}
		}
		if minIdx < 0 {
			break
		}
		i := minIdx
		parts[i].rank = rank(i, 1)
		if i > 0 {
			parts[i-1].rank = rank(i-1, 1)
		}
		parts = append(parts[:i+1], parts[i+2:]...)
	}
	return len(parts) - 1
}
