package convert

import (
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

func data(s string) sse.Event { return sse.Event{Data: []byte(s)} }

func delta(d string) sse.Event {
	return data(`{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":` + d + `,"finish_reason":null}]}`)
}

func finish(reason string) sse.Event {
	return data(`{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"` + reason + `"}]}`)
}

func names(evs []sse.Event) string {
	var n []string
	for _, ev := range evs {
		n = append(n, ev.Name)
	}
	return strings.Join(n, " ")
}

// feed runs events through s and returns, per event, the names of the
// Anthropic events it produced.
func feed(t *testing.T, s *Stream, evs ...sse.Event) []string {
	t.Helper()
	var out []string
	for _, ev := range evs {
		got, err := s.Feed(nil, ev)
		if err != nil {
			t.Fatalf("feed %s: %v", ev.Data, err)
		}
		out = append(out, names(got))
	}
	return out
}

func TestStreamEmitsEveryDeltaAsItArrives(t *testing.T) {
	s := NewStream("m", StreamOptions{})
	got := feed(t, s,
		delta(`{"role":"assistant","content":""}`),
		delta(`{"content":"a"}`),
		delta(`{"content":"b"}`),
		delta(`{"tool_calls":[{"index":0,"id":"call_abcdefghijkl","type":"function","function":{"name":"Bash","arguments":""}}]}`),
		delta(`{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]}`),
		delta(`{"tool_calls":[{"index":0,"function":{"arguments":"a\":1}"}}]}`),
		finish("tool_calls"),
		data(`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`),
		data(`[DONE]`),
	)
	want := []string{
		"message_start", // held by the caller: no content yet
		"content_block_start ping content_block_delta",
		"content_block_delta",
		"content_block_stop content_block_start",
		"content_block_delta",
		"content_block_delta",
		"content_block_stop",
		"",
		"message_delta message_stop",
	}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("events per chunk:\n%q\nwant\n%q", got, want)
	}
	if evs, err := s.Close(nil); err != nil || len(evs) != 0 {
		t.Fatalf("Close after [DONE] = %v, %v", names(evs), err)
	}
	if evs, err := s.Feed(nil, delta(`{"content":"late"}`)); err != nil || len(evs) != 0 {
		t.Fatalf("Feed after [DONE] = %v, %v", names(evs), err)
	}
}

func TestStreamErrorsAreSticky(t *testing.T) {
	for _, c := range []struct {
		name    string
		ev      sse.Event
		errType string // "" for a malformed stream
		status  int
	}{
		{"error object", data(`{"error":{"message":"slow down","type":"rate_limit","code":429}}`), apierr.RateLimit, 429},
		{"OpenRouter error chunk", data(`{"id":"g","error":{"code":502,"message":"Provider returned error"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`), apierr.API, 502},
		{"finish_reason error alone", data(`{"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}`), apierr.API, 500},
		{"event named error", sse.Event{Name: "error", Data: []byte(`upstream exploded`)}, apierr.API, 500},
		{"vLLM error", data(`{"object":"error","message":"Internal","type":"InternalServerError","code":500}`), apierr.API, 500},
		{"malformed JSON", data(`{"choices":[`), "", 0},
		{"not an object", data(`[1,2]`), "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewStream("m", StreamOptions{})
			feed(t, s, delta(`{"content":"partial"}`))
			evs, err := s.Feed(nil, c.ev)
			if len(evs) != 0 {
				t.Fatalf("events with the error: %s", names(evs))
			}
			var ue *UpstreamError
			if c.errType != "" {
				if !errors.As(err, &ue) || ue.Type != c.errType || ue.Status != c.status {
					t.Fatalf("err = %#v, want %s %d", err, c.errType, c.status)
				}
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if _, again := s.Feed(nil, delta(`{"content":"more"}`)); again != err {
				t.Fatalf("Feed after the error: %v", again)
			}
			if evs, again := s.Close(nil); again != err || len(evs) != 0 {
				t.Fatalf("Close after the error: %v %v", names(evs), again)
			}
		})
	}
}

func TestStreamEndings(t *testing.T) {
	for _, c := range []struct {
		name  string
		evs   []sse.Event
		close string // names Close returns
		err   error
	}{
		{"nothing at all", nil, "", ErrTruncated},
		{"content without finish", []sse.Event{delta(`{"content":"x"}`)}, "", ErrTruncated},
		{"finish without [DONE]", []sse.Event{delta(`{"content":"x"}`), finish("stop")}, "message_delta message_stop", nil},
		{"only [DONE]", []sse.Event{data("[DONE]")}, "", nil},
		{"keep-alives only", []sse.Event{{}, data("  ")}, "", ErrTruncated},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewStream("m", StreamOptions{})
			var all []sse.Event
			for _, ev := range c.evs {
				var err error
				if all, err = s.Feed(all, ev); err != nil {
					t.Fatal(err)
				}
			}
			evs, err := s.Close(nil)
			if err != c.err || names(evs) != c.close {
				t.Fatalf("Close = %q, %v; want %q, %v", names(evs), err, c.close, c.err)
			}
			all = append(all, evs...)
			if cerr := checkAnthropicStream(all, streamCheck{complete: err == nil}); cerr != nil {
				t.Fatal(cerr)
			}
		})
	}
}

func TestStreamHoldsArgumentsUntilTheToolHasAName(t *testing.T) {
	s := NewStream("m", StreamOptions{})
	got := feed(t, s,
		delta(`{"tool_calls":[{"index":0,"id":"call_abcdefghijkl","function":{"arguments":"{\"a\""}}]}`),
		delta(`{"tool_calls":[{"index":0,"function":{"name":"Bash","arguments":":1}"}}]}`),
		delta(`{"tool_calls":[{"index":1,"id":"call_nonamenoname","function":{"arguments":"{}"}}]}`),
		finish("tool_calls"), data("[DONE]"))
	// The held piece and the one that came with the name go out together;
	// the call that never got a name is dropped.
	want := "message_start | content_block_start ping content_block_delta |  | content_block_stop | message_delta message_stop"
	if strings.Join(got, " | ") != want {
		t.Fatalf("got %q\nwant %q", strings.Join(got, " | "), want)
	}
}

func TestStreamSendsHeldArgumentsWithTheName(t *testing.T) {
	s := NewStream("m", StreamOptions{})
	feed(t, s, delta(`{"tool_calls":[{"index":0,"id":"call_abcdefghijkl","function":{"arguments":"{\"a\""}}]}`))
	evs, err := s.Feed(nil, delta(`{"tool_calls":[{"index":0,"function":{"name":"Bash","arguments":":1}"}}]}`))
	if err != nil || len(evs) != 3 || !strings.Contains(string(evs[2].Data), `"partial_json":"{\"a\":1}"`) {
		t.Fatalf("%v %s", err, names(evs))
	}
}

func TestStreamFailsOnArgumentsForACallClosedIncomplete(t *testing.T) {
	s := NewStream("m", StreamOptions{})
	feed(t, s,
		delta(`{"tool_calls":[{"index":0,"id":"call_abcdefghijkl","function":{"name":"A","arguments":"{\"a\":"}}]}`),
		finish("tool_calls"),
		delta(`{"tool_calls":[{"index":0,"function":{"arguments":" "}}]}`)) // blank pieces are harmless
	if _, err := s.Feed(nil, delta(`{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func TestStreamDoesNotKeepTheCallersBuffers(t *testing.T) {
	s := NewStream("m", StreamOptions{})
	ev := delta(`{"content":"hello"}`)
	evs, err := s.Feed(nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	fin := data(`{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`)
	if _, err := s.Feed(nil, fin); err != nil {
		t.Fatal(err)
	}
	for i := range ev.Data {
		ev.Data[i] = 'X'
	}
	for i := range fin.Data {
		fin.Data[i] = 'X'
	}
	if !strings.Contains(string(evs[len(evs)-1].Raw), `"text":"hello"`) {
		t.Fatalf("event changed with the input: %s", evs[len(evs)-1].Raw)
	}
	end, err := s.Close(nil)
	if err != nil || !strings.Contains(string(end[0].Data), `"stop_reason":"max_tokens"`) {
		t.Fatalf("stop reason lost: %v %s", err, end[0].Data)
	}
}

func TestStreamMessageStartUsage(t *testing.T) {
	for _, c := range []struct {
		name  string
		first sse.Event
		est   int64
		want  string
	}{
		{"estimate", delta(`{"content":"x"}`), 1234, `"input_tokens":1234,`},
		{"no estimate", delta(`{"content":"x"}`), 0, `"input_tokens":0,`},
		{"usage in the first chunk", data(`{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":50,"prompt_tokens_details":{"cached_tokens":20}}}`), 99, `"input_tokens":30,`},
	} {
		t.Run(c.name, func(t *testing.T) {
			evs, err := NewStream("m", StreamOptions{InputTokens: c.est}).Feed(nil, c.first)
			if err != nil || evs[0].Name != "message_start" || !strings.Contains(string(evs[0].Data), c.want) {
				t.Fatalf("%v %s", err, evs[0].Data)
			}
		})
	}
}

func TestStreamEstimatesUsageThatNeverCame(t *testing.T) {
	s := NewStream("m", StreamOptions{InputTokens: 77})
	feed(t, s, delta(`{"content":"12345678"}`), finish("stop"))
	evs, err := s.Close(nil)
	if err != nil || !strings.Contains(string(evs[0].Data), `"usage":{"input_tokens":77,"output_tokens":2}`) {
		t.Fatalf("%v %s", err, evs[0].Data)
	}
}

func TestStreamThinkingSignatureIsOwnAndMatchesText(t *testing.T) {
	stream, err := os.ReadFile("testdata/streams/deepseek_reasoning_text_tool.sse")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := translate(t, stream, false)
	if err != nil {
		t.Fatal(err)
	}
	var msg struct {
		Content []struct{ Type, Thinking, Signature string } `json:"content"`
	}
	if err := json.Unmarshal(sdkMessage(t, clientBytes(evs, nil)), &msg); err != nil {
		t.Fatal(err)
	}
	th := msg.Content[0]
	if th.Type != "thinking" || !strings.Contains(th.Thinking, "\u00a0wants") || th.Signature != ThinkingSignature(th.Thinking) {
		t.Fatalf("thinking block %+v", th)
	}
}

func TestStreamEventsAreWellFramed(t *testing.T) {
	s := NewStream(`model "with" quotes`, StreamOptions{})
	evs, err := s.Feed(nil, delta(`{"content":"line\nbreak \u2028"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if !json.Valid(ev.Data) || strings.Contains(string(ev.Data), "\n") {
			t.Fatalf("bad event data %q", ev.Data)
		}
		if string(ev.Raw) != "event: "+ev.Name+"\ndata: "+string(ev.Data)+"\n\n" {
			t.Fatalf("bad raw %q", ev.Raw)
		}
	}
}

func TestStreamFollowsOnlyTheFirstChoice(t *testing.T) {
	s := NewStream("m", StreamOptions{})
	var all []sse.Event
	for _, ev := range []sse.Event{
		data(`{"choices":[{"index":1,"delta":{"content":"other"}}]}`),
		data(`{"choices":[{"index":1,"delta":{"content":"other"}},{"index":0,"delta":{"content":"mine"}}]}`),
		data(`{"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}`),
		data(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`),
	} {
		var err error
		if all, err = s.Feed(all, ev); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.Close(all)
	raw := string(clientBytes(all, err))
	if err != nil || strings.Contains(raw, "other") || !strings.Contains(raw, "mine") || !strings.Contains(raw, `"stop_reason":"end_turn"`) {
		t.Fatalf("%v\n%s", err, raw)
	}
}

// blockSummary assembles a converted stream with the official SDK and
// describes its content: "text:<text>", "thinking:<text>" or
// "tool_use:<name>:<input>" per block, joined by " | ", then the stop reason.
func blockSummary(t *testing.T, evs []sse.Event) string {
	t.Helper()
	if err := checkAnthropicStream(evs, streamCheck{complete: true, toolJSON: true}); err != nil {
		t.Fatalf("malformed stream: %v\n%s", err, clientBytes(evs, nil))
	}
	var msg struct {
		Content []struct {
			Type, Text, Thinking, Name string
			Input                      json.RawMessage
		} `json:"content"`
		StopReason string `json:"stop_reason"`
	}
	if err := json.Unmarshal(sdkMessage(t, clientBytes(evs, nil)), &msg); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, b := range msg.Content {
		switch b.Type {
		case "text":
			parts = append(parts, "text:"+b.Text)
		case "thinking":
			parts = append(parts, "thinking:"+b.Thinking)
		case "tool_use":
			parts = append(parts, "tool_use:"+b.Name+":"+string(b.Input))
		}
	}
	return strings.Join(parts, " | ") + " / " + msg.StopReason
}

// translateAll runs chunks through a Stream and closes it.
func translateAll(t *testing.T, chunks []sse.Event) []sse.Event {
	t.Helper()
	s := NewStream("m", StreamOptions{})
	var evs []sse.Event
	for _, ev := range chunks {
		var err error
		if evs, err = s.Feed(evs, ev); err != nil {
			t.Fatalf("feed %s: %v", ev.Data, err)
		}
	}
	evs, err := s.Close(evs)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// call is a tool_calls entry with an index; id and name only when not "".
func call(index int, id, name, args string) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	e := `{"index":` + strconv.Itoa(index)
	if id != "" {
		e += `,"id":` + q(id) + `,"type":"function"`
	}
	e += `,"function":{`
	if name != "" {
		e += `"name":` + q(name) + `,`
	}
	return e + `"arguments":` + q(args) + `}}`
}

func calls(entries ...string) sse.Event {
	return delta(`{"tool_calls":[` + strings.Join(entries, ",") + `]}`)
}

func TestStreamAssemblesEveryToolCallShape(t *testing.T) {
	const (
		idA = "call_aaaaaaaaaaaaaaaa"
		idB = "call_bbbbbbbbbbbbbbbb"
		idC = "call_cccccccccccccccc"
	)
	for _, c := range []struct {
		name   string
		chunks []sse.Event
		want   string
	}{
		{"interleaved parallel calls started in one chunk", []sse.Event{
			calls(call(0, idA, "Read", ""), call(1, idB, "Glob", "")),
			calls(call(0, "", "", `{"file_path":`)), calls(call(1, "", "", `{"pattern":`)),
			calls(call(0, "", "", `"/a"}`)), calls(call(1, "", "", `"*.go"}`)),
			finish("tool_calls"),
		}, `tool_use:Read:{"file_path":"/a"} | tool_use:Glob:{"pattern":"*.go"} / tool_use`},
		{"interleaved pieces of both calls in the same chunks", []sse.Event{
			calls(call(0, idA, "Read", `{"file_path":`), call(1, idB, "Glob", `{"pattern":`)),
			calls(call(1, "", "", `"*.go"`), call(0, "", "", `"/a"`)),
			calls(call(1, "", "", `}`), call(0, "", "", `}`)),
			finish("tool_calls"),
		}, `tool_use:Read:{"file_path":"/a"} | tool_use:Glob:{"pattern":"*.go"} / tool_use`},
		{"the second call whole before the first's arguments", []sse.Event{
			calls(call(0, idA, "Read", "")),
			calls(call(1, idB, "Glob", `{"pattern":"*.go"}`)),
			calls(call(0, "", "", `{"file_path":"/a"}`)),
			finish("tool_calls"),
		}, `tool_use:Read:{"file_path":"/a"} | tool_use:Glob:{"pattern":"*.go"} / tool_use`},
		{"three calls in reverse order", []sse.Event{
			calls(call(0, idA, "A", ""), call(1, idB, "B", ""), call(2, idC, "C", "")),
			calls(call(2, "", "", `{"c":3}`)), calls(call(1, "", "", `{"b":2}`)), calls(call(0, "", "", `{"a":1}`)),
			finish("tool_calls"),
		}, `tool_use:A:{"a":1} | tool_use:B:{"b":2} | tool_use:C:{"c":3} / tool_use`},
		{"a call whose arguments never complete is sent at the finish", []sse.Event{
			calls(call(0, idA, "A", ``), call(1, idB, "B", `{"b":2}`)),
			calls(call(0, "", "", ``)),
			finish("tool_calls"),
		}, `tool_use:A:{} | tool_use:B:{"b":2} / tool_use`},
		{"a reused index with a new id is a new call", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":"ls"}`)),
			calls(call(0, idB, "Read", "")),
			calls(call(0, "", "", `{"file_path":`)), calls(call(0, "", "", `"/a"}`)),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} | tool_use:Read:{"file_path":"/a"} / tool_use`},
		{"short ids numbering calls that all have index 0", []sse.Event{
			calls(call(0, "0", "Bash", `{"command":`)), calls(call(0, "0", "", `"ls"}`)),
			calls(call(0, "1", "Bash", `{"command":`)), calls(call(0, "1", "", `"pwd"}`)),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} | tool_use:Bash:{"command":"pwd"} / tool_use`},
		{"a reused index and id with a new name is a new call", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":"ls"}`)),
			calls(call(0, idA, "Read", `{"file_path":"/a"}`)),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} | tool_use:Read:{"file_path":"/a"} / tool_use`},
		{"the id and name repeated on every piece", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":`)), calls(call(0, idA, "Bash", `"ls"}`)),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} / tool_use`},
		{"blank text between argument pieces is dropped", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":`)),
			delta(`{"content":"\n\n"}`),
			calls(call(0, "", "", `"ls"}`)),
			delta(`{"content":"\n"}`),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} / tool_use`},
		{"blank text between two calls is dropped", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":"ls"}`)),
			delta(`{"content":"\n"}`),
			calls(call(0, idB, "Read", `{"file_path":"/a"}`)),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} | tool_use:Read:{"file_path":"/a"} / tool_use`},
		{"text between argument pieces follows the call", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":`)),
			delta(`{"content":"\n\nRunning"}`), delta(`{"content":" it."}`),
			calls(call(0, "", "", `"ls"}`)),
			finish("tool_calls"),
		}, "tool_use:Bash:{\"command\":\"ls\"} | text:\n\nRunning it. / tool_use"},
		{"blank text kept before the text that follows a call", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":"ls"}`)),
			delta(`{"content":"\n\n"}`), delta(`{"content":"Done."}`),
			finish("stop"),
		}, "tool_use:Bash:{\"command\":\"ls\"} | text:\n\nDone. / tool_use"},
		{"reasoning between argument pieces follows the call", []sse.Event{
			delta(`{"reasoning_content":"Plan."}`),
			calls(call(0, idA, "Bash", `{"command":`)),
			delta(`{"reasoning_content":"Then read."}`),
			calls(call(0, "", "", `"ls"}`)),
			calls(call(1, idB, "Read", `{"file_path":"/a"}`)),
			finish("tool_calls"),
		}, `thinking:Plan. | tool_use:Bash:{"command":"ls"} | thinking:Then read. | tool_use:Read:{"file_path":"/a"} / tool_use`},
		{"held text, reasoning and a call keep their order", []sse.Event{
			calls(call(0, idA, "A", `{"a":`)),
			delta(`{"content":"one"}`), delta(`{"reasoning":"two"}`), calls(call(1, idB, "B", `{}`)), delta(`{"content":"three"}`),
			calls(call(0, "", "", `1}`)),
			finish("tool_calls"),
		}, `tool_use:A:{"a":1} | text:one | thinking:two | tool_use:B:{} | text:three / tool_use`},
		{"arguments repeated after they completed are dropped", []sse.Event{
			calls(call(0, idA, "Bash", `{"command":`)), calls(call(0, "", "", `"ls"}`)),
			calls(call(0, "", "", `{"command":"ls"}`)),
			calls(call(1, idB, "Read", `{"file_path":"/a"}`)), calls(call(1, "", "", `{"file_path":"/a"}`)),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} | tool_use:Read:{"file_path":"/a"} / tool_use`},
		{"arguments as an object while another call is open", []sse.Event{
			calls(call(0, idA, "A", `{"a":`)),
			delta(`{"tool_calls":[{"index":1,"id":"` + idB + `","function":{"name":"B","arguments":{"b":[1,2]}}}]}`),
			calls(call(0, "", "", `1}`)),
			finish("tool_calls"),
		}, `tool_use:A:{"a":1} | tool_use:B:{"b":[1,2]} / tool_use`},
		{"a call named while another is open", []sse.Event{
			calls(call(0, idA, "A", `{"a":`)),
			calls(call(1, idB, "", `{"b":2}`)),
			calls(call(1, "", "B", ``)),
			calls(call(0, "", "", `1}`)),
			finish("tool_calls"),
		}, `tool_use:A:{"a":1} | tool_use:B:{"b":2} / tool_use`},
		{"braces and escapes inside strings do not complete a call", []sse.Event{
			calls(call(0, idA, "Write", `{"content":"}\"}\\`)),
			calls(call(1, idB, "Read", `{"file_path":"/a"}`)),
			calls(call(0, "", "", `u007d\u0022}"}`)),
			finish("tool_calls"),
		}, `tool_use:Write:{"content":"}\"}\\u007d\u0022}"} | tool_use:Read:{"file_path":"/a"} / tool_use`},
		{"text parts", []sse.Event{
			delta(`{"content":[{"type":"text","text":"Hel"},{"type":"image_url","image_url":{"url":"data:,"}},{"type":"text","text":"lo"}]}`),
			delta(`{"content":[{"type":"text","text":" there"}]}`),
			finish("stop"),
		}, `text:Hello there / end_turn`},
		{"a streamed refusal", []sse.Event{
			delta(`{"role":"assistant","content":null,"refusal":""}`),
			delta(`{"refusal":"I can't"}`), delta(`{"refusal":" help with that."}`),
			finish("content_filter"),
		}, `text:I can't help with that. / refusal`},
		{"a refusal part", []sse.Event{
			delta(`{"content":[{"type":"refusal","refusal":"No."}]}`),
			finish("stop"),
		}, `text:No. / end_turn`},
		{"blank text before tool calls is dropped", []sse.Event{
			delta(`{"content":"\n\n"}`),
			calls(call(0, idA, "Bash", `{"command":"ls"}`)),
			finish("tool_calls"),
		}, `tool_use:Bash:{"command":"ls"} / tool_use`},
		{"blank text alone is dropped", []sse.Event{
			delta(`{"content":" "}`), delta(`{"content":"\n"}`),
			finish("stop"),
		}, ` / end_turn`},
		{"blank text before text is kept", []sse.Event{
			delta(`{"content":"\n\n"}`), delta(`{"content":"Hi"}`), delta(`{"content":"\n"}`),
			finish("stop"),
		}, "text:\n\nHi\n / end_turn"},
		{"unknown parts only", []sse.Event{
			delta(`{"content":[{"type":"audio","data":"AAAA"}]}`),
			finish("stop"),
		}, ` / end_turn`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := blockSummary(t, translateAll(t, c.chunks)); got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestStreamSendsTheOpenCallLiveAndAnInterleavedOneOnceTheFirstCompletes(t *testing.T) {
	s := NewStream("m", StreamOptions{})
	got := feed(t, s,
		calls(call(0, "call_aaaaaaaaaaaaaaaa", "A", ""), call(1, "call_bbbbbbbbbbbbbbbb", "B", "")),
		calls(call(0, "", "", `{"a":`)),
		calls(call(1, "", "", `{"b":`)),
		calls(call(0, "", "", `1}`)),
		calls(call(1, "", "", `2}`)),
		finish("tool_calls"),
		data("[DONE]"),
	)
	want := []string{
		"message_start content_block_start ping",
		"content_block_delta", // the first call streams live
		"",                    // the second waits
		"content_block_delta content_block_stop content_block_start content_block_delta", // the first completes: the second starts with what it held
		"content_block_delta",
		"content_block_stop",
		"message_delta message_stop",
	}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("events per chunk:\n%q\nwant\n%q", got, want)
	}
}

func TestStreamKeepsAnIDThatComesAfterTheFirstPiece(t *testing.T) {
	evs := translateAll(t, []sse.Event{
		calls(call(0, "", "", `{"a":`)),
		calls(call(0, "call_lateidlateidlate", "A", `1}`)),
		finish("tool_calls"),
	})
	var msg struct {
		Content []struct{ ID, Name string } `json:"content"`
	}
	if err := json.Unmarshal(sdkMessage(t, clientBytes(evs, nil)), &msg); err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 1 || msg.Content[0].ID != "call_lateidlateidlate" || msg.Content[0].Name != "A" {
		t.Fatalf("content %+v", msg.Content)
	}
}

func TestStreamHoldsCopiesOfTheCallersBuffers(t *testing.T) {
	chunks := []sse.Event{
		calls(call(0, "call_aaaaaaaaaaaaaaaa", "A", `{"a":`)),
		calls(call(1, "call_bbbbbbbbbbbbbbbb", "", `{"b":`)),
		calls(call(1, "", "B", `2}`)),
		delta(`{"content":"\n"}`), delta(`{"content":"held"}`), delta(`{"reasoning":"also held"}`),
		calls(call(0, "", "", `1}`)),
		finish("tool_calls"),
	}
	s := NewStream("m", StreamOptions{})
	var evs []sse.Event
	for _, ev := range chunks {
		var err error
		if evs, err = s.Feed(evs, ev); err != nil {
			t.Fatal(err)
		}
		for i := range ev.Data {
			ev.Data[i] = 'X'
		}
	}
	evs, err := s.Close(evs)
	if err != nil {
		t.Fatal(err)
	}
	want := "tool_use:A:{\"a\":1} | tool_use:B:{\"b\":2} | text:\nheld | thinking:also held / tool_use"
	if got := blockSummary(t, evs); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestStreamBoundsWhatItHolds(t *testing.T) {
	piece := func(index, n int) sse.Event { return calls(call(index, "", "", strings.Repeat("x", n))) }
	open := calls(call(0, "call_aaaaaaaaaaaaaaaa", "A", `{"a":"`))
	for _, c := range []struct {
		name   string
		chunks []sse.Event
		want   string // in the error; "" for no error
	}{
		{"one call past its bound", []sse.Event{open, calls(call(1, "call_bbbbbbbbbbbbbbbb", "B", `{"b":"`)),
			piece(1, maxHeldPerCall/2), piece(1, maxHeldPerCall/2)}, "MiB of arguments held for a tool call"},
		{"a call without a name past its bound", []sse.Event{calls(call(1, "call_bbbbbbbbbbbbbbbb", "", `{"b":"`)),
			piece(1, maxHeldPerCall)}, "MiB of arguments held for a tool call"},
		{"calls within their bound past the stream's", []sse.Event{open,
			calls(call(1, "call_bbbbbbbbbbbbbbbb", "B", `{"b":"`)), piece(1, maxHeldPerCall-16),
			calls(call(2, "call_cccccccccccccccc", "C", `{"c":"`)), piece(2, maxHeldPerCall-16),
			calls(call(3, "call_dddddddddddddddd", "D", `{"d":"`)), piece(3, 64)}, "MiB of content held"},
		{"text past the stream's bound", []sse.Event{open,
			delta(`{"content":"` + strings.Repeat("y", maxHeldPerStream/2) + `"}`),
			delta(`{"content":"` + strings.Repeat("y", maxHeldPerStream/2+1) + `"}`)}, "MiB of content held"},
		{"blank text past the stream's bound", []sse.Event{open,
			delta(`{"content":"` + strings.Repeat(" ", maxHeldPerStream/2) + `"}`),
			delta(`{"content":"` + strings.Repeat(" ", maxHeldPerStream/2+1) + `"}`)}, "MiB of content held"},
		{"the open call's own arguments are not held", []sse.Event{open,
			piece(0, maxHeldPerStream), piece(0, maxHeldPerStream)}, ""},
		{"held content sent frees its room", []sse.Event{open,
			calls(call(1, "call_bbbbbbbbbbbbbbbb", "B", `{"b":"`)), piece(1, maxHeldPerCall-16), calls(call(0, "", "", `"}`)),
			calls(call(2, "call_cccccccccccccccc", "C", `{"c":"`)), piece(2, maxHeldPerCall-16), calls(call(1, "", "", `"}`)),
			calls(call(3, "call_dddddddddddddddd", "D", `{"d":"`)), piece(3, maxHeldPerCall-16)}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewStream("m", StreamOptions{})
			var err error
			for _, ev := range c.chunks {
				if _, err = s.Feed(nil, ev); err != nil {
					break
				}
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case c.want != "" && (!errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("err = %v, want ErrMalformed with %q", err, c.want)
			case c.want != "":
				if _, again := s.Close(nil); again != err {
					t.Fatalf("Close after the error: %v", again)
				}
			}
		})
	}
}

func TestArgumentsCompleteOnlyAsAWholeObject(t *testing.T) {
	esc := func(args string) string { return string(appendEscaped(nil, args)) }
	for _, c := range []struct {
		pieces []string // as in the JSON string that carries the arguments
		want   bool
	}{
		{[]string{esc(`{}`)}, true},
		{[]string{esc(" \n{"), esc(`"a":1`), esc(`}`)}, true},
		{[]string{esc(`{"a":{"b":[1,{"c":2}]}}`)}, true},
		{[]string{esc(`{"a":{"b":[1,{"c":2}]}`)}, false},
		{[]string{esc(`{"a":"}`)}, false},
		{[]string{esc(`{"a":"\"}`)}, false}, // a quote inside the string
		{[]string{esc(`{"a":"\"}"}`)}, true},
		{[]string{esc(`{"a":"\\"}`)}, true}, // a backslash inside the string
		{[]string{esc(`{"a":"\`), esc(`"}"}`)}, true},
		{[]string{esc(`{"a":"\`), esc(`"}`)}, false},
		{[]string{`{\u0022a\u0022:1\u007d`}, true}, // escapes of the carrying string
		{[]string{`{\"a\":\"\u0022}`}, true},
		{[]string{`{\"a\":\"\\u0022}`}, false},
		{[]string{esc(`{"a":"café"}`)}, true},
		{[]string{`{\"a\":\"caf\u00e9\"}`}, true},
		{[]string{esc(`{"a":"{\n}"`)}, false},
		{[]string{``}, false},
		{[]string{`  `}, false},
		{[]string{esc(`[1]`)}, false},
		{[]string{esc(`"{}"`)}, false},
		{[]string{`null`}, false},
	} {
		var a argScan
		for _, p := range c.pieces {
			a.feed([]byte(p))
		}
		if a.complete() != c.want {
			t.Errorf("%q: complete = %v, want %v", c.pieces, a.complete(), c.want)
		}
	}
}

func TestStreamAndJSONGiveTheSameTextAndStopReason(t *testing.T) {
	for _, c := range []struct {
		name, msg, finish, want string
	}{
		{"string content", `"content":"Hi."`, "stop", "Hi. / end_turn"},
		{"text parts", `"content":[{"type":"text","text":"Hi"},{"type":"input_audio"},{"text":"."}]`, "stop", "Hi. / end_turn"},
		{"refusal", `"content":null,"refusal":"I can't help with that."`, "content_filter", "I can't help with that. / refusal"},
		{"refusal with stop", `"content":null,"refusal":"No."`, "stop", "No. / end_turn"},
		{"content and refusal", `"content":"Part. ","refusal":"No more."`, "content_filter", "Part. No more. / refusal"},
		{"refusal part", `"content":[{"type":"refusal","refusal":"No."}]`, "stop", "No. / end_turn"},
		{"filtered without text", `"content":""`, "content_filter", " / refusal"},
		{"length", `"content":"Once"`, "length", "Once / max_tokens"},
		{"whitespace only", `"content":"\n\n"`, "stop", " / end_turn"},
		{"whitespace parts then text", `"content":[{"type":"text","text":"\n"},{"type":"text","text":"Hi"}]`, "stop", "\nHi / end_turn"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",` + c.msg +
				`},"finish_reason":"` + c.finish + `"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}`
			out, err := Response([]byte(body), "m")
			if err != nil {
				t.Fatal(err)
			}
			var msg struct {
				Content    []struct{ Type, Text string } `json:"content"`
				StopReason string                        `json:"stop_reason"`
			}
			if err := json.Unmarshal(out, &msg); err != nil {
				t.Fatal(err)
			}
			var text []string
			for _, b := range msg.Content {
				text = append(text, b.Text)
			}
			fromJSON := strings.Join(text, " | ") + " / " + msg.StopReason
			fromStream := strings.TrimPrefix(blockSummary(t, translateAll(t, []sse.Event{delta(`{` + c.msg + `}`), finish(c.finish)})), "text:")
			if fromJSON != c.want || fromStream != c.want {
				t.Fatalf("JSON %q, stream %q, want %q", fromJSON, fromStream, c.want)
			}
		})
	}
}
