package balancer

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// stubTransport answers every request at once, from memory.
type stubTransport struct {
	header http.Header
	body   []byte
}

func (s *stubTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: s.header.Clone(), Body: io.NopCloser(bytes.NewReader(s.body)), ContentLength: int64(len(s.body))}, nil
}

type discardOutput struct{}

func (discardOutput) Start(int, http.Header, bool) error { return nil }
func (discardOutput) Body([]byte) error                  { return nil }
func (discardOutput) Event(relay.Event, bool) error      { return nil }

// BenchmarkQuotaOverhead serves Claude Code's request through three
// subscription accounts under the headroom strategy, from an answer without
// quota headers ("plain") and the same answer with them ("quota"): the
// difference is what reading the headers and ordering by headroom cost. It
// reports CPU per request, so that the two can be compared in one run.
func BenchmarkQuotaOverhead(b *testing.B) {
	raw, err := os.ReadFile("../testdata/claude-code-2.1.332-request.json")
	if err != nil {
		b.Fatal(err)
	}
	var fx struct {
		Header map[string]string `json:"headers"`
		Body   json.RawMessage   `json:"body"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		b.Fatal(err)
	}
	body := bytes.Replace(fx.Body, []byte(`"stream":true`), []byte(`"stream":false`), 1)
	answer := []byte(`{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-5-5","content":[{"type":"text","text":"` +
		strings.Repeat("ok ", 300) + `"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12000,"output_tokens":300,"cache_read_input_tokens":11000}}`)
	plain := http.Header{"Content-Type": {"application/json"}, "Request-Id": {"req_1"}}
	withQuota := plain.Clone()
	for k, v := range map[string]string{
		"anthropic-ratelimit-unified-status": "allowed", "anthropic-ratelimit-unified-reset": "1999999999",
		"anthropic-ratelimit-unified-representative-claim": "five_hour",
		"anthropic-ratelimit-unified-5h-utilization":       "0.42", "anthropic-ratelimit-unified-5h-reset": "1999999999",
		"anthropic-ratelimit-unified-5h-status":      "allowed",
		"anthropic-ratelimit-unified-7d-utilization": "0.12", "anthropic-ratelimit-unified-7d-reset": "1999999999",
		"anthropic-ratelimit-unified-7d-status": "allowed",
	} {
		withQuota.Set(k, v)
	}
	for _, tc := range []struct {
		name   string
		header http.Header
	}{{"plain", plain}, {"quota", withQuota}} {
		b.Run(tc.name, func(b *testing.B) {
			var providers []ProviderConfig
			for _, n := range []string{"a", "b", "c"} {
				providers = append(providers, ProviderConfig{Name: n, BaseURL: "http://" + n + ".invalid", AuthToken: "tok-" + n})
			}
			bal, err := New(Config{Name: "bench-quota-" + tc.name, Providers: providers, Strategy: StrategyHeadroom}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer bal.Close()
			for _, p := range bal.providers {
				p.transport = &stubTransport{header: tc.header, body: answer}
			}
			hdr := http.Header{}
			for k, v := range fx.Header {
				hdr.Set(k, v)
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				peek, err := PeekBody(body)
				if err != nil {
					b.Fatal(err)
				}
				res := bal.Serve(b.Context(), &Request{Body: body, Peek: peek, Header: hdr}, discardOutput{})
				if res.Status != 200 {
					b.Fatalf("status %d", res.Status)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
