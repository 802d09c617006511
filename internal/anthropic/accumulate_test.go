package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	sdk "github.com/anthropics/anthropic-sdk-go"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sdkAccumulate assembles a stream with the official SDK's accumulator and
// returns the message's wire JSON.
func sdkAccumulate(t testing.TB, stream []byte) []byte {
	t.Helper()
	rd := sse.NewReader(bytes.NewReader(stream))
	var msg sdk.Message
	for {
		ev, err := rd.Next()
		if err != nil {
			break
		}
		var u sdk.MessageStreamEventUnion
		if err := json.Unmarshal(ev.Data, &u); err != nil {
			t.Fatalf("sdk cannot decode event %q: %v", ev.Raw, err)
		}
		if err := msg.Accumulate(u); err != nil {
			t.Fatalf("sdk cannot accumulate event %q: %v", ev.Raw, err)
		}
	}
	return []byte(msg.RawJSON())
}

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("invalid JSON %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func TestAccumulateAssemblesThinkingTextAndToolUse(t *testing.T) {
	got, err := Accumulate(bytes.NewReader(readFixture(t, "anthropic-stream-thinking-text-tool.sse")))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"msg_01XkQw3ZbH9vV7cN2pLr8TfY","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",` +
		`"content":[` +
		`{"type":"thinking","thinking":"The user wants the files listed. A shell command answers that.","signature":"EqQBCgIYAhIMc2lnbmF0dXJlLWZpeHR1cmUtb25seRoMdGhpcy1pcy1ub3QtcmVhbA=="},` +
		`{"type":"text","text":"I'll list the files."},` +
		`{"type":"tool_use","id":"toolu_01A7bQm4cN8xR2sT5vW9yZ3d","name":"Bash","input":{"command":"ls -la","description":"List files"}}],` +
		`"stop_reason":"tool_use","stop_sequence":null,` +
		`"usage":{"input_tokens":2679,"cache_creation_input_tokens":1200,"cache_read_input_tokens":24000,"output_tokens":89}}`
	if string(got) != want {
		t.Errorf("message:\n got %s\nwant %s", got, want)
	}
}

func TestAccumulateAgreesWithSDK(t *testing.T) {
	stream := readFixture(t, "anthropic-stream-thinking-text-tool.sse")
	got, err := Accumulate(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if want := sdkAccumulate(t, stream); !jsonEqual(t, got, want) {
		t.Errorf("ours and the SDK's differ:\nours %s\n sdk %s", got, want)
	}
}

func TestAccumulateReportsErrorFrame(t *testing.T) {
	_, err := Accumulate(bytes.NewReader(readFixture(t, "anthropic-stream-overloaded-before-content.sse")))
	var se *StreamError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *StreamError", err)
	}
	if se.Type != "overloaded_error" || se.Message != "Overloaded" {
		t.Errorf("error = %q %q", se.Type, se.Message)
	}
	if !strings.Contains(string(se.Body), `"overloaded_error"`) {
		t.Errorf("body = %s", se.Body)
	}
}

func TestAccumulateRejectsBrokenStreams(t *testing.T) {
	start := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"type\":\"message\",\"content\":[],\"usage\":{\"input_tokens\":1}}}\n\n"
	blockStart := "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
	tests := []struct {
		name   string
		stream string
		want   error
	}{
		{"ends before message_stop", start + blockStart, ErrIncomplete},
		{"empty", "", ErrIncomplete},
		{"delta before message_start", "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{}}\n\n", nil},
		{"block index skips ahead", start + strings.Replace(blockStart, `"index":0`, `"index":1`, 1), nil},
		{"delta for a block never started", start + "data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n", nil},
		{"delta without index", start + blockStart + "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n", nil},
		{"data is not JSON", start + "event: content_block_start\ndata: {nope\n\n", nil},
		{"message is not an object", "data: {\"type\":\"message_start\",\"message\":[]}\n\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Accumulate(strings.NewReader(tt.stream))
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAccumulateMergesUsageAndKeepsUnknownMembers(t *testing.T) {
	stream := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"future\":{\"x\":1},\"usage\":{\"input_tokens\":10,\"output_tokens\":1,\"service_tier\":\"standard\"}}}\n\n" +
		"event: ping\ndata: {\"type\":\"ping\"}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"abc\"}}\n\n" +
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\",\"citations\":[]}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"citations_delta\",\"citation\":{\"type\":\"char_location\",\"cited_text\":\"c\"}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"a <b> & \\\"q\\\"\\n\"}}\n\n" +
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":12,\"output_tokens\":7}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	got, err := Accumulate(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"m","type":"message","role":"assistant","content":[{"type":"redacted_thinking","data":"abc"},` +
		`{"type":"text","text":"a <b> & \"q\"\n","citations":[{"type":"char_location","cited_text":"c"}]}],` +
		`"stop_reason":"end_turn","future":{"x":1},"usage":{"input_tokens":12,"output_tokens":7,"service_tier":"standard"}}`
	if string(got) != want {
		t.Errorf("message:\n got %s\nwant %s", got, want)
	}
	if sdkMsg := sdkAccumulate(t, []byte(stream)); !jsonEqual(t, got, sdkMsg) {
		t.Errorf("ours and the SDK's differ:\nours %s\n sdk %s", got, sdkMsg)
	}
}

func TestAccumulateEmptiesCutOffToolInput(t *testing.T) {
	stream := "data: {\"type\":\"message_start\",\"message\":{\"type\":\"message\",\"content\":[]}}\n\n" +
		"data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\",\"input\":{}}}\n\n" +
		"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\": \"}}\n\n" +
		"data: {\"type\":\"message_stop\"}\n\n"
	got, err := Accumulate(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"message","content":[{"type":"tool_use","id":"t","name":"n","input":{}}]}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func FuzzAccumulate(f *testing.F) {
	f.Add(readFixture(f, "anthropic-stream-thinking-text-tool.sse"))
	f.Add(readFixture(f, "anthropic-stream-overloaded-before-content.sse"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		msg, err := Accumulate(bytes.NewReader(stream))
		if err == nil && !json.Valid(msg) {
			t.Fatalf("invalid message JSON %q from %q", msg, stream)
		}
	})
}
