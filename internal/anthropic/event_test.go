package anthropic

import (
	"encoding/json"
	"testing"
)

func TestInspect(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       EventInfo
		err        bool
	}{
		{"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":12,"cache_read_input_tokens":5,"output_tokens":1}}}`,
			EventInfo{Type: EventMessageStart}, false},
		{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`,
			EventInfo{Type: EventContentBlockDelta}, false},
		{"content_block_delta", `{"type":"content_block_delta","index":12,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}`,
			EventInfo{Type: EventContentBlockDelta}, false},
		{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"bad` + "\x01" + `"}}`,
			EventInfo{Type: EventContentBlockDelta}, true},
		{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"cut`,
			EventInfo{Type: EventContentBlockDelta}, true},
		{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}}`,
			EventInfo{Type: EventContentBlockDelta}, true},
		{"content_block_delta", `{"type":"content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "spaced"}}`,
			EventInfo{Type: EventContentBlockDelta}, false},
		{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}`,
			EventInfo{Type: EventMessageDelta, StopReason: "tool_use"}, false},
		{"error", `{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`,
			EventInfo{Type: EventError, ErrorType: "overloaded_error", ErrorMessage: "busy"}, false},
		{"error", `not json`, EventInfo{Type: EventError, ErrorType: "api_error", ErrorMessage: "not json"}, false},
	} {
		got, err := Inspect(tc.name, []byte(tc.data))
		if (err != nil) != tc.err {
			t.Errorf("%s: error %v", tc.data, err)
			continue
		}
		got.Usage = Usage{}
		if !tc.err && got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.data, got, tc.want)
		}
	}
	info, _ := Inspect("message_start", []byte(`{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}`))
	if info.Usage.InputTokens != 12 || info.Usage.OutputTokens != 1 {
		t.Errorf("usage %+v", info.Usage)
	}
}

// The fast path for plain deltas accepts only what the full walk accepts,
// and reads the same.
func FuzzInspectDelta(f *testing.F) {
	for _, s := range []string{
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`,
		`{"type":"content_block_delta","index":3,"delta":{"type":"thinking_delta","thinking":"a\nb \u00e9"}}`,
		`{"type":"content_block_delta","index":1,"delta":{"type":"signature_delta","signature":"EqQB"}}`,
		`{"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"x"}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\x"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !plainDelta(data) {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		info, err := inspect("content_block_delta", data)
		if err != nil || info != (EventInfo{Type: EventContentBlockDelta}) {
			t.Fatalf("the full walk reads %q as %+v, %v", data, info, err)
		}
	})
}
