package integration

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
)

// countConns counts the TCP connections a mock's server accepts.
func countConns(n *atomic.Int64) func(*http.Server) {
	return func(s *http.Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				n.Add(1)
			}
		}
	}
}

func TestStreamsGiveTheirUpstreamConnectionBack(t *testing.T) {
	for _, mode := range []string{"", "dedup off"} {
		t.Run("mode="+mode, func(t *testing.T) {
			// The provider ends the chunked body a moment after message_stop,
			// as one behind a slower network would: the relay must read the
			// end of the body for the connection to be used again.
			var conns atomic.Int64
			up := newMockWith(t, func(w http.ResponseWriter, r *http.Request, n int) {
				writeSSE(w, sseEvents("reused"))
				time.Sleep(5 * time.Millisecond)
			}, countConns(&conns))
			e := start(t, fmt.Sprintf("%s\nprovider a {\nbase_url %s\napi_key k\n}", mode, up.URL))
			for i := range 20 {
				resp, out := e.messages(body("m", true, fmt.Sprintf(`"metadata":{"user_id":"u%d"}`, i)))
				if resp.StatusCode != 200 || !strings.Contains(string(out), "message_stop") {
					t.Fatalf("stream %d: %d %s", i, resp.StatusCode, out)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Fatalf("the provider accepted %d connections for 20 sequential streams, want 1", n)
			}
		})
	}
}

func TestEachRelayedEventIsParsedOnce(t *testing.T) {
	events := sseEvents("parsed once")
	release := make(chan struct{})
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		<-release
		writeSSE(w, events)
	})
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	before := anthropic.Inspections()
	var wg sync.WaitGroup
	results := make([]string, 4)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, out := e.messages(body("m", true))
			results[i] = string(out)
		}(i)
	}
	// Three identical requests join the first; then the provider answers.
	waitFor(t, "the joiners", func() bool { joins, _ := e.dedupStats(); return joins == 3 })
	close(release)
	wg.Wait()
	for i, out := range results {
		if out != strings.Join(events, "") {
			t.Fatalf("client %d got %s", i, out)
		}
	}
	if up.count() != 1 {
		t.Fatalf("%d upstream calls", up.count())
	}
	if n := anthropic.Inspections() - before; n != int64(len(events)) {
		t.Fatalf("%d events relayed to 4 clients were parsed %d times", len(events), n)
	}
}
