package convert

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

func BenchmarkRequestClaudeCode(b *testing.B) {
	body := recordedBody(b, "../testdata/claude-code-2.1.332-request.json")
	for _, bc := range []struct {
		name string
		opt  Options
	}{
		{"default", Options{}},
		{"sanitize", Options{SanitizeSchema: true, Reasoning: "effort", InlineSystem: "merge"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			c0 := cpuTime()
			for b.Loop() {
				if _, err := Request(body, "deepseek-chat", bc.opt); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, c0)
		})
	}
}

// BenchmarkAppendRequestClaudeCode converts Claude Code's request into a
// pooled buffer: validated as it is read (AppendRequest), and known valid,
// as a body intake accepted is (AppendValidRequest); both once the session
// sent its tools before, and "valid-first" as the first request of a
// session, whose tools are read and kept.
func BenchmarkAppendRequestClaudeCode(b *testing.B) {
	body := recordedBody(b, "../testdata/claude-code-2.1.332-request.json")
	for _, v := range []struct {
		name         string
		valid, first bool
	}{{"validate", false, false}, {"valid", true, false}, {"valid-first", true, true}} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var buf []byte
			c0 := cpuTime()
			for b.Loop() {
				if v.first {
					toolsKept.Reset()
				}
				var err error
				if buf, err = appendRequest(buf[:0], body, "deepseek-chat", Options{}, v.valid); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, c0)
		})
	}
}

func BenchmarkStripForeignThinking(b *testing.B) {
	body := recordedBody(b, "../testdata/claude-code-2.1.332-request.json")
	b.Run("none", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			StripForeignThinking(body)
		}
	})
}

// longStream returns the events of a long upstream stream in OpenAI's
// shape: reasoning, text, then two tool calls with many argument pieces.
func longStream(reasoning, text, args int) []sse.Event {
	head := `{"id":"chatcmpl-Bx1aT3xtQ9jv2pK8LmN0oPqRsTuV","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7c2a1d3b9e","choices":[{"index":0,"delta":`
	tail := `,"logprobs":null,"finish_reason":null}]}`
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var evs []sse.Event
	add := func(delta string) { evs = append(evs, sse.Encode("", []byte(head+delta+tail))) }
	add(`{"role":"assistant","content":""}`)
	for i := range reasoning {
		add(`{"reasoning_content":` + q("step "+strconv.Itoa(i)+" of the plan,\n") + `}`)
	}
	for i := range text {
		add(`{"content":` + q(" word"+strconv.Itoa(i)) + `}`)
	}
	for k := range 2 {
		add(`{"tool_calls":[{"index":` + strconv.Itoa(k) + `,"id":"call_Qm3xN8vR2tY6wZ1aB4cD7eF` + strconv.Itoa(k) + `","type":"function","function":{"name":"Write","arguments":""}}]}`)
		add(`{"tool_calls":[{"index":` + strconv.Itoa(k) + `,"function":{"arguments":"{\"content\":\""}}]}`)
		for i := range args {
			add(`{"tool_calls":[{"index":` + strconv.Itoa(k) + `,"function":{"arguments":` + q(strings.Repeat("x", i%7)+`\n`) + `}}]}`)
		}
		add(`{"tool_calls":[{"index":` + strconv.Itoa(k) + `,"function":{"arguments":"\"}"}}]}`)
	}
	evs = append(evs, sse.Encode("", []byte(head+`{},"logprobs":null,"finish_reason":"tool_calls"}]}`)))
	evs = append(evs, sse.Encode("", []byte(`{"id":"chatcmpl-x","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9000,"completion_tokens":4000,"total_tokens":13000,"prompt_tokens_details":{"cached_tokens":8000}}}`)))
	evs = append(evs, sse.Encode("", []byte("[DONE]")))
	return evs
}

func BenchmarkStreamTranslate(b *testing.B) {
	evs := longStream(500, 3000, 750)
	var bytes int64
	for _, ev := range evs {
		bytes += int64(len(ev.Raw))
	}
	b.SetBytes(bytes)
	b.ReportAllocs()
	var out []sse.Event
	c0 := cpuTime()
	for b.Loop() {
		s := NewStream("claude-sonnet-4-5", StreamOptions{})
		s.Borrow() // as the relay reads it
		for _, ev := range evs {
			var err error
			if out, err = s.Feed(out[:0], ev); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.Close(out[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(evs))*float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
	if cpu := cpuTime() - c0; cpu > 0 {
		b.ReportMetric(float64(len(evs))*float64(b.N)/cpu.Seconds(), "chunks/cpu-s")
	}
}

// interleavedStream returns the events of a stream whose two tool calls
// start in one chunk and then alternate their argument pieces, as some
// servers send them: the second call is held until the first completes.
func interleavedStream(text, args int) []sse.Event {
	head := `{"id":"gen-1767225600-Vt4pQ8nZk2LwR6sYb1Hx","provider":"Fireworks","model":"z-ai/glm-4.6","object":"chat.completion.chunk","created":1767225600,"choices":[{"index":0,"delta":`
	tail := `,"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}`
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var evs []sse.Event
	add := func(delta string) { evs = append(evs, sse.Encode("", []byte(head+delta+tail))) }
	add(`{"role":"assistant","content":""}`)
	for i := range text {
		add(`{"content":` + q(" word"+strconv.Itoa(i)) + `}`)
	}
	add(`{"tool_calls":[{"index":0,"id":"call_Qm3xN8vR2tY6wZ1aB4cD7eF0","type":"function","function":{"name":"Write","arguments":""}},` +
		`{"index":1,"id":"call_Qm3xN8vR2tY6wZ1aB4cD7eF1","type":"function","function":{"name":"Write","arguments":""}}]}`)
	for k := range 2 {
		add(`{"tool_calls":[{"index":` + strconv.Itoa(k) + `,"function":{"arguments":"{\"content\":\""}}]}`)
	}
	for i := range args {
		for k := range 2 {
			add(`{"tool_calls":[{"index":` + strconv.Itoa(k) + `,"function":{"arguments":` + q(strings.Repeat("x", i%7)+`\n`) + `}}]}`)
		}
	}
	for k := range 2 {
		add(`{"tool_calls":[{"index":` + strconv.Itoa(k) + `,"function":{"arguments":"\"}"}}]}`)
	}
	evs = append(evs, sse.Encode("", []byte(head+`{},"finish_reason":"tool_calls","native_finish_reason":"tool_calls","logprobs":null}]}`)))
	evs = append(evs, sse.Encode("", []byte(`{"id":"gen-x","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9000,"completion_tokens":4000,"total_tokens":13000,"prompt_tokens_details":{"cached_tokens":8000}}}`)))
	evs = append(evs, sse.Encode("", []byte("[DONE]")))
	return evs
}

func BenchmarkStreamTranslateInterleaved(b *testing.B) {
	evs := interleavedStream(3000, 750)
	var bytes int64
	for _, ev := range evs {
		bytes += int64(len(ev.Raw))
	}
	b.SetBytes(bytes)
	b.ReportAllocs()
	var out []sse.Event
	c0 := cpuTime()
	for b.Loop() {
		s := NewStream("claude-sonnet-4-5", StreamOptions{})
		s.Borrow() // as the relay reads it
		for _, ev := range evs {
			var err error
			if out, err = s.Feed(out[:0], ev); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.Close(out[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(evs))*float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
	if cpu := cpuTime() - c0; cpu > 0 {
		b.ReportMetric(float64(len(evs))*float64(b.N)/cpu.Seconds(), "chunks/cpu-s")
	}
}

// reportCPU reports the CPU time per operation since c0: on a busy machine
// it shows the cost of the code better than the wall-clock ns/op.
func reportCPU(b *testing.B, c0 time.Duration) {
	if cpu := cpuTime() - c0; cpu > 0 {
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	}
}

func BenchmarkResponse(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("Some text. ", 200) + `","tool_calls":[{"id":"call_Qm3xN8vR2tY6wZ1aB4cD7eF0","type":"function","function":{"name":"Bash","arguments":"{\"command\":\"go test ./...\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9000,"completion_tokens":400,"total_tokens":9400}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Response(body, "claude-sonnet-4-5"); err != nil {
			b.Fatal(err)
		}
	}
}
