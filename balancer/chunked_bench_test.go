package balancer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// BenchmarkChunkedBurst relays a stream of 2,000 deltas that a provider
// sent as one chunk per event, all at once, as a server that flushes each
// event writes them: the transport's chunked reader and its read buffer are
// on the path of every event.
func BenchmarkChunkedBurst(b *testing.B) {
	events := deltaEvents(2000)
	whole := bytes.Join(events, nil)
	up := chunkedUpstream(events)
	defer up.Close()
	bal := oneProvider(b, "chunked-burst", ProviderConfig{BaseURL: up.URL})
	req := streamRequest(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		out := &countingOutput{}
		res := bal.Serve(context.Background(), req, out)
		if res.Status != 200 || out.n != len(whole) {
			b.Fatalf("status %d, %d of %d bytes", res.Status, out.n, len(whole))
		}
	}
}

type countingOutput struct{ n int }

func (o *countingOutput) Start(int, http.Header, bool) error { return nil }
func (o *countingOutput) Body(p []byte) error                { o.n += len(p); return nil }
func (o *countingOutput) Event(ev relay.Event, _ bool) error { o.n += len(ev.Raw); return nil }

// BenchmarkOpenAIStream relays a Chat Completions stream of 50 text chunks,
// flushed one by one, through a type openai provider: the converter reads
// each chunk and the relay hands on what it makes.
func BenchmarkOpenAIStream(b *testing.B) {
	bal := oneProvider(b, "openai-stream", ProviderConfig{BaseURL: chatUpstream(b, 50), Type: "openai"})
	req := streamRequest(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		out := &countingOutput{}
		r := *req // the attempt loop lets go of the body once committed
		res := bal.Serve(context.Background(), &r, out)
		if res.Status != 200 || out.n < 50*60 {
			b.Fatalf("status %d, %d bytes: %+v", res.Status, out.n, res)
		}
	}
}

// chatUpstream starts a provider that answers a Chat Completions stream of
// n text chunks, flushing each, on a connection kept alive, and returns
// its URL.
func chatUpstream(tb testing.TB, n int) string {
	chunk := func(delta, finish string) []byte {
		return []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1767225600,"model":"up","system_fingerprint":"fp_1","choices":[{"index":0,"delta":` +
			delta + `,"logprobs":null,"finish_reason":` + finish + `}]}` + "\n\n")
	}
	events := [][]byte{chunk(`{"role":"assistant","content":""}`, "null")}
	for i := range n {
		events = append(events, chunk(fmt.Sprintf(`{"content":" a few words %d"}`, i), "null"))
	}
	events = append(events, chunk(`{}`, `"stop"`),
		[]byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":37224,"completion_tokens":92}}`+"\n\n"),
		[]byte("data: [DONE]\n\n"))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range events {
			_, _ = w.Write(ev)
			w.(http.Flusher).Flush()
		}
	}))
	tb.Cleanup(up.Close)
	return up.URL
}
