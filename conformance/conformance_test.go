package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fake is a provider answering like the Anthropic API, with knobs to break it.
type fake struct {
	// toolPieces are the input_json_delta pieces of a tool call.
	toolPieces []string
	// signature signs thinking blocks; "" sends none.
	signature string
	// answer, when set, replaces the answer to a request.
	answer func(body map[string]any) (Reply, bool)
	// bodies are the requests received.
	bodies []map[string]any
}

func events(evs ...string) []byte {
	var b bytes.Buffer
	for _, ev := range evs {
		var v struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal([]byte(ev), &v); err != nil {
			panic(ev)
		}
		fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", v.Type, ev)
	}
	return b.Bytes()
}

const (
	msgStart = `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}`
	msgStop  = `{"type":"message_stop"}`
)

func stopWith(reason string) string {
	return fmt.Sprintf(`{"type":"message_delta","delta":{"stop_reason":%q},"usage":{"output_tokens":3}}`, reason)
}

func textEvents(text string) []byte {
	return events(msgStart, `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
		fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`, text),
		`{"type":"content_block_stop","index":0}`, stopWith("end_turn"), msgStop)
}

func (f *fake) send(_ context.Context, raw []byte) Reply {
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return Reply{Status: 400, Body: []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"bad json"}}`)}
	}
	f.bodies = append(f.bodies, body)
	if f.answer != nil {
		if r, ok := f.answer(body); ok {
			return r
		}
	}
	ok := func(b []byte) Reply {
		return Reply{Status: 200, Stream: true, Body: b, Header: http.Header{"Anthropic-Ratelimit-Unified-Status": {"allowed"}}}
	}
	_, forced := body["tool_choice"]
	_, thinks := body["thinking"]
	hasResult := strings.Contains(string(raw), `"tool_result"`)
	switch {
	case thinks && !hasResult:
		sig := ""
		if f.signature != "" {
			sig = fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":%q}}`, f.signature)
		}
		evs := []string{msgStart, `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`,
			`{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}`}
		if sig != "" {
			evs = append(evs, sig)
		}
		evs = append(evs, `{"type":"content_block_stop","index":0}`, stopWith("end_turn"), msgStop)
		return ok(events(evs...))
	case forced:
		evs := []string{msgStart, `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}`}
		for _, p := range f.toolPieces {
			evs = append(evs, fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":%q}}`, p))
		}
		evs = append(evs, `{"type":"content_block_stop","index":0}`, stopWith("tool_use"), msgStop)
		return ok(events(evs...))
	}
	return ok(textEvents("fine"))
}

func (f *fake) provider(typ string) Provider {
	return Provider{Balancer: "b", Name: "p", Type: typ, Auth: "api_key", Model: "m", Send: f.send,
		Count: func(context.Context, []byte) CountReply {
			return CountReply{Upstream: true, Status: 200, Body: []byte(`{"input_tokens":12}`)}
		}}
}

func runOne(t *testing.T, p Provider) (Report, map[string]Result) {
	t.Helper()
	reps := Run(context.Background(), []Provider{p}, Options{Timeout: time.Second})
	if len(reps) != 1 {
		t.Fatalf("%d reports", len(reps))
	}
	m := map[string]Result{}
	for _, r := range reps[0].Probes {
		m[r.Probe] = r
	}
	return reps[0], m
}

func TestCompleteProviderPasses(t *testing.T) {
	f := &fake{toolPieces: []string{`{"ci`, `ty": "Paris"}`}, signature: "sig"}
	rep, res := runOne(t, f.provider(TypeAnthropic))
	if !rep.Passed {
		t.Fatalf("failed: %+v", rep.Probes)
	}
	for _, name := range []string{ProbeText, ProbeToolCall, ProbeToolResult, ProbeThinking, ProbeSignature, ProbeImage,
		ProbeCountTokens, ProbePromptCache, ProbeQuotaHeaders} {
		if res[name].Verdict != Pass {
			t.Errorf("%s: %+v", name, res[name])
		}
	}
	if !strings.Contains(res[ProbeToolCall].Detail, `{"city":"Paris"} in 2 input_json_delta pieces`) {
		t.Errorf("tool call: %q", res[ProbeToolCall].Detail)
	}
	// The thinking block goes back with a stand-in tool call and its result.
	sent := false
	for _, body := range f.bodies {
		b, _ := json.Marshal(body["messages"])
		if body["thinking"] != nil && strings.Contains(string(b), `"signature":"sig"`) &&
			strings.Contains(string(b), `"tool_use_id":"toolu_01CheckProbeToolUse01"`) {
			sent = true
		}
	}
	if !sent {
		t.Error("the thinking block was not sent back with a tool call and its result")
	}
	// Every request looks like Claude Code's: streamed, identity first,
	// cache_control on the system prompt.
	for _, body := range f.bodies {
		sys, _ := json.Marshal(body["system"])
		if body["stream"] != true || !strings.HasPrefix(string(sys), `[{"text":"You are Claude Code`) || !strings.Contains(string(sys), `"cache_control"`) {
			t.Errorf("request %v", body)
		}
	}
}

func TestToolArgumentsMustAssemble(t *testing.T) {
	f := &fake{toolPieces: []string{`{"city": `, `Par`}, signature: "sig"}
	rep, res := runOne(t, f.provider(TypeAnthropic))
	if rep.Passed || res[ProbeToolCall].Verdict != Fail || !strings.Contains(res[ProbeToolCall].Detail, "not a JSON object") {
		t.Fatalf("%+v", res[ProbeToolCall])
	}
	// The next probe still runs, with a stand-in call.
	if r := res[ProbeToolResult]; r.Verdict != Pass || !strings.Contains(r.Detail, "stand-in") {
		t.Errorf("tool result: %+v", r)
	}
}

func TestEmptyToolArgumentsPass(t *testing.T) {
	for _, pieces := range [][]string{nil, {""}} {
		f := &fake{toolPieces: pieces}
		_, res := runOne(t, f.provider(TypeOpenAI))
		if r := res[ProbeToolCall]; r.Verdict != Pass || !strings.Contains(r.Detail, "get_weather {}: the provider sent empty arguments") {
			t.Errorf("%q: %+v", pieces, r)
		}
	}
}

func TestThinkingByType(t *testing.T) {
	// An Anthropic type must sign its thinking blocks.
	f := &fake{toolPieces: []string{`{}`}}
	rep, res := runOne(t, f.provider(TypeAnthropic))
	if rep.Passed || res[ProbeThinking].Verdict != Fail || !strings.Contains(res[ProbeThinking].Detail, "without a signature") {
		t.Errorf("anthropic: %+v", res[ProbeThinking])
	}
	if res[ProbeSignature].Verdict != Skipped {
		t.Errorf("round trip: %+v", res[ProbeSignature])
	}
	// An OpenAI type without reasoning passes the check, saying so.
	f = &fake{toolPieces: []string{`{}`}, answer: func(body map[string]any) (Reply, bool) {
		return Reply{Status: 200, Stream: true, Body: textEvents("no thoughts")}, body["thinking"] != nil
	}}
	p := f.provider(TypeOpenAI)
	rep, res = runOne(t, p)
	if !rep.Passed || res[ProbeThinking].Verdict != OptionalFail || !strings.Contains(res[ProbeThinking].Detail, "reasoning option is off") {
		t.Errorf("openai: %+v", res[ProbeThinking])
	}
	p.Reasoning = "high"
	_, res = runOne(t, p)
	if !strings.Contains(res[ProbeThinking].Detail, "the model sent no reasoning (reasoning high)") {
		t.Errorf("openai with reasoning: %+v", res[ProbeThinking])
	}
}

func TestFailuresCarryTheUpstreamError(t *testing.T) {
	f := &fake{toolPieces: []string{`{}`}, signature: "s", answer: func(body map[string]any) (Reply, bool) {
		b, _ := json.Marshal(body["messages"])
		switch {
		case strings.Contains(string(b), `"image"`):
			return Reply{Status: 400, Body: []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"no images here"}}`),
				Error: "HTTP 400: invalid_request_error: no images here"}, true
		case strings.Contains(string(b), "ready"):
			// A stream that failed after it started.
			return Reply{Status: 200, Stream: true, Body: events(msgStart), StreamError: "error event after the stream started: overloaded"}, true
		}
		return Reply{}, false
	}}
	p := f.provider(TypeAnthropic)
	p.Count = func(context.Context, []byte) CountReply {
		return CountReply{Status: 404, Reason: "HTTP 404 not_found_error: Not Found"}
	}
	rep, res := runOne(t, p)
	if got := strings.Join(rep.Failed(), ","); got != "text,image" {
		t.Errorf("failed %s", got)
	}
	if r := res[ProbeImage]; r.Status != 400 || r.Error != "HTTP 400: invalid_request_error: no images here" || !r.Required {
		t.Errorf("image: %+v", r)
	}
	if r := res[ProbeText]; r.Detail != "the stream failed after it started" || !strings.Contains(r.Error, "overloaded") {
		t.Errorf("text: %+v", r)
	}
	if r := res[ProbeCountTokens]; r.Verdict != OptionalFail || r.Status != 404 || r.Detail != "local fallback" || r.Required {
		t.Errorf("count: %+v", r)
	}
	if r := res[ProbePromptCache]; r.Verdict != Skipped {
		t.Errorf("prompt cache: %+v", r)
	}

	var out bytes.Buffer
	if err := WriteText(&out, []Report{rep}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"provider p (balancer b, type anthropic, auth api_key, model m)\n",
		"  image                FAIL           400",
		"HTTP 400: invalid_request_error: no images here\n",
		"  count_tokens         optional-fail  404",
		"local fallback: HTTP 404 not_found_error: Not Found\n",
		"  => FAIL: text, image\n",
		"1 provider checked: required probes failed on p (text, image)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestTimeoutIsNamed(t *testing.T) {
	p := Provider{Name: "slow", Type: TypeAnthropic, Model: "m", CountLocal: "x",
		Send: func(ctx context.Context, _ []byte) Reply {
			<-ctx.Done()
			return Reply{}
		}}
	reps := Run(context.Background(), []Provider{p}, Options{Timeout: 20 * time.Millisecond})
	r := reps[0].Probes[0]
	if r.Verdict != Fail || r.Detail != "no complete answer within 20ms" || r.Duration < 20*time.Millisecond {
		t.Errorf("%+v", r)
	}
}

func TestSkippedProviderPasses(t *testing.T) {
	reps := Run(context.Background(), []Provider{{Name: "pt", Type: TypeAnthropic, Skip: "no key"}}, Options{})
	if !Passed(reps) {
		t.Fatal("a skipped provider failed the check")
	}
	for _, r := range reps[0].Probes {
		if r.Verdict != Skipped || r.Detail != "no key" {
			t.Errorf("%+v", r)
		}
	}
	var out bytes.Buffer
	if err := WriteJSON(&out, reps); err != nil {
		t.Fatal(err)
	}
	var doc []map[string]any
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || len(doc) != 1 {
		t.Fatalf("%v %s", err, out.String())
	}
	probes, _ := doc[0]["probes"].([]any)
	first, _ := probes[0].(map[string]any)
	if doc[0]["passed"] != true || len(probes) != 9 || first["probe"] != "text" || first["verdict"] != "skipped" ||
		first["required"] != true || first["duration_ms"] != 0.0 {
		t.Errorf("%s", out.String())
	}
}

func TestImageIsAPNG(t *testing.T) {
	var body struct {
		Messages []struct {
			Content []struct {
				Source struct {
					MediaType string `json:"media_type"`
					Data      string `json:"data"`
				} `json:"source"`
			} `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(imageBody("m"), &body); err != nil {
		t.Fatal(err)
	}
	src := body.Messages[0].Content[0].Source
	if src.MediaType != "image/png" || !strings.HasPrefix(src.Data, "iVBORw0KGgo") || len(src.Data) > 200 {
		t.Errorf("%+v", src)
	}
}
