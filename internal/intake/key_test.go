package intake

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/rawjson"
)

// signWith signs body with values whose canonical text is longer than
// inline written as their hashes.
func signWith(t testing.TB, body []byte, inline int, identity, beta string) Key {
	t.Helper()
	w := new(walker)
	w.reset(body, Options{Sign: true, Ignore: defaultIgnore})
	w.inline = inline
	if err := w.document(); err != nil {
		t.Fatalf("%q: %v", body, err)
	}
	return w.sign(identity, beta)
}

func TestKeyComparesIdentityAndBetaAsTheyAre(t *testing.T) {
	body := []byte(baseBody)
	a := signWith(t, body, inlineMax, "client-a", "x")
	if a.sum != signWith(t, body, inlineMax, "client-b", "x").sum {
		t.Fatal("the body's hash depends on the identity")
	}
	for _, other := range []Key{
		signWith(t, body, inlineMax, "client-b", "x"),
		signWith(t, body, inlineMax, "client-a", "y"),
		signWith(t, body, inlineMax, "client-a", ""),
		signWith(t, body, inlineMax, "client-ax", ""),
		signWith(t, body, inlineMax, "", "client-a,x"),
	} {
		if other == a {
			t.Errorf("%+v and %+v are one key", other, a)
		}
	}
	if b := signWith(t, body, inlineMax, "client-a", "x"); b != a {
		t.Error("the same request signs differently")
	}
	m := map[Key]int{a: 1}
	if m[signWith(t, body, inlineMax, "client-a", "x")] != 1 || m[signWith(t, body, inlineMax, "client-b", "x")] != 0 {
		t.Error("keys do not work as map keys")
	}
}

func TestKeyStringHidesTheIdentity(t *testing.T) {
	identity := "secret-credential-digest"
	k := signWith(t, []byte(baseBody), inlineMax, identity, "beta-flag")
	s := k.String()
	if strings.Contains(s, identity) || strings.Contains(s, "beta-flag") || strings.Contains(s, fmt.Sprintf("%x", identity)) {
		t.Fatalf("String() = %q shows the identity", s)
	}
	if other := signWith(t, []byte(baseBody), inlineMax, "someone else", "beta-flag"); other.String() == s {
		t.Error("two identities print alike")
	}
}

// The signature does not depend on which values are written as their hash:
// the same bodies sign alike, or not, whatever the threshold.
func TestSignatureDoesNotDependOnWhatIsHashed(t *testing.T) {
	bodies := []string{
		baseBody,
		`{"model":"m","a":{"b":"` + strings.Repeat("x", 100) + `","a":[1,2]}}`,
		`{"model":"m","a":{"a":[1,2],"b":"` + strings.Repeat("x", 100) + `"}}`,
		`{"model":"m","a":{"a":[1,2],"b":"` + strings.Repeat("x", 99) + `y"}}`,
		`{"model":"m","a":{"a":[1,2,3],"b":"` + strings.Repeat("x", 100) + `"}}`,
		`{"model":"m","a":["` + strings.Repeat("x", 100) + `"]}`,
		`{"model":"m","a":"` + strings.Repeat("x", 100) + `"}`,
		`{"model":"m","a":{"x":"` + strings.Repeat("x", 100) + `"}}`,
		`{"model":"m","a":[{"x":"` + strings.Repeat("x", 100) + `"}]}`,
	}
	thresholds := []int{0, 1, 16, 17, 18, 40, inlineMax, 200, math.MaxInt}
	for i, a := range bodies {
		for j, b := range bodies {
			want := i == j || (i <= 2 && j <= 2 && i != 0 && j != 0)
			for _, inline := range thresholds {
				ka := signWith(t, []byte(a), inline, "c", "")
				kb := signWith(t, []byte(b), inline, "c", "")
				if (ka == kb) != want {
					t.Errorf("inline %d: %.50q and %.50q: equal %v, want %v", inline, a, b, ka == kb, want)
				}
			}
		}
	}
	// The canonical text itself signs as the body does.
	for _, body := range bodies {
		text, err := canonical([]byte(body), defaultIgnore)
		if err != nil {
			t.Fatal(err)
		}
		for _, inline := range thresholds {
			if signWith(t, []byte(body), inline, "c", "") != signWith(t, text, inline, "c", "") {
				t.Errorf("inline %d: %.50q signs unlike its canonical text", inline, body)
			}
		}
	}
}

// Near-identical bodies never share a key: one byte of a string changed at
// every offset, every number, arrays reordered, values moved to another level.
func TestNearIdenticalBodiesNeverCollide(t *testing.T) {
	base := compactBody(t, claudeCodeBody(t))
	seen := map[Key][]byte{}
	add := func(body []byte) {
		t.Helper()
		k, err := Signature(body, defaultIgnore, "c", "")
		if err != nil {
			return // a change that broke the JSON
		}
		if prev, ok := seen[k]; ok {
			a, _ := canonical(prev, defaultIgnore)
			b, _ := canonical(body, defaultIgnore)
			if !bytes.Equal(a, b) {
				t.Fatalf("two different bodies share a key:\n%.200s\n%.200s", a, b)
			}
		}
		seen[k] = body
	}
	add(base)
	// A letter changed at offsets all over the body.
	for i := range base {
		if c := base[i]; c >= 'a' && c <= 'y' && i%23 == 0 {
			body := slices.Clone(base)
			body[i]++
			add(body)
		}
	}
	// Numbers, nested and at the top level, and arrays in other orders.
	for n := range 2000 {
		add(fmt.Appendf(nil, `{"model":"m","max_tokens":1,"temperature":%d,"x":[%d,{"y":%d}]}`, n, n%7, n/7))
		add(fmt.Appendf(nil, `{"model":"m","x":[%d,%d,%d]}`, n%13, n/13%13, n/169))
	}
	long := strings.Repeat("z", 200)
	for _, body := range []string{
		`{"model":"m","a":"` + long + `"}`, `{"model":"m","a":["` + long + `"]}`, `{"model":"m","a":[["` + long + `"]]}`,
		`{"model":"m","a":{"a":"` + long + `"}}`, `{"model":"m","a":[{"a":"` + long + `"}]}`, `{"model":"m","b":"` + long + `"}`,
		`{"model":"m","a":"` + long + `","b":1}`, `{"model":"m","a":["` + long + `",1]}`, `{"model":"m","a":[1,"` + long + `"]}`,
	} {
		add([]byte(body))
	}
	if len(seen) < 5500 {
		t.Fatalf("only %d distinct bodies signed", len(seen))
	}
}

func TestNormalizeBeta(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "",
		"a":                 "a",
		"a,b":               "a,b",
		"b,a":               "a,b",
		"a,a":               "a",
		" a , b ,":          "a,b",
		",":                 "",
		"a,,b":              "a,b",
		"claude-code-1,x-2": "claude-code-1,x-2",
		"x-2,claude-code-1": "claude-code-1,x-2",
		"a ,b":              "a,b",
		"a\t":               "a",
	} {
		// Twice: the second answer is the one kept from the first.
		for range 2 {
			if got := normalizeBeta(in); got != want {
				t.Errorf("normalizeBeta(%q) = %q, want %q", in, got, want)
			}
		}
	}
}

// TestMembersAreSortedStably builds objects of up to forty members, with
// keys that share long prefixes, repeat, or differ past the eighth byte, and
// values short and long: the canonical form lists the members sorted by key,
// repeated keys in their order, and signs as the body does.
func TestMembersAreSortedStably(t *testing.T) {
	keys := []string{"a", "b", "type", "text", "abcdefgh", "abcdefghi", "abcdefghj", "abcdefgh_long_key_1",
		"abcdefgh_long_key_2", "description", "descriptions", "input_schema", "z", "cache_control"}
	values := []string{`1`, `"x"`, `null`, `"` + strings.Repeat("v", 40) + `"`, `"` + strings.Repeat("w", 600) + `"`,
		`[1,2]`, `{"q":1,"p":2}`}
	state := uint64(7)
	next := func(n int) int {
		state ^= state << 13
		state ^= state >> 7
		state ^= state << 17
		return int(state % uint64(n))
	}
	type pair struct{ k, v string }
	for round := range 400 {
		n := 1 + round%40
		pairs := make([]pair, n)
		var body strings.Builder
		body.WriteString(`{"model":"m","x":{`)
		for i := range pairs {
			pairs[i] = pair{`"` + keys[next(len(keys))] + `"`, values[next(len(values))]}
			if i > 0 {
				body.WriteByte(',')
			}
			body.WriteString(pairs[i].k + ":" + pairs[i].v)
		}
		body.WriteString("}}")
		canon, err := canonical([]byte(body.String()), nil)
		if err != nil {
			t.Fatal(err)
		}
		x := rawjson.Field(canon, "x")
		var got []pair
		o := rawjson.NewObject(x)
		for k, v, ok := o.Next(); ok; k, v, ok = o.Next() {
			got = append(got, pair{`"` + string(k) + `"`, string(v)})
		}
		want := slices.Clone(pairs)
		slices.SortStableFunc(want, func(a, b pair) int { return strings.Compare(a.k, b.k) })
		for i := range want {
			if c, err := canonical([]byte(`{"v":`+want[i].v+`}`), nil); err == nil {
				want[i].v = string(rawjson.Field(c, "v"))
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s:\ncanonical %s", body.String(), x)
		}
		for _, inline := range []int{0, 17, inlineMax} {
			if signWith(t, []byte(body.String()), inline, "c", "") != signWith(t, canon, inline, "c", "") {
				t.Fatalf("inline %d: %s signs unlike its canonical form", inline, body.String())
			}
		}
	}
}
