package intake

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// largeBody is a request whose "tools" and "system" are larger than
// cachedMin, with tools' members in an order the canonical form changes.
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
		_, k, err := Read(b, Options{Sign: true, Identity: "c"})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	first := sign(body)
	before := cacheHits.Load()
	if sign(body) != first {
		t.Fatal("the cached walk signs differently")
	}
	if hits := cacheHits.Load() - before; hits != 2 {
		t.Fatalf("%d values taken from the cache, want 2 (tools and system)", hits)
	}
	// Without the cache (every value written out in full, as the tests'
	// canonical text is), the same signature.
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
		p, _, err := Read(body, Options{Sign: true, Identity: "c"})
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
		bodies[i] = largeBody(fmt.Sprintf(`,"tools":[{"n":%d,"d":%q}]`, i, strings.Repeat("d", cachedMin)))
		want[i] = signWith(t, bodies[i], inlineMax, "c", "")
	}
	// A full cache, which drops an entry for each one added.
	pad := []byte(fmt.Sprintf(`{"model":"m","tools":[{"i":"%%06d","d":%q}]}`, strings.Repeat("f", cachedMin)))
	for i := range cacheEntries + 10 {
		if _, _, err := Read(fmt.Appendf(nil, string(pad), i), Options{Sign: true}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for r := range 3 * cacheEntries / len(bodies) {
				i := (g*7 + r) % len(bodies)
				if _, k, err := Read(bodies[i], Options{Sign: true, Identity: "c"}); err != nil || k != want[i] {
					errs <- fmt.Sprintf("body %d: %v", i, err)
					return
				}
				if r%10 == 0 {
					// Entries of their own, to fill the cache.
					_, _, _ = Read(largeBody(fmt.Sprintf(`,"tools":[{"g":%d,"r":%d,"d":%q}]`, g, r, strings.Repeat("f", cachedMin))), Options{Sign: true})
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	canonCache.mu.RLock()
	defer canonCache.mu.RUnlock()
	if n := len(canonCache.m); n > cacheEntries {
		t.Errorf("the cache holds %d entries, more than %d", n, cacheEntries)
	}
}
