package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// TestBodiesNeverMix: request bodies are read into pooled buffers. Many
// distinct bodies of many sizes, concurrently, streamed or not, with
// de-duplication on and off, each reach the provider whole and unmixed, and
// each client gets the answer to its own body.
func TestBodiesNeverMix(t *testing.T) {
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		var req struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		text := "MALFORMED"
		if json.NewDecoder(r.Body).Decode(&req) == nil && len(req.Messages) == 1 {
			words := strings.Fields(req.Messages[0].Content)
			text = words[0]
			for _, w := range words {
				if w != words[0] {
					text = "MIXED"
				}
			}
		}
		okEither(text)(w, r, n)
	})
	// A body used after it went back to the pool reads garbage, and so does
	// an event whose buffer the stream reader gave back.
	bufpool.SetPoison(true)
	sse.SetPoison(true)
	t.Cleanup(func() { bufpool.SetPoison(false); sse.SetPoison(false) })
	for _, dedup := range []string{"", "dedup off"} {
		e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}\n%s", up.URL, dedup))
		const clients, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan string, clients*each)
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					id := fmt.Sprintf("c%di%d", c, i)
					// From a few bytes to about 110 KB: across the pool's
					// classes, a large body often after a small one.
					words := 1 << (i % 15)
					b := body("m", i%2 == 0)
					b = []byte(strings.Replace(string(b), `"hello"`, `"`+strings.Repeat(id+" ", words)+`"`, 1))
					resp, out := e.messages(b)
					if resp.StatusCode != 200 || !strings.Contains(string(out), `"`+id+`"`) {
						errs <- fmt.Sprintf("%s (%d words): status %d, answer %.200s", id, words, resp.StatusCode, out)
					}
				}
			}(c)
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Errorf("%q: %s", dedup, msg)
		}
	}
}
