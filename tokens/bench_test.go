package tokens

import (
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pkoukk/tiktoken-go"
)

// bench200kText is the text size that gives about 200,000 cl100k_base tokens of synthetic conversation.
const bench200kText = 720 << 10

var bench200k = sync.OnceValues(func() (*synth, []byte) {
	s := synthConversation(1, bench200kText)
	return s, s.body()
})

func mustCounter(tb testing.TB, opt Options) *Counter {
	tb.Helper()
	c, err := New(opt)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func mustCount(tb testing.TB, c *Counter, body []byte) int {
	tb.Helper()
	n, err := c.Count(body)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkCountCold200k counts a 200k-token conversation with an empty cache.
func BenchmarkCountCold200k(b *testing.B) {
	_, body := bench200k()
	c := mustCounter(b, Options{})
	n := mustCount(b, c, body)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		coldCounter(c)
		runtime.GC()
		b.StartTimer()
		mustCount(b, c, body)
	}
	b.ReportMetric(float64(n), "tokens")
}

// coldCounter empties c's block cache and its encoder's piece memo, so the next count starts from nothing.
func coldCounter(c *Counter) {
	c.cache = newLRU(DefaultCacheSize)
	if e, ok := c.enc.(*cl100k); ok {
		c.enc = &cl100k{pairs: e.pairs, short: e.short, long: e.long, memo: new([memoSlots]atomic.Uint64), seed: e.seed}
	}
}

// BenchmarkCountWarm200k counts the same conversation grown by one turn, with the cache primed by the
// previous count, as a client asks after each turn.
func BenchmarkCountWarm200k(b *testing.B) {
	s, body := bench200k()
	c := mustCounter(b, Options{})
	grown := synthConversation(1, bench200kText)
	grown.addTurn()
	next := grown.body()
	b.SetBytes(int64(len(next)))
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		coldCounter(c)
		mustCount(b, c, body)
		runtime.GC() // the priming's garbage is not the warm count's cost
		b.StartTimer()
		mustCount(b, c, next)
	}
	b.ReportMetric(float64(len(next)-len(body)), "new-bytes")
	_ = s
}

// BenchmarkEncodeBaseline is one tiktoken-go Encode of the text the 200k conversation counts.
func BenchmarkEncodeBaseline(b *testing.B) {
	s, _ := bench200k()
	text := strings.Join(s.texts, "\n")
	useOfflineLoader()
	tk, err := tiktoken.GetEncoding(EncodingCL100K)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	n := 0
	for range b.N {
		n = len(tk.Encode(text, nil, nil))
	}
	b.ReportMetric(float64(n), "tokens")
}

func fixtureBody(tb testing.TB) []byte {
	tb.Helper()
	raw, err := os.ReadFile("../testdata/claude-code-2.1.332-request.json")
	if err != nil {
		tb.Fatal(err)
	}
	var f struct{ Body json.RawMessage }
	if err := json.Unmarshal(raw, &f); err != nil {
		tb.Fatal(err)
	}
	return f.Body
}

// BenchmarkCountFixture counts a real Claude Code request, cold and warm.
func BenchmarkCountFixture(b *testing.B) {
	body := fixtureBody(b)
	c := mustCounter(b, Options{})
	b.SetBytes(int64(len(body)))
	b.Run("cold", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			coldCounter(c)
			b.StartTimer()
			mustCount(b, c, body)
		}
	})
	b.Run("warm", func(b *testing.B) {
		mustCount(b, c, body)
		b.ResetTimer()
		for range b.N {
			mustCount(b, c, body)
		}
	})
	// Concurrent warm counts on one Counter: the cache's shard locks and the encoder's shared tables under
	// contention.
	b.Run("warm-parallel", func(b *testing.B) {
		mustCount(b, c, body)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mustCount(b, c, body)
			}
		})
	})
}
