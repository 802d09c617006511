package balancer

import (
	"bytes"
	"context"
	"net/http"
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
