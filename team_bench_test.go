package claudebalancer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkClientOverhead serves Claude Code's streamed request through the
// handler for an anonymous client_keys key and for a named client with a
// rate and a tokens limit (never reached), side by side on one balancer and
// one upstream: the difference is what identifying, admitting and charging
// a named client costs. Each request's body is distinct, so that none is
// answered by de-duplication. It reports CPU per request.
func BenchmarkClientOverhead(b *testing.B) {
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
	body := append([]byte(`{"bench":"0000000000",`), compact.Bytes()[1:]...)
	counterAt := len(`{"bench":"`)

	stream, err := os.ReadFile("testdata/anthropic-stream-thinking-text-tool.sse")
	if err != nil {
		b.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(stream)
	}))
	defer up.Close()

	cfg := fmt.Sprintf(`{"admin":{"disabled":true},"logging":{"logs":{"default":{"level":"ERROR"}}},
	"storage":{"module":"file_system","root":%q},
	"apps":{"http":{"servers":{"bench":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{
		"handler":"claude_balancer","name":"bench-clients",
		"providers":[{"name":"up","base_url":%q,"api_key":"sk-up"}],
		"client_keys":["anon-key"],
		"clients":[{"name":"alice","keys":["alice-key"],
			"rate":{"count":1000000000,"window":3600000000000},
			"tokens":{"count":1000000000000,"window":18000000000000}}]
	}]}]}}}}}`, b.TempDir(), up.URL)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = caddy.Stop() }()
	h := liveHandler("bench-clients")
	if h == nil {
		b.Fatal("handler not provisioned")
	}

	n := 0
	serve := func(b *testing.B, key string) {
		n++
		copy(body[counterAt:], fmt.Sprintf("%010d", n))
		r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/v1/messages", bytes.NewReader(body))
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Anthropic-Version", "2023-06-01")
		r.Header.Set("X-Api-Key", key)
		w := &sink{header: http.Header{}}
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
		if err := h.ServeHTTP(w, r, nil); err != nil || w.status != http.StatusOK || w.n != len(stream) {
			b.Fatalf("status %d, %d of %d bytes, %v", w.status, w.n, len(stream), err)
		}
	}
	for _, tc := range []struct{ name, key string }{{"anonymous", "anon-key"}, {"named", "alice-key"}} {
		b.Run(tc.name, func(b *testing.B) {
			for range 50 {
				serve(b, tc.key)
			}
			b.ReportAllocs()
			start := cpuTime()
			b.ResetTimer()
			for range b.N {
				serve(b, tc.key)
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu_us/op")
		})
	}
	if st := h.team.Clients()[0].Status(time.Now()); st.Requests == 0 || st.OutputTokens == 0 {
		b.Fatal("alice was never charged")
	}
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
