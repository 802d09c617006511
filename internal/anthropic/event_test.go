package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
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

// PlainDeltas accepts a run of whole plain deltas and nothing else: each
// event of the run, read by the stream reader, is a content_block_delta the
// full walk accepts, and the run ends where an event ends.
func FuzzPlainDeltas(f *testing.F) {
	delta := func(field, text string) string {
		return "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"" + field + "\"" + text + "}}\n\n"
	}
	text := delta("text_delta", `,"text":"hi"`)
	for _, s := range []string{
		text + text,
		text + delta("thinking_delta", `,"thinking":"a\nb"`) + delta("input_json_delta", `,"partial_json":"{\"a\":"`) + delta("signature_delta", `,"signature":"Eq"`),
		text + "event: content_block_delta\r\ndata: {}\r\n\r\n",
		text + delta("text_delta", `,"text":"\x"`) + text,
		text + text[:len(text)-1],
		text + "event: ping\ndata: {\"type\": \"ping\"}\n\n" + text,
		text + delta("text_delta", `,"text":"a"}`),
		delta("text_delta", `,"text":"ok"`)[:40],
		strings.Replace(text, `"index":0`, `"index":7`, 1) + strings.Replace(text, `"index":0`, `"index":12`, 1) + strings.Replace(text, `"index":0`, `"index":01`, 1),
		strings.Replace(text, `"index":0`, `"index":x`, 1),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(checkPlainDeltas)
}

// TestPlainDeltasTellEveryByte holds PlainDeltas to the full walk for every
// change of one byte, anywhere in a run of text deltas: of the fixed first
// bytes it compares a word at a time, of the string and of what ends the
// event.
func TestPlainDeltasTellEveryByte(t *testing.T) {
	ev := "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello, w\\u00f6rld \\\"x\\\"\"}}\n\n"
	run := []byte(ev + ev)
	for i := range len(ev) {
		for _, c := range []byte{'#', '"', '\\', '\n', 0x1f, '0', 'e'} {
			if run[i] == c {
				continue
			}
			b := bytes.Clone(run)
			b[i] = c
			checkPlainDeltas(t, b)
		}
	}
}

// checkPlainDeltas checks PlainDeltas(b) against the stream reader and the
// full walk: every event of the run it accepts is a content_block_delta the
// full walk accepts, the run ends where an event ends, and it stops only
// before something that is not a whole plain delta.
func checkPlainDeltas(t *testing.T, b []byte) {
	t.Helper()
	before := Inspections()
	n := PlainDeltas(b)
	if n < 0 || n > len(b) {
		t.Fatalf("a run of %d bytes in %d", n, len(b))
	}
	rd := sse.NewReader(bytes.NewReader(b[:n]))
	events := 0
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the run %q does not end where an event ends: %v", b[:n], err)
		}
		info, err := Inspect(ev.Name, ev.Data)
		if err != nil || info.Type != EventContentBlockDelta || ev.Name != "content_block_delta" {
			t.Fatalf("the run holds %q, read as %+v, %v", ev.Raw, info, err)
		}
		events++
	}
	if got := Inspections() - before - int64(events); got != int64(events) {
		t.Fatalf("the run of %d events counted %d inspections", events, got)
	}
	if n < len(b) && plainDeltaAt(b[n:]) {
		t.Fatalf("the run stopped before a whole plain delta: %q", b[n:])
	}
}

// plainDeltaAt reports whether b starts with a whole plain delta written as
// the API writes it, by the stream reader and plainDelta.
func plainDeltaAt(b []byte) bool {
	const head = "event: content_block_delta\ndata: "
	if !bytes.HasPrefix(b, []byte(head)) {
		return false
	}
	end := bytes.Index(b, []byte("\n\n"))
	if end < 0 {
		return false
	}
	data := b[len(head):end]
	return !bytes.ContainsAny(data, "\r\n") && plainDelta(data)
}

// BenchmarkPlainDeltas checks a read's worth (8 KB) of text deltas, as a
// burst hands them to the relay.
func BenchmarkPlainDeltas(b *testing.B) {
	var buf bytes.Buffer
	events := 0
	for buf.Len() < 8000 {
		fmt.Fprintf(&buf, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"text_delta\",\"text\":%q}}\n\n",
			events%3, strings.Repeat(" a few words", 1+events%4))
		events++
	}
	p := buf.Bytes()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if PlainDeltas(p) != len(p) {
			b.Fatal("the run is shorter than the buffer")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
}
