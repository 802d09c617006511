package intake

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// resetKnown empties the cache of known values.
func resetKnown() { known.Reset() }

// largeBody is a request whose "tools" and "system" are larger than
// knownMin, with tools' members in an order the canonical form changes.
func largeBody(extra string) []byte {
	var tools []string
	for i := range 12 {
		tools = append(tools, fmt.Sprintf(`{"name":"tool_%d","description":"%s","input_schema":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}}`, i, strings.Repeat("does things ", 8)))
	}
	return fmt.Appendf(nil, `{"model":"m","system":[{"type":"text","text":"%s"}],"tools":[%s],"messages":[{"role":"user","content":"hi"}]%s}`,
		strings.Repeat("be brief ", 150), strings.Join(tools, ","), extra)
}

// TestLargeValuesSeenBeforeAreNotWalkedAgain: the second signature of the
// same tools and system takes their canonical text from the cache, and
// signs exactly as the first walk did; a body that differs in them does not.
func TestLargeValuesSeenBeforeAreNotWalkedAgain(t *testing.T) {
	body := largeBody(fmt.Sprintf(`,"nonce":%q`, t.Name()))
	sign := func(b []byte) Key {
		t.Helper()
		_, k, err := Read(b, Options{Sign: true, Identity: "c", Owner: "c"})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	first := sign(body)
	before := known.Hits()
	if sign(body) != first {
		t.Fatal("the cached walk signs differently")
	}
	if hits := known.Hits() - before; hits != 2 {
		t.Fatalf("%d values taken from the cache, want 2 (tools and system)", hits)
	}
	// With nothing kept, the same signature.
	resetKnown()
	if signWith(t, body, inlineMax, "c", "") != first {
		t.Fatal("the signature depends on the cache")
	}
	// The same tools, written with other white space and member order,
	// are other bytes: walked afresh, they sign alike.
	reordered := strings.Replace(string(body), `"required":["path"]}}`, `"required":["path"] } }`, 1)
	if sign([]byte(reordered)) != first {
		t.Fatal("white space changed the signature")
	}
	changed := strings.Replace(string(body), "tool_3", "tool_x", 1)
	if sign([]byte(changed)) == first {
		t.Fatal("other tools signed alike")
	}
}

// TestCachedValueKeepsWhatTheWalkLearned: a thinking signature of this
// module's inside a large value is found whether the value is walked or
// taken from the cache.
func TestCachedValueKeepsWhatTheWalkLearned(t *testing.T) {
	body := largeBody(fmt.Sprintf(`,"x":{"signature":"claude-balancer:v1:abc","pad":%q}`, strings.Repeat("p", 2000)))
	for i := range 2 {
		p, _, err := Read(body, Options{Sign: true, Identity: "c", Owner: "c"})
		if err != nil || !p.ForeignThinking {
			t.Fatalf("walk %d: foreign %v, %v", i, p.ForeignThinking, err)
		}
	}
}

// TestCacheUnderConcurrentWalks: walks that share and fill the cache at once
// sign as a walk alone does, also once the cache is full and drops entries.
func TestCacheUnderConcurrentWalks(t *testing.T) {
	bodies := make([][]byte, 40)
	want := make([]Key, len(bodies))
	for i := range bodies {
		bodies[i] = largeBody(fmt.Sprintf(`,"tools":[{"n":%d,"d":%q}]`, i, strings.Repeat("d", knownMin)))
		want[i] = signWith(t, bodies[i], inlineMax, "c", "")
	}
	// A full cache, which drops an entry for each one added.
	pad := []byte(fmt.Sprintf(`{"model":"m","tools":[{"i":"%%06d","d":%q}]}`, strings.Repeat("f", knownMin)))
	for i := range knownEntries + 10 {
		if _, _, err := Read(fmt.Appendf(nil, string(pad), i), Options{Sign: true, Owner: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for r := range 3 * knownEntries / len(bodies) {
				i := (g*7 + r) % len(bodies)
				if _, k, err := Read(bodies[i], Options{Sign: true, Identity: "c", Owner: "c"}); err != nil || k != want[i] {
					errs <- fmt.Sprintf("body %d: %v", i, err)
					return
				}
				if r%10 == 0 {
					// Entries of their own, to fill the cache.
					_, _, _ = Read(largeBody(fmt.Sprintf(`,"tools":[{"g":%d,"r":%d,"d":%q}]`, g, r, strings.Repeat("f", knownMin))), Options{Sign: true, Owner: "c"})
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n, size := known.Size(); n > knownEntries || size > knownBytes {
		t.Errorf("the cache holds %d entries of %d bytes, more than %d and %d", n, size, knownEntries, knownBytes)
	}
}

// TestKnownValuesAreNotValidatedAgain: a body whose tools and system are
// ones validated before is read without walking them, with the same result;
// bytes that only start like a known value, or that follow one, are still
// judged.
func TestKnownValuesAreNotValidatedAgain(t *testing.T) {
	body := largeBody(fmt.Sprintf(`,"nonce":%q`, t.Name()))
	first, _, err := Read(body, Options{Owner: "c"})
	if err != nil {
		t.Fatal(err)
	}
	before := known.Hits()
	again, _, err := Read(body, Options{Owner: "c"})
	if err != nil || again != first {
		t.Fatalf("read again: %+v, %v; first %+v", again, err, first)
	}
	if hits := known.Hits() - before; hits != 2 {
		t.Fatalf("%d known values, want 2 (tools and system)", hits)
	}
	// Another client's body never meets them, nor does one read without
	// an owner.
	before = known.Hits()
	for _, owner := range []string{"d", ""} {
		if _, _, err := Read(body, Options{Owner: owner}); err != nil {
			t.Fatal(err)
		}
	}
	if hits := known.Hits() - before; hits != 0 {
		t.Fatalf("%d values of another owner's met", hits)
	}
	// The same start, then something else, and invalid.
	tools := bytes.Index(body, []byte(`"tools":[`)) + len(`"tools":`)
	broken := slices.Clone(body)
	copy(broken[tools+200:], `"unterminated`)
	if _, _, err := Read(broken, Options{Owner: "c"}); err == nil {
		t.Fatal("a broken value that starts like a known one was accepted")
	}
	// A known value, then what cannot follow it.
	end := bytes.Index(body, []byte(`,"messages"`))
	trailing := slices.Concat(body[:end], []byte(`]`), body[end:])
	if _, _, err := Read(trailing, Options{Owner: "c"}); err == nil {
		t.Fatal("a stray bracket after a known value was accepted")
	}
	// Known from a walk that did not sign: the first signature walks the
	// value and keeps its canonical text, the next takes it.
	other := largeBody(`,"x":{"pad":"` + strings.Repeat("q", knownMin) + `"}`)
	resetKnown()
	want := signWith(t, other, inlineMax, "c", "")
	resetKnown()
	if _, _, err := Read(other, Options{Owner: "c"}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, k, err := Read(other, Options{Sign: true, Identity: "c", Owner: "c"}); err != nil || k != want {
			t.Fatalf("signature %d differs (%v)", i, err)
		}
	}
}
