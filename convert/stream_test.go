package convert

import (
	"encoding/json"
	"errors"
	"os"
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
