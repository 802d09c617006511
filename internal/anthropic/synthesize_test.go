package anthropic

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

func synthesized(t testing.TB, msg []byte) []byte {
	t.Helper()
	events, err := Synthesize(msg)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Join(events, nil)
}

var synthesizeCases = []struct {
	name string
	msg  string
}{
	{"text", `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello <world> & \"you\"\n\u2028é"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"output_tokens":3,"service_tier":"standard"}}`},
	{"thinking with signature, text and tool use", `{"id":"msg_2","type":"message","role":"assistant","model":"m","content":[{"type":"thinking","thinking":"Let me think.","signature":"EqQBCgIYAhIM"},{"type":"text","text":"Running it."},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls -la","nested":{"a":[1,2,{"b":null}]}}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":2679,"output_tokens":89}}`},
	{"tool use without input", `{"id":"msg_3","type":"message","role":"assistant","model":"m","content":[{"type":"tool_use","id":"toolu_2","name":"Now","input":{}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":2}}`},
	{"redacted thinking and server tool blocks", `{"id":"msg_4","type":"message","role":"assistant","model":"m","content":[{"type":"redacted_thinking","data":"opaque"},{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"go"}},{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[{"type":"web_search_result","url":"https://go.dev","title":"Go"}]},{"type":"text","text":"Found.","citations":[{"type":"web_search_result_location","url":"https://go.dev","cited_text":"Go"}]}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":4,"server_tool_use":{"web_search_requests":1}}}`},
	{"stop sequence and empty content", `{"id":"msg_5","type":"message","role":"assistant","model":"m","content":[],"stop_reason":"stop_sequence","stop_sequence":"END","usage":{"input_tokens":3,"output_tokens":0}}`},
	{"empty text block and unknown members", `{"id":"msg_6","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"","extra":1}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1},"future_field":{"k":"v"}}`},
}

func TestSynthesizeIsAccumulatedBackByTheSDK(t *testing.T) {
	for _, tt := range synthesizeCases {
		t.Run(tt.name, func(t *testing.T) {
			got := sdkAccumulate(t, synthesized(t, []byte(tt.msg)))
			if !jsonEqual(t, got, []byte(tt.msg)) {
				t.Errorf("the SDK assembled\n %s\nfrom the synthesized stream of\n %s", got, tt.msg)
			}
		})
	}
}

func TestSynthesizeRoundTripsThroughAccumulate(t *testing.T) {
	for _, tt := range synthesizeCases {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Accumulate(bytes.NewReader(synthesized(t, []byte(tt.msg))))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.msg {
				t.Errorf("round trip changed the message:\n got %s\nwant %s", got, tt.msg)
			}
		})
	}
}

func TestSynthesizeRoundTripsTheRecordedStream(t *testing.T) {
	msg, err := Accumulate(bytes.NewReader(readFixture(t, "anthropic-stream-thinking-text-tool.sse")))
	if err != nil {
		t.Fatal(err)
	}
	again, err := Accumulate(bytes.NewReader(synthesized(t, msg)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, msg) {
		t.Errorf("round trip changed the message:\n got %s\nwant %s", again, msg)
	}
}

func TestSynthesizeEmitsTheAPIEventSequence(t *testing.T) {
	stream := synthesized(t, []byte(synthesizeCases[1].msg))
	rd := sse.NewReader(bytes.NewReader(stream))
	var names []string
	for {
		ev, err := rd.Next()
		if err != nil {
			break
		}
		var typ struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(ev.Data, &typ); err != nil || typ.Type != ev.Name {
			t.Errorf("event %q: data type %q, err %v", ev.Name, typ.Type, err)
		}
		names = append(names, ev.Name)
	}
	want := "message_start " +
		"content_block_start content_block_delta content_block_delta content_block_stop " +
		"content_block_start content_block_delta content_block_stop " +
		"content_block_start content_block_delta content_block_stop " +
		"message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
	for _, part := range []string{
		`"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}`,
		`"delta":{"type":"input_json_delta","partial_json":"{\"command\":\"ls -la\",\"nested\":{\"a\":[1,2,{\"b\":null}]}}"}`,
		`"content_block":{"type":"thinking","thinking":"","signature":""}`,
		`"message":{"id":"msg_2","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,`,
	} {
		if !bytes.Contains(stream, []byte(part)) {
			t.Errorf("stream lacks %s:\n%s", part, stream)
		}
	}
}

func TestSynthesizeRejectsWhatIsNotAMessage(t *testing.T) {
	for _, in := range []string{
		``, `[]`, `{"type":"error","error":{"type":"api_error","message":"x"}}`,
		`{"type":"message","content":{}}`, `{"type":"message","content":[1]}`,
		`{"type":"message","content":[{"type":"tool_use","input":}]}`,
	} {
		if _, err := Synthesize([]byte(in)); err == nil {
			t.Errorf("Synthesize(%s) succeeded", in)
		}
	}
}

func FuzzSynthesize(f *testing.F) {
	for _, tt := range synthesizeCases {
		f.Add([]byte(tt.msg))
	}
	// Usage that is not an object once made a stream Accumulate rejects.
	f.Add([]byte(`{"type":"message","usage":0 }`))
	f.Add([]byte(`{"type":"message","content":[{"type":"thinking","thinking":{}}]}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		events, err := Synthesize(msg)
		if err != nil {
			return
		}
		if _, err := Accumulate(bytes.NewReader(bytes.Join(events, nil))); err != nil {
			t.Fatalf("synthesized stream of %q does not accumulate: %v", msg, err)
		}
	})
}

func BenchmarkAccumulate(b *testing.B) {
	stream := readFixture(b, "anthropic-stream-thinking-text-tool.sse")
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		if _, err := Accumulate(bytes.NewReader(stream)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSynthesize(b *testing.B) {
	msg := []byte(synthesizeCases[1].msg)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Synthesize(msg); err != nil {
			b.Fatal(err)
		}
	}
}
