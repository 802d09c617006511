package claudebalancer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The benchmarks below serve Claude Code's streamed request through the
// handler, called directly with a provisioned config, against a local
// upstream, and compare two variants of one request side by side in one
// run. Each request's body is distinct, so that none is answered by
// de-duplication. They report CPU per request.

// benchEnv is a loaded config with two balancers of three providers each
// under the headroom strategy: "bench-plain", whose upstream answers
// without quota headers, and "bench-quota", whose upstream sends a
// subscription account's. Both know an anonymous key and a named client
// with a rate and a tokens limit (never reached).
type benchEnv struct {
	body      []byte
	counterAt int
	stream    []byte
	// burst is a stream of 2,000 text deltas.
	burst []byte
	// jsonBody is body asking for a JSON answer ("stream":false), with its
	// counter at the same place; answer is that answer.
	jsonBody, answer []byte
	n                int
	// named and quota count the requests of a named client and to the
	// balancer whose upstream sends quota headers.
	named, quota int
}

func newBenchEnv(b *testing.B) *benchEnv {
	raw, err := os.ReadFile("testdata/claude-code-2.1.332-request.json")
	if err != nil {
		b.Fatal(err)
	}
	var fx struct {
		Body json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		b.Fatal(err)
	}
	// A fixed-width counter in an extra field makes every body distinct.
	var compact bytes.Buffer
	if err := json.Compact(&compact, fx.Body); err != nil {
		b.Fatal(err)
	}
	e := &benchEnv{body: append([]byte(`{"bench":"0000000000",`), compact.Bytes()[1:]...), counterAt: len(`{"bench":"`)}
	if e.stream, err = os.ReadFile("testdata/anthropic-stream-thinking-text-tool.sse"); err != nil {
		b.Fatal(err)
	}
	e.jsonBody = bytes.Replace(e.body, []byte(`"stream":true`), []byte(`"stream":false`), 1)
	if bytes.Equal(e.jsonBody, e.body) {
		b.Fatal(`the fixture has no "stream":true`)
	}
	e.answer = []byte(`{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"` +
		strings.Repeat("A few words of an answer. ", 60) + `"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":300}}`)
	quotaHeader, plainHeader := http.Header{}, http.Header{}
	for k, v := range map[string]string{
		"anthropic-ratelimit-unified-status": "allowed", "anthropic-ratelimit-unified-reset": "1999999999",
		"anthropic-ratelimit-unified-representative-claim": "five_hour",
		"anthropic-ratelimit-unified-5h-utilization":       "0.42", "anthropic-ratelimit-unified-5h-reset": "1999999999",
		"anthropic-ratelimit-unified-5h-status":      "allowed",
		"anthropic-ratelimit-unified-7d-utilization": "0.12", "anthropic-ratelimit-unified-7d-reset": "1999999999",
		"anthropic-ratelimit-unified-7d-status": "allowed",
	} {
		quotaHeader.Set(k, v)
		// The plain answers carry as many headers of the same sizes, so
		// that the comparison leaves out what moving headers through HTTP
		// costs any proxy, and keeps what reading them costs the balancer.
		plainHeader.Set("x-ratelimit-padding-"+strings.TrimPrefix(k, "anthropic-ratelimit-"), v)
	}
	e.burst = burstStream(2000)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		if strings.HasPrefix(r.URL.Path, "/burst/") {
			_, _ = w.Write(e.burst)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/json/") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(e.answer)
			return
		}
		// Built once, so that the upstream's own cost stays out of the
		// comparison as far as it can.
		extra := plainHeader
		if strings.HasPrefix(r.URL.Path, "/quota/") {
			extra = quotaHeader
		}
		for k, v := range extra {
			w.Header()[k] = v
		}
		_, _ = w.Write(e.stream)
	}))
	b.Cleanup(up.Close)
	handler := func(name, prefix string, extra ...string) string {
		return fmt.Sprintf(`{"match":[{"path":["/%s/*"]}],"handle":[{
			"handler":"claude_balancer","name":%q,"strategy":"headroom",`+strings.Join(extra, "")+`
			"providers":[{"name":"a","base_url":"%[3]s/%[4]s/a","api_key":"sk-a"},
				{"name":"b","base_url":"%[3]s/%[4]s/b","api_key":"sk-b"},
				{"name":"c","base_url":"%[3]s/%[4]s/c","api_key":"sk-c"}],
			"client_keys":["anon-key"],
			"clients":[{"name":"alice","keys":["alice-key"],
				"rate":{"count":1000000000,"window":3600000000000},
				"tokens":{"count":1000000000000,"window":18000000000000}}]}]}`, name, name, up.URL, prefix)
	}
	cfg := fmt.Sprintf(`{"admin":{"disabled":true},"logging":{"logs":{"default":{"level":"ERROR"}}},
	"storage":{"module":"file_system","root":%q},
	"apps":{"http":{"servers":{"bench":{"listen":["127.0.0.1:0"],"routes":[%s,%s,%s,%s,%s,%s]}}}}}`,
		b.TempDir(), handler("bench-plain", "plain"), handler("bench-quota", "quota"), handler("bench-burst", "burst"),
		handler("bench-nodedup", "plain", `"dedup":{"off":true},`),
		handler("bench-json", "json"), handler("bench-json-nodedup", "json", `"dedup":{"off":true},`))
	if err := caddy.Load([]byte(cfg), true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	return e
}

// serve sends one distinct request through a balancer with a key.
func (e *benchEnv) serve(b *testing.B, h *Handler, key string) {
	e.n++
	if key == "alice-key" {
		e.named++
	}
	if h.bal.Name == "bench-quota" {
		e.quota++
	}
	body, want := e.body, e.stream
	if strings.HasPrefix(h.bal.Name, "bench-json") {
		body, want = e.jsonBody, e.answer
	}
	copy(body[e.counterAt:], fmt.Sprintf("%010d", e.n))
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages", bytes.NewReader(body))
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Anthropic-Version", "2023-06-01")
	r.Header.Set("X-Api-Key", key)
	w := &sink{header: http.Header{}}
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
	if err := h.ServeHTTP(w, r, nil); err != nil || w.status != http.StatusOK || w.n != len(want) {
		b.Fatalf("status %d, %d of %d bytes, %v", w.status, w.n, len(want), err)
	}
}

// compare runs each variant as a sub-benchmark, after a warm-up.
func (e *benchEnv) compare(b *testing.B, variants []benchVariant) {
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			h := liveHandler(v.balancer)
			if h == nil {
				b.Fatalf("balancer %s not provisioned", v.balancer)
			}
			for range 50 {
				e.serve(b, h, v.key)
			}
			b.ReportAllocs()
			start := cpuTime()
			b.ResetTimer()
			for range b.N {
				e.serve(b, h, v.key)
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu_us/op")
		})
	}
}

type benchVariant struct{ name, balancer, key string }

// BenchmarkClientOverhead compares an anonymous client_keys key with a named
// client with both limits: the difference is what identifying, admitting
// and charging a named client costs.
func BenchmarkClientOverhead(b *testing.B) {
	e := newBenchEnv(b)
	e.compare(b, []benchVariant{{"anonymous", "bench-plain", "anon-key"}, {"named", "bench-plain", "alice-key"}})
	if st := liveHandler("bench-plain").team.Clients()[0].Status(time.Now()); e.named > 0 && (st.Requests == 0 || st.OutputTokens == 0) {
		b.Fatal("alice was never charged")
	}
}

// BenchmarkQuotaHeaders compares answers carrying a subscription account's
// quota headers with the same answers carrying as many other headers of the
// same sizes: the difference is what reading the quota headers and ordering
// the candidates by headroom cost.
func BenchmarkQuotaHeaders(b *testing.B) {
	e := newBenchEnv(b)
	e.compare(b, []benchVariant{{"plain", "bench-plain", "anon-key"}, {"quota", "bench-quota", "anon-key"}})
	if q := liveHandler("bench-quota").bal.Provider("a").Quota(); e.quota > 0 && len(q.Windows) == 0 {
		b.Fatal("the quota headers were not read")
	}
}

// BenchmarkDedupOverhead compares the defaults with de-duplication off, for
// requests that have no twin, streamed and JSON: the difference is what
// looking for one costs (and keeping the answer for one that might come).
func BenchmarkDedupOverhead(b *testing.B) {
	e := newBenchEnv(b)
	e.compare(b, []benchVariant{{"defaults", "bench-plain", "anon-key"}, {"off", "bench-nodedup", "anon-key"},
		{"json-defaults", "bench-json", "anon-key"}, {"json-off", "bench-json-nodedup", "anon-key"}})
}

// sink is a ResponseWriter that counts what it is given.
type sink struct {
	header http.Header
	status int
	n      int
}

func (s *sink) Header() http.Header { return s.header }
func (s *sink) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *sink) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	s.n += len(p)
	return len(p), nil
}
func (s *sink) Flush() {}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStreamBurst relays one stream of 2,000 text deltas, sent by the
// upstream in one go, through the handler (de-duplication on, the default):
// what the balancer spends per relayed event.
func BenchmarkStreamBurst(b *testing.B) {
	e := newBenchEnv(b)
	h := liveHandler("bench-burst")
	if h == nil {
		b.Fatal("balancer bench-burst not provisioned")
	}
	const deltas = 2000
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"0000000000"}}`)
	at := bytes.Index(body, []byte("0000000000"))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		copy(body[at:], fmt.Sprintf("%010d", i))
		r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages", bytes.NewReader(body))
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Api-Key", "anon-key")
		w := &sink{header: http.Header{}}
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
		if err := h.ServeHTTP(w, r, nil); err != nil || w.status != http.StatusOK || w.n != len(e.burst) {
			b.Fatalf("status %d, %d of %d bytes, %v", w.status, w.n, len(e.burst), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*deltas), "ns/event")
}

// burstStream is a streamed message with n text deltas.
func burstStream(n int) []byte {
	var b bytes.Buffer
	b.WriteString("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n")
	b.WriteString("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
	for range n {
		b.WriteString("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" a few words of text\"}}\n\n")
	}
	b.WriteString("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n")
	b.WriteString("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2000}}\n\n")
	b.WriteString("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	return b.Bytes()
}
