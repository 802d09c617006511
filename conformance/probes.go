package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// session runs the probes of one provider, one after the other: later probes
// send back what earlier ones received, as Claude Code does.
type session struct {
	p       *Provider
	timeout time.Duration
	// headers are the response headers of every answer, for the quota probe.
	headers []http.Header
	// text is the text probe's answer, for the prompt-cache probe.
	text *answer
	// toolTurn is the content of the tool call's answer, when it held a call.
	toolTurn []json.RawMessage
	// thinkingTurn is the content of the thinking probe's answer, when it held
	// a thinking block.
	thinkingTurn []json.RawMessage
	// thinkingRan reports that the thinking probe got an answer.
	thinkingRan bool
}

func check(ctx context.Context, p *Provider, timeout time.Duration) Report {
	rep := Report{Balancer: p.Balancer, Provider: p.Name, Type: p.Type, Auth: p.Auth, Model: p.Model}
	s := &session{p: p, timeout: timeout}
	probes := []struct {
		name     string
		required bool
		run      func(context.Context, *Result)
	}{
		{ProbeText, true, s.probeText},
		{ProbeToolCall, true, s.probeToolCall},
		{ProbeToolResult, true, s.probeToolResult},
		{ProbeThinking, true, s.probeThinking},
		{ProbeSignature, true, s.probeSignature},
		{ProbeImage, true, s.probeImage},
		{ProbeCountTokens, false, s.probeCount},
		{ProbePromptCache, false, s.probePromptCache},
		{ProbeQuotaHeaders, false, s.probeQuota},
	}
	for _, pr := range probes {
		r := Result{Probe: pr.name, Required: pr.required}
		if p.Skip != "" {
			r.skip(p.Skip)
		} else {
			pr.run(ctx, &r)
		}
		r.DurationMS = r.Duration.Milliseconds()
		rep.Probes = append(rep.Probes, r)
	}
	rep.Passed = len(rep.Failed()) == 0
	return rep
}

func (r *Result) pass(detail string) { r.Verdict, r.Detail = Pass, detail }

func (r *Result) skip(why string) { r.Verdict, r.Detail, r.Duration = Skipped, why, 0 }

// fail records a failure: Fail for a required probe, OptionalFail otherwise.
func (r *Result) fail(detail string) {
	r.Verdict, r.Detail = Fail, detail
	if !r.Required {
		r.Verdict = OptionalFail
	}
}

// failed records a reply that was not a usable answer. A detail the error
// already says ("HTTP 400" before "HTTP 400: invalid_request_error: ...") is
// left out.
func (r *Result) failed(f *failure) {
	r.fail(f.detail)
	r.Status, r.Error = f.status, f.err
	if f.err != "" && strings.HasPrefix(f.err, f.detail) {
		r.Detail = ""
	}
}

// note adds a remark to the detail.
func (r *Result) note(s string) {
	if r.Detail == "" {
		r.Detail = s
	} else {
		r.Detail += " (" + s + ")"
	}
}

// send sends one probe request within the probe timeout.
func (s *session) send(ctx context.Context, r *Result, body []byte) (*answer, *failure) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	rep := s.p.Send(ctx, body)
	r.Duration += time.Since(start)
	r.Status = rep.Status
	if rep.Header != nil {
		s.headers = append(s.headers, rep.Header)
	}
	a, f := read(rep)
	if f != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// The balancer sees a timeout as its client leaving: say what it was.
		f.detail = fmt.Sprintf("no complete answer within %s", s.timeout)
	}
	return a, f
}

func (s *session) anthropicType() bool { return s.p.Type != TypeOpenAI }

func (s *session) probeText(ctx context.Context, r *Result) {
	a, f := s.send(ctx, r, textBody(s.p.Model))
	if f != nil {
		r.failed(f)
		return
	}
	s.text = a
	text := strings.TrimSpace(a.msg.text())
	switch {
	case text == "":
		r.fail(fmt.Sprintf("no text in the answer (stop_reason %s)", orNone(a.msg.StopReason)))
	case a.msg.StopReason == "":
		r.fail(fmt.Sprintf("%q without a stop reason", shorten(text, 40)))
	case !a.stream:
		r.fail("a JSON answer to a streaming request")
	default:
		r.pass(fmt.Sprintf("%q (%s)", shorten(text, 40), a.msg.StopReason))
	}
}

func (s *session) probeToolCall(ctx context.Context, r *Result) {
	a, f := s.send(ctx, r, toolCallBody(s.p.Model))
	if f != nil {
		r.failed(f)
		return
	}
	i := slices.IndexFunc(a.msg.Content, func(b block) bool { return b.Type == "tool_use" && b.Name == toolName })
	if i < 0 {
		r.fail(fmt.Sprintf("no %s tool_use block although tool_choice forced it (stop_reason %s)", toolName, orNone(a.msg.StopReason)))
		return
	}
	blk := a.msg.Content[i]
	joined := strings.Join(a.pieces[i], "")
	switch {
	case blk.ID == "":
		r.fail("the tool_use block has no id")
		return
	case strings.TrimSpace(joined) != "":
		if !isObject([]byte(joined)) {
			r.fail(fmt.Sprintf("the streamed arguments are not a JSON object: %s", shorten(joined, 80)))
			return
		}
		r.pass(fmt.Sprintf("%s %s in %d input_json_delta pieces", toolName, compact(joined), len(a.pieces[i])))
	case !isObject(blk.Input):
		r.fail(fmt.Sprintf("the tool input is not a JSON object: %s", shorten(string(blk.Input), 80)))
		return
	case len(a.pieces[i]) > 0 || compact(string(blk.Input)) == "{}":
		r.pass(fmt.Sprintf("%s %s: the provider sent empty arguments, Claude Code gets {}", toolName, compact(string(blk.Input))))
	default:
		r.pass(fmt.Sprintf("%s %s, whole in content_block_start", toolName, compact(string(blk.Input))))
	}
	if a.msg.StopReason != "tool_use" {
		r.Detail += fmt.Sprintf(" (stop_reason %s, not tool_use)", orNone(a.msg.StopReason))
	}
	s.toolTurn = a.blocks
}

func (s *session) probeToolResult(ctx context.Context, r *Result) {
	turn, note := s.toolTurn, ""
	if turn == nil {
		turn, note = []json.RawMessage{syntheticToolUse}, "after a stand-in tool call"
	}
	a, f := s.send(ctx, r, toolResultBody(s.p.Model, turn, nil))
	if f != nil {
		r.failed(f)
		if note != "" {
			r.note(note)
		}
		return
	}
	text := strings.TrimSpace(a.msg.text())
	if text == "" {
		r.fail(fmt.Sprintf("no text after the tool result (stop_reason %s)", orNone(a.msg.StopReason)))
	} else {
		r.pass(fmt.Sprintf("%q", shorten(text, 40)))
	}
	if note != "" {
		r.note(note)
	}
}

func (s *session) probeThinking(ctx context.Context, r *Result) {
	a, f := s.send(ctx, r, thinkingBody(s.p.Model))
	if f != nil {
		r.failed(f)
		return
	}
	s.thinkingRan = true
	i := a.msg.find("thinking")
	if i < 0 {
		i = a.msg.find("redacted_thinking")
	}
	if i < 0 {
		if s.anthropicType() {
			r.fail(fmt.Sprintf("no thinking block (stop_reason %s)", orNone(a.msg.StopReason)))
			return
		}
		// The request itself succeeded, which is what Claude Code needs.
		r.Verdict, r.Detail = OptionalFail, "no thinking block: "+s.reasoningNote()
		return
	}
	blk := a.msg.Content[i]
	if blk.Type == "redacted_thinking" {
		if blk.Data == "" {
			r.fail("a redacted_thinking block without data")
			return
		}
		r.pass("redacted_thinking block")
	} else {
		if blk.Signature == "" {
			r.fail(fmt.Sprintf("a thinking block (%d characters) without a signature: it cannot be sent back", len(blk.Thinking)))
			return
		}
		kind := "signed"
		if !s.anthropicType() {
			kind = "signed by the balancer"
		}
		r.pass(fmt.Sprintf("%d characters, %s", len(blk.Thinking), kind))
	}
	s.thinkingTurn = a.blocks
}

// reasoningNote says why an OpenAI-compatible provider may answer without
// thinking.
func (s *session) reasoningNote() string {
	if s.p.Reasoning == "" || s.p.Reasoning == "off" {
		return "the provider's reasoning option is off, so thinking settings are not sent"
	}
	return fmt.Sprintf("the model sent no reasoning (reasoning %s)", s.p.Reasoning)
}

func (s *session) probeSignature(ctx context.Context, r *Result) {
	if s.thinkingTurn == nil {
		switch {
		case !s.thinkingRan:
			r.skip("the thinking probe got no answer")
		case s.anthropicType():
			r.skip("the thinking probe got no thinking block to send back")
		default:
			r.skip("no thinking block to send back")
		}
		return
	}
	turn, note := s.thinkingTurn, ""
	if !slices.ContainsFunc(turn, func(b json.RawMessage) bool { return blockType(b) == "tool_use" }) {
		// Anthropic checks the signature of the thinking block before a tool
		// call in the last assistant turn: make it one.
		turn, note = append(slices.Clone(turn), syntheticToolUse), "with a stand-in tool call"
	}
	a, f := s.send(ctx, r, toolResultBody(s.p.Model, turn, map[string]any{"thinking": thinking}))
	if f != nil {
		r.failed(f)
		if r.Detail == "" {
			r.Detail = "sending the thinking block back"
		} else {
			r.Detail = "sending the thinking block back: " + r.Detail
		}
		if note != "" {
			r.note(note)
		}
		return
	}
	what := "signature accepted"
	if !s.anthropicType() {
		what = "thinking block sent back and accepted"
	}
	r.pass(fmt.Sprintf("%s, stop_reason %s", what, orNone(a.msg.StopReason)))
	if note != "" {
		r.note(note)
	}
}

func blockType(b json.RawMessage) string {
	var blk block
	_ = json.Unmarshal(b, &blk)
	return blk.Type
}

func (s *session) probeImage(ctx context.Context, r *Result) {
	a, f := s.send(ctx, r, imageBody(s.p.Model))
	if f != nil {
		r.failed(f)
		return
	}
	text := strings.TrimSpace(a.msg.text())
	if text == "" {
		r.fail(fmt.Sprintf("no text about the image (stop_reason %s)", orNone(a.msg.StopReason)))
		return
	}
	r.pass(fmt.Sprintf("%q", shorten(text, 40)))
}

func (s *session) probeCount(ctx context.Context, r *Result) {
	if s.p.Count == nil {
		r.skip("local fallback: " + s.p.CountLocal)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	c := s.p.Count(ctx, countBody(s.p.Model))
	r.Duration = time.Since(start)
	r.Status = c.Status
	if !c.Upstream {
		r.fail("local fallback")
		r.Error = c.Reason
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			r.Error = fmt.Sprintf("no answer within %s", s.timeout)
		}
		return
	}
	var v struct {
		InputTokens *int64 `json:"input_tokens"`
	}
	if json.Unmarshal(c.Body, &v) != nil || v.InputTokens == nil || *v.InputTokens <= 0 {
		r.fail("local fallback: the answer holds no input_tokens")
		r.Error = shorten(string(c.Body), 200)
		return
	}
	r.pass(fmt.Sprintf("%d input tokens", *v.InputTokens))
}

// probePromptCache reads the cache fields of the text probe's usage. A probe
// prompt is far below the smallest cacheable prompt (1024 tokens and more),
// so a hit is not expected: the probe reports whether the usage carries the
// fields Claude Code reads, and their values. That the provider accepts
// cache_control is checked by every other probe, whose system prompt carries
// it as Claude Code's does.
func (s *session) probePromptCache(_ context.Context, r *Result) {
	if s.text == nil {
		r.skip("the text probe got no answer")
		return
	}
	u := s.text.msg.Usage
	var fields []string
	for _, k := range []string{"cache_creation_input_tokens", "cache_read_input_tokens"} {
		if v, ok := u[k]; ok && string(v) != "null" {
			fields = append(fields, k+"="+string(v))
		}
	}
	if len(fields) == 0 {
		r.fail("cache_control accepted; the usage reports no cache_creation_input_tokens or cache_read_input_tokens")
		return
	}
	r.pass("cache_control accepted; " + strings.Join(fields, " "))
}

// probeQuota looks for the quota headers on every answer of the provider:
// anthropic-ratelimit-unified-* (Claude subscriptions) or the API's
// anthropic-ratelimit-* limits.
func (s *session) probeQuota(_ context.Context, r *Result) {
	var unified, api []string
	seen := map[string]bool{}
	for _, h := range s.headers {
		for k, vs := range h {
			lk := strings.ToLower(k)
			if !strings.HasPrefix(lk, "anthropic-ratelimit-") || seen[lk] || len(vs) == 0 {
				continue
			}
			seen[lk] = true
			short := strings.TrimPrefix(lk, "anthropic-ratelimit-")
			if strings.HasPrefix(short, "unified-") {
				unified = append(unified, strings.TrimPrefix(short, "unified-")+"="+vs[0])
			} else {
				api = append(api, short+"="+vs[0])
			}
		}
	}
	slices.Sort(unified)
	slices.Sort(api)
	switch {
	case len(unified) > 0:
		r.pass("unified: " + strings.Join(pick(unified, 4), " "))
	case len(api) > 0:
		r.pass("API limits: " + strings.Join(pick(api, 3), " "))
	case len(s.headers) == 0:
		r.skip("no probe got an answer")
	case !s.anthropicType():
		r.skip("OpenAI-compatible providers send no Anthropic quota headers")
	case s.p.Auth == "oauth":
		r.fail("no anthropic-ratelimit-unified-* headers: the subscription's quota is not visible")
	default:
		r.fail("no anthropic-ratelimit-* headers: quota shows only as 429 answers")
	}
}

// pick returns the first n items, with a count of the rest.
func pick(items []string, n int) []string {
	if len(items) <= n {
		return items
	}
	return append(slices.Clone(items[:n]), fmt.Sprintf("(+%d more)", len(items)-n))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// compact returns JSON without insignificant space, shortened.
func compact(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) == nil {
		if b, err := json.Marshal(v); err == nil {
			s = string(b)
		}
	}
	return shorten(s, 60)
}
