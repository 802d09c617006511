package bench

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The tests in this file check the harness itself and always run (about
// half a second).

// TestEveryTargetRelaysTheMockAnswerByteForByte: each site reaches its mock
// through its own proxy and returns exactly what the mock sent, so all are
// measured doing the same work.
func TestEveryTargetRelaysTheMockAnswerByteForByte(t *testing.T) {
	e := setup(t)
	for _, target := range targets {
		for _, mode := range modes {
			t.Run(target+"/"+mode, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodPost, e.base[target]+e.path, bytes.NewReader(e.body[mode].next()))
				if err != nil {
					t.Fatal(err)
				}
				req.Header = e.header.Clone()
				resp, err := e.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, got)
				}
				if !bytes.Equal(got, e.answer[mode]) {
					t.Fatalf("body differs from the mock's answer:\n got %d bytes: %.200q\nwant %d bytes: %.200q",
						len(got), got, len(e.answer[mode]), e.answer[mode])
				}
				via := resp.Header.Get("X-Claude-Balancer-Provider")
				want := map[string]string{targetBalancer: "m", targetBalancerNoDedup: "m", targetReverseProxy: ""}[target]
				if via != want {
					t.Errorf("X-Claude-Balancer-Provider = %q, want %q", via, want)
				}
				if rid := resp.Header.Get("Request-Id"); rid != mockHeaders.Get("Request-Id") {
					t.Errorf("Request-Id = %q, want the mock's", rid)
				}
			})
		}
	}
}

// TestConcurrentRequestsAreNeverMerged: with one client key for all and
// de-duplication on, concurrent requests still each reach the mock, because
// their bodies differ; and a warm pool opens no connection.
func TestConcurrentRequestsAreNeverMerged(t *testing.T) {
	e := setup(t)
	for _, mode := range modes {
		for _, target := range targets {
			m := e.mocks[target]
			if err := e.warm(e.base[target], m, target, mode, 4); err != nil {
				t.Fatal(err)
			}
			r, err := e.drive(e.base[target], m, target, mode, 64, 8, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.samples) != 64 {
				t.Errorf("%s %s: %d answers, want 64", target, mode, len(r.samples))
			}
			if r.clientConns > 8 {
				t.Errorf("%s %s: the client opened %d connections with 8 workers", target, mode, r.clientConns)
			}
		}
	}
}

// TestMockCountsConnections: the mock counts every TCP connection it
// accepts, once.
func TestMockCountsConnections(t *testing.T) {
	m := startMock()
	defer m.Close()
	for i := range 3 {
		tr := &http.Transport{Proxy: nil}
		for range 2 {
			resp, err := (&http.Client{Transport: tr}).Post(m.URL+"/none", "text/plain", nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		tr.CloseIdleConnections()
		if got := m.conns.Load(); got != int64(i+1) {
			t.Fatalf("after %d clients with two requests each: %d connections counted", i+1, got)
		}
	}
}

// TestBodiesAreDistinctClaudeCodeRequests: the comparison's body is Claude
// Code's request with tools dropped, about 30 KB, valid JSON with the same
// keys in the same order, and two bodies differ only in the nonce inside the
// last user message's text.
func TestBodiesAreDistinctClaudeCodeRequests(t *testing.T) {
	fx, err := loadFixture()
	if err != nil {
		t.Fatal(err)
	}
	var full object
	if err := json.Unmarshal(fx.full, &full); err != nil {
		t.Fatal(err)
	}
	for _, mode := range modes {
		d := fx.body[mode]
		if n := d.size(); n > compareBodySize || n < compareBodySize*9/10 {
			t.Errorf("%s body is %d bytes, want 90–100%% of %d", mode, n, compareBodySize)
		}
		a, b := d.next(), d.next()
		if bytes.Equal(a, b) {
			t.Fatalf("%s: two bodies are the same", mode)
		}
		if !bytes.Equal(a[:d.at], b[:d.at]) || !bytes.Equal(a[d.at+d.width:], b[d.at+d.width:]) {
			t.Errorf("%s: bodies differ outside the nonce", mode)
		}
		var got object
		if err := json.Unmarshal(a, &got); err != nil {
			t.Fatalf("%s body is not JSON: %v", mode, err)
		}
		if len(got) != len(full) {
			t.Fatalf("%s body has %d keys, the fixture %d", mode, len(got), len(full))
		}
		for i := range got {
			if got[i].key != full[i].key {
				t.Errorf("%s body key %d is %q, the fixture's %q", mode, i, got[i].key, full[i].key)
			}
			switch got[i].key {
			case "stream", "tools", "messages":
			default:
				if !bytes.Equal(got[i].value, full[i].value) {
					t.Errorf("%s body's %q differs from the fixture's", mode, got[i].key)
				}
			}
		}
		if want := map[string]string{modeJSON: "false", modeStream: "true"}[mode]; string(got.get("stream")) != want {
			t.Errorf("%s body has \"stream\":%s", mode, got.get("stream"))
		}
		if wantsStream(a) != (mode == modeStream) {
			t.Errorf("%s: the mock reads the stream flag wrong", mode)
		}
		var body struct {
			Messages []struct {
				Role    string `json:"role"`
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"messages"`
			Tools []json.RawMessage `json:"tools"`
		}
		if err := json.Unmarshal(a, &body); err != nil {
			t.Fatal(err)
		}
		if len(body.Tools) == 0 || len(fx.dropped) == 0 {
			t.Errorf("%s body keeps %d tools and drops %d", mode, len(body.Tools), len(fx.dropped))
		}
		last := body.Messages[0]
		if last.Role != "user" {
			t.Fatalf("the first message is %q", last.Role)
		}
		text := last.Content[len(last.Content)-1].Text
		if !strings.Contains(text, string(a[d.at:d.at+d.width])) {
			t.Errorf("%s: the nonce is not in the last user message's text %q", mode, text)
		}
	}
}

// TestRunStatsCrossThePipe: a run's summary reaches the test process intact.
func TestRunStatsCrossThePipe(t *testing.T) {
	r := run{elapsed: 2 * time.Second, cpu: 1500 * time.Millisecond, upstreamConns: 3, clientConns: 1}
	for i := range 100 {
		r.samples = append(r.samples, sample{latency: time.Duration(i+1) * time.Millisecond, ttfb: time.Duration(i+1) * time.Microsecond})
	}
	st, elapsed, err := decodeRun(strings.Fields(encodeRun(r)))
	if err != nil {
		t.Fatal(err)
	}
	want := r.stats()
	// CPU time crosses as the helper's own, not per request.
	want.cpuPerReq, want.peerCPU = 0, r.cpu
	if elapsed != r.elapsed || st != want {
		t.Errorf("decoded %+v over %v, want %+v over %v", st, elapsed, want, r.elapsed)
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	ds := func(ms ...int) []time.Duration {
		out := make([]time.Duration, len(ms))
		for i, m := range ms {
			out[i] = time.Duration(m) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty is zero", nil, 0.5, 0},
		{"single sample is every percentile", ds(7), 0.99, 7 * time.Millisecond},
		{"p50 of an even count is the lower middle", ds(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 100 is the 99th", ds(hundred...), 0.99, 99 * time.Millisecond},
		{"p99 of 10 is the largest", ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestMedianOfRounds(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"empty is zero", nil, 0},
		{"odd count takes the middle", []float64{3, 1, 2}, 2},
		{"even count averages the middle two", []float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// TestOpenAITargetConverts checks that the conversion path answers the same
// text as an Anthropic message and stream.
func TestOpenAITargetConverts(t *testing.T) {
	e := setup(t)
	for _, mode := range modes {
		req, err := http.NewRequest(http.MethodPost, e.base[targetBalancerOpenAI]+e.path, bytes.NewReader(e.body[mode].next()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = e.header.Clone()
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %v", mode, resp.StatusCode, err)
		}
		if mode == modeStream && (!bytes.Contains(b, []byte("event: message_stop")) || bytes.Count(b, []byte("text_delta")) != bytes.Count(e.answer[modeStream], []byte("text_delta"))) {
			t.Fatalf("stream (%d deltas): %s", bytes.Count(b, []byte("text_delta")), b[len(b)-min(len(b), 600):])
		}
		if mode == modeJSON && !bytes.Contains(b, []byte(`"type":"message"`)) {
			t.Fatalf("json: %s", b)
		}
	}
}
