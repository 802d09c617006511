package tokens

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
	"github.com/pkoukk/tiktoken-go"
)

func cl100kEncoder(t testing.TB) *cl100k {
	t.Helper()
	e, err := loadEncoder(EncodingCL100K)
	if err != nil {
		t.Fatal(err)
	}
	return e.(*cl100k)
}

// tiktokenCL100K is loaded once: each tiktoken.GetEncoding call rebuilds its tables.
var tiktokenCL100KOnce = sync.OnceValues(func() (*tiktoken.Tiktoken, error) {
	useOfflineLoader()
	return tiktoken.GetEncoding(EncodingCL100K)
})

func tiktokenCL100K(t testing.TB) *tiktoken.Tiktoken {
	t.Helper()
	tk, err := tiktokenCL100KOnce()
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// trickyTexts exercise each alternative of the pre-tokenizer and the Unicode classes.
var trickyTexts = []string{
	"I'm sure they'll say it's fine, but DON'T you've 'S 'Re 'LL 'ab 'd'",
	"  leading\n\n    indented\ttab\t\tfoo  \r\n\r\n trailing   ",
	"a \u00a0b\u2003c\u3000d\u0085e\u2028f \n",
	"12345678 1,234.56 3.14159e-10 0x1F ٣٤٥ ½ Ⅻ",
	"((foo)) [bar]; {baz} -> => !== ... ?!\n\n\n!!",
	"e\u0301 n\u0303o cafe\u0301 ﬁ ß İstanbul ǅ",
	"Ελληνικά Русский 中文字符 日本語のテキスト 한국어 العربية हिन्दी",
	"👩‍👩‍👧 🇫🇷 ✔︎ ★ ©®™",
	"func (c *Counter) Count(body []byte) (int, error) {\n\treturn 0, nil\n}\n",
	"    def f(x):\n        return x ** 2  # square\n",
	"https://example.com/path?q=1&r=two#frag user@example.org",
	"<|endoftext|><|fim_prefix|>",
	"\n", " ", "\t", "'", "''", "a", "1", "",
}

func TestCL100KMatchesTiktoken(t *testing.T) {
	e, tk := cl100kEncoder(t), tiktokenCL100K(t)
	texts := append([]string(nil), trickyTexts...)
	files, _ := filepath.Glob("*.go")
	files = append(files, "../testdata/claude-code-2.1.332-request.json")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(b))
	}
	texts = append(texts, synthConversation(3, 64<<10).texts...)
	for _, s := range texts {
		if got, want := e.count([]byte(s)), len(tk.EncodeOrdinary(s)); got != want {
			t.Errorf("count(%.60q) = %d, tiktoken-go = %d", s, got, want)
		}
	}
}

// TestPreTokenizerMatchesRegexp compares the pieces themselves with the expression run by regexp2.
func TestPreTokenizerMatchesRegexp(t *testing.T) {
	re := regexp2.MustCompile(`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, regexp2.None)
	for _, s := range trickyTexts {
		var want []string
		for m, _ := re.FindStringMatch(s); m != nil; m, _ = re.FindNextMatch(m) {
			want = append(want, m.String())
		}
		var got []string
		for i := 0; i < len(s); {
			j := nextPiece([]byte(s), i)
			got = append(got, s[i:j])
			i = j
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("pieces of %q:\n got %q\nwant %q", s, got, want)
		}
	}
}

// The contraction check compares bytes only; that is exact because regexp2 matches case-insensitively by
// unicode.ToLower and no non-ASCII rune lower-cases to one of the letters involved.
func TestNoRuneFoldsToContractionLetters(t *testing.T) {
	for r := rune(utf8.RuneSelf); r <= unicode.MaxRune; r++ {
		if l := unicode.ToLower(r); l < utf8.RuneSelf && strings.ContainsRune("stmdrvel", l) {
			t.Errorf("%U lower-cases to %q", r, l)
		}
	}
}

// TestLongPiecesAreCheap counts pieces of a quarter megabyte, which tiktoken's unbounded quadratic merge would
// take minutes over; finishing within the test timeout is the assertion.
func TestLongPiecesAreCheap(t *testing.T) {
	e := cl100kEncoder(t)
	for _, s := range []string{strings.Repeat("a", 1<<18), strings.Repeat("é", 1<<17), strings.Repeat("=", 1<<18)} {
		if n := e.count([]byte(s)); n <= 0 || n > len(s) {
			t.Errorf("count of %d bytes = %d", len(s), n)
		}
	}
	// Up to maxPiece bytes a piece is merged whole, exactly as tiktoken does.
	s := strings.Repeat("ab", maxPiece/2)
	if got, want := e.count([]byte(s)), len(tiktokenCL100K(t).EncodeOrdinary(s)); got != want {
		t.Errorf("count of a %d-byte piece = %d, tiktoken-go = %d", len(s), got, want)
	}
}

func TestMemoGivesSameCounts(t *testing.T) {
	e := cl100kEncoder(t)
	text := []byte("unusualIdentifierName anotherRareToken xqzvbnm unusualIdentifierName")
	first := e.count(text)
	for range 3 {
		if again := e.count(text); again != first {
			t.Fatalf("memoized count %d, first %d", again, first)
		}
	}
}

func FuzzCL100KMatchesTiktoken(f *testing.F) {
	for _, s := range trickyTexts {
		f.Add(s)
	}
	e, tk := cl100kEncoder(f), tiktokenCL100K(f)
	f.Fuzz(func(t *testing.T, s string) {
		// tiktoken-go sees invalid UTF-8 as U+FFFD; request text is always valid once decoded from JSON.
		if !utf8.ValidString(s) {
			return
		}
		for i := 0; i < len(s); {
			j := nextPiece([]byte(s), i)
			if j <= i {
				t.Fatalf("nextPiece(%q, %d) = %d does not advance", s, i, j)
			}
			if j-i > maxPiece {
				return // pieces past maxPiece are merged in chunks on purpose
			}
			i = j
		}
		if got, want := e.count([]byte(s)), len(tk.EncodeOrdinary(s)); got != want {
			t.Errorf("count(%q) = %d, tiktoken-go = %d", s, got, want)
		}
	})
}

func TestCountDoesNotAllocate(t *testing.T) {
	e := cl100kEncoder(t)
	text := []byte(strings.Join(trickyTexts, " ") + " unusualIdentifierName xqzvbnm")
	e.count(text)
	if n := testing.AllocsPerRun(10, func() { e.count(text) }); n != 0 {
		t.Errorf("count allocates %v times per call", n)
	}
}

// TestSlowPathChunksKeepCounts feeds long texts to the tiktoken-go path, which cuts them into chunks, and
// compares with one unchunked call.
func TestSlowPathChunksKeepCounts(t *testing.T) {
	texts := []string{strings.Join(trickyTexts, " "), strings.Join(synthConversation(5, 8<<10).texts, "\n")}
	src, err := os.ReadFile("request.go")
	if err != nil {
		t.Fatal(err)
	}
	texts = append(texts, string(src), strings.Repeat("Привет мир 世界 ", 500))
	useOfflineLoader()
	for _, name := range []string{EncodingCL100K, EncodingO200K} {
		tk, err := tiktoken.GetEncoding(name)
		if err != nil {
			t.Fatal(err)
		}
		e := tiktokenEncoder{tk: tk}
		for _, s := range texts {
			if got, want := e.count([]byte(s)), len(tk.EncodeOrdinary(s)); got != want {
				t.Errorf("%s: chunked count of %d bytes = %d, unchunked = %d", name, len(s), got, want)
			}
		}
		if n := e.count([]byte(strings.Repeat("é", 1<<14))); n <= 0 {
			t.Errorf("%s: count of a long piece = %d", name, n)
		}
	}
}

// TestVocabularyHoldsNoPointers keeps the encoder's tables out of the garbage collector's walk: a table
// whose entries hold pointers (a map keyed by string, say) would have every collection in the process
// follow each of its hundred thousand entries.
func TestVocabularyHoldsNoPointers(t *testing.T) {
	var walk func(path string, typ reflect.Type)
	walk = func(path string, typ reflect.Type) {
		switch typ.Kind() {
		case reflect.Pointer:
			walk(path, typ.Elem())
		case reflect.Struct:
			for i := range typ.NumField() {
				walk(path+"."+typ.Field(i).Name, typ.Field(i).Type)
			}
		case reflect.Map:
			if holdsPointers(typ.Key()) || holdsPointers(typ.Elem()) {
				t.Errorf("%s is a %s: its entries hold pointers", path, typ)
			}
		case reflect.Slice, reflect.Array:
			if holdsPointers(typ.Elem()) {
				t.Errorf("%s is a %s: its elements hold pointers", path, typ)
			}
		case reflect.Interface, reflect.String, reflect.Chan, reflect.Func:
			t.Errorf("%s is a %s", path, typ)
		}
	}
	walk("cl100k", reflect.TypeFor[cl100k]())
}

func holdsPointers(typ reflect.Type) bool {
	switch typ.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.String, reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return true
	case reflect.Array:
		return holdsPointers(typ.Elem())
	case reflect.Struct:
		for i := range typ.NumField() {
			if holdsPointers(typ.Field(i).Type) {
				return true
			}
		}
	}
	return false
}
