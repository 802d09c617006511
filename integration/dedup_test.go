package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
)

func (e *env) dedupStats() (joins, inFlight int) {
	e.t.Helper()
	_, b := e.get("/providers")
	var doc struct {
		Dedup struct {
			Joins    int `json:"joins"`
			InFlight int `json:"in_flight"`
		} `json:"dedup"`
	}
	_ = json.Unmarshal(b, &doc)
	return doc.Dedup.Joins, doc.Dedup.InFlight
}

// gated answers once the test opens the gate.
func gated(gate chan struct{}, text string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		<-gate
		okEither(text)(w, r, n)
	}
}

func TestIdenticalConcurrentRequestsShareOneCall(t *testing.T) {
	gate := make(chan struct{})
	up := newMock(t, gated(gate, "shared answer"))
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	const n = 6
	type reply struct {
		status int
		ct     string
		body   string
	}
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Half stream, half not; max_tokens differs (retry noise).
			b := []byte(fmt.Sprintf(`{"model":"m","max_tokens":%d,"messages":[{"role":"user","content":"same"}]%s}`,
				100+i, map[bool]string{true: `,"stream":true`, false: ""}[i%2 == 0]))
			resp, out := e.messages(b)
			replies[i] = reply{resp.StatusCode, resp.Header.Get("Content-Type"), string(out)}
		}(i)
	}
	waitFor(t, "every duplicate to join", func() bool { j, _ := e.dedupStats(); return j == n-1 })
	close(gate)
	wg.Wait()
	if up.count() != 1 {
		t.Fatalf("upstream calls: %d, want 1", up.count())
	}
	for i, r := range replies {
		if r.status != 200 {
			t.Fatalf("reply %d: %d %s", i, r.status, r.body)
		}
		if i%2 == 0 {
			if !strings.HasPrefix(r.ct, "text/event-stream") || r.body != strings.Join(sseEvents("shared answer"), "") && !strings.Contains(r.body, "shared answer") {
				t.Fatalf("stream reply %d: %s", i, r.body)
			}
		} else if !strings.Contains(r.body, `"text":"shared answer"`) {
			t.Fatalf("json reply %d: %s", i, r.body)
		}
	}
	waitFor(t, "groups to drain", func() bool { _, f := e.dedupStats(); return f == 0 })
}

func TestDifferentClientsOrBodiesAreNotShared(t *testing.T) {
	gate := make(chan struct{})
	up := newMock(t, gated(gate, "x"))
	e := start(t, fmt.Sprintf("client_keys k1 k2\nprovider a {\nbase_url %s\napi_key k\n}", up.URL))
	var wg sync.WaitGroup
	for _, tc := range [][2]string{{"k1", "same"}, {"k2", "same"}, {"k1", "other"}} {
		wg.Add(1)
		go func(key, text string) {
			defer wg.Done()
			e.messages([]byte(fmt.Sprintf(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":%q}]}`, text)), "X-Api-Key", key)
		}(tc[0], tc[1])
	}
	waitFor(t, "three upstream calls", func() bool { return up.count() == 3 })
	close(gate)
	wg.Wait()
	if j, _ := e.dedupStats(); j != 0 {
		t.Fatalf("joins = %d", j)
	}
}

func TestDedupOff(t *testing.T) {
	gate := make(chan struct{})
	up := newMock(t, gated(gate, "x"))
	e := start(t, fmt.Sprintf("dedup off\nprovider a {\nbase_url %s\napi_key k\n}", up.URL))
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); e.messages(body("m", false)) }()
	}
	waitFor(t, "three upstream calls", func() bool { return up.count() == 3 })
	close(gate)
	wg.Wait()
}

// TestTwinJoinsAStreamAfterItsBodyWentBack: a stream's body goes back to
// its pool at the commit point, so a streaming request is signed at intake
// (in the walk, or after it when "stream" is neither first nor last). An
// identical request that comes while the stream is open still joins it,
// after other bodies have reused the buffer.
func TestTwinJoinsAStreamAfterItsBodyWentBack(t *testing.T) {
	gate := make(chan struct{})
	events := sseEvents("held answer")
	up := newMock(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if !strings.Contains(string(mustRead(r)), "hold") {
			okEither("other")(w, r, n)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		// Through the first text delta: the balancer commits to the stream.
		writeSSE(w, events[:4])
		<-gate
		writeSSE(w, events[4:])
	})
	// A body used after it went back to the pool reads garbage.
	bufpool.SetPoison(true)
	t.Cleanup(func() { bufpool.SetPoison(false) })
	// A failed test lets the held streams end, so that the mock can close.
	var released sync.Once
	t.Cleanup(func() { released.Do(func() { close(gate) }) })
	e := start(t, fmt.Sprintf("provider a {\nbase_url %s\napi_key k\n}", up.URL))
	long := strings.Repeat("hold the line ", 300)
	for _, tc := range []struct{ name, body string }{
		{"stream last", fmt.Sprintf(`{"model":"m","max_tokens":64,"messages":[{"role":"user","content":%q}],"stream":true}`, long)},
		{"stream in the middle", fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}],"stream":true,"max_tokens":64,"system":%q}`, long+"2", long)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count()
			joins0, _ := e.dedupStats()
			first := make(chan string, 1)
			committed := make(chan struct{})
			go func() {
				req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/messages", strings.NewReader(tc.body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := e.client.Do(req)
				if err != nil {
					first <- err.Error()
					close(committed)
					return
				}
				defer resp.Body.Close()
				// The status line comes with the commit.
				close(committed)
				out, _ := io.ReadAll(resp.Body)
				first <- string(out)
			}()
			<-committed
			// Distinct bodies of the same size take buffers from the pool
			// meanwhile.
			for i := 0; i < 8; i++ {
				if resp, _ := e.messages([]byte(strings.ReplaceAll(tc.body, "hold", fmt.Sprintf("%04d", i)))); resp.StatusCode != 200 {
					t.Fatalf("other request: %d", resp.StatusCode)
				}
			}
			twin := make(chan string, 1)
			go func() {
				// White space puts the twin's body in a buffer of another
				// size, so that it never lands where the first one was.
				_, out := e.messages([]byte(strings.Replace(tc.body, `"max_tokens":64`, `"max_tokens":32`+strings.Repeat(" ", 20000), 1)))
				twin <- string(out)
			}()
			waitFor(t, "the twin to join", func() bool { j, _ := e.dedupStats(); return j == joins0+1 })
			gate <- struct{}{}
			for _, out := range []string{<-first, <-twin} {
				if !strings.Contains(out, "held answer") || !strings.Contains(out, "message_stop") {
					t.Fatalf("answer %.300s", out)
				}
			}
			if got := up.count() - before; got != 9 {
				t.Fatalf("upstream calls %d, want 9 (one for the stream and its twin, eight others)", got)
			}
		})
	}
}

func mustRead(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}
