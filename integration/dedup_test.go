package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
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
