package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

var toolIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

var validStopReasons = map[string]bool{
	"end_turn": true, "max_tokens": true, "stop_sequence": true, "tool_use": true,
	"pause_turn": true, "refusal": true,
}

// streamCheck holds the options of checkAnthropicStream.
type streamCheck struct {
	// complete requires the sequence to end with message_stop.
	complete bool
	// toolJSON requires the arguments of every tool_use block to add up to
	// a JSON object (or nothing).
	toolJSON bool
}

// checkAnthropicStream reports the first way evs is not a well-formed
// Anthropic Messages event stream as this package writes it: message_start
// first; blocks opened one at a time with consecutive indexes; one ping,
// right after the first content_block_start; deltas of the open block's
// kind; a signature_delta last in every thinking block; message_delta after
// the last block with a known stop_reason and usage; message_stop last. Each
// event's Raw must be exactly "event: <name>\ndata: <data>\n\n" with <name>
// equal to the data's "type".
func checkAnthropicStream(evs []sse.Event, c streamCheck) error {
	var (
		started, deltaSeen, stopped, pinged bool
		open                                = -1
		openType                            string
		next                                int
		signed                              bool
		args                                []byte
	)
	for i, ev := range evs {
		where := fmt.Sprintf("event %d (%s)", i, ev.Name)
		want := "event: " + ev.Name + "\ndata: " + string(ev.Data) + "\n\n"
		if string(ev.Raw) != want {
			return fmt.Errorf("%s: raw %q, want %q", where, ev.Raw, want)
		}
		if bytes.ContainsAny(ev.Data, "\r\n") {
			return fmt.Errorf("%s: data holds a line break", where)
		}
		var d struct {
			Type         string          `json:"type"`
			Index        *int            `json:"index"`
			Message      json.RawMessage `json:"message"`
			ContentBlock json.RawMessage `json:"content_block"`
			Delta        json.RawMessage `json:"delta"`
			Usage        json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("%s: data is not JSON: %v", where, err)
		}
		if d.Type != ev.Name {
			return fmt.Errorf("%s: data type %q", where, d.Type)
		}
		if stopped {
			return fmt.Errorf("%s: after message_stop", where)
		}
		if ev.Name != "message_start" && !started {
			return fmt.Errorf("%s: before message_start", where)
		}
		switch ev.Name {
		case "message_start":
			if started {
				return fmt.Errorf("%s: second message_start", where)
			}
			started = true
			if err := checkMessageStart(d.Message); err != nil {
				return fmt.Errorf("%s: %v", where, err)
			}
		case "ping":
			if pinged {
				return fmt.Errorf("%s: second ping", where)
			}
			if i == 0 || evs[i-1].Name != "content_block_start" {
				return fmt.Errorf("%s: ping not right after the first content_block_start", where)
			}
			pinged = true
		case "content_block_start":
			if open >= 0 {
				return fmt.Errorf("%s: block %d still open", where, open)
			}
			if deltaSeen {
				return fmt.Errorf("%s: after message_delta", where)
			}
			if d.Index == nil || *d.Index != next {
				return fmt.Errorf("%s: index %v, want %d", where, d.Index, next)
			}
			if !pinged && (i+1 >= len(evs) || evs[i+1].Name != "ping") && (c.complete || i+1 < len(evs)) {
				return fmt.Errorf("%s: first block not followed by ping", where)
			}
			typ, err := checkBlockStart(d.ContentBlock)
			if err != nil {
				return fmt.Errorf("%s: %v", where, err)
			}
			open, openType, signed, args = next, typ, false, nil
			next++
		case "content_block_delta":
			if d.Index == nil || *d.Index != open || open < 0 {
				return fmt.Errorf("%s: index %v, open block %d", where, d.Index, open)
			}
			var delta struct {
				Type        string  `json:"type"`
				Text        *string `json:"text"`
				Thinking    *string `json:"thinking"`
				Signature   *string `json:"signature"`
				PartialJSON *string `json:"partial_json"`
			}
			if err := json.Unmarshal(d.Delta, &delta); err != nil {
				return fmt.Errorf("%s: delta: %v", where, err)
			}
			if signed {
				return fmt.Errorf("%s: delta after signature_delta", where)
			}
			ok := false
			switch openType {
			case "text":
				ok = delta.Type == "text_delta" && delta.Text != nil
			case "thinking":
				ok = delta.Type == "thinking_delta" && delta.Thinking != nil ||
					delta.Type == "signature_delta" && delta.Signature != nil && *delta.Signature != ""
				signed = delta.Type == "signature_delta"
			case "tool_use":
				ok = delta.Type == "input_json_delta" && delta.PartialJSON != nil
				if ok {
					args = append(args, *delta.PartialJSON...)
				}
			}
			if !ok {
				return fmt.Errorf("%s: delta %s in a %s block", where, d.Delta, openType)
			}
		case "content_block_stop":
			if d.Index == nil || *d.Index != open || open < 0 {
				return fmt.Errorf("%s: index %v, open block %d", where, d.Index, open)
			}
			if openType == "thinking" && !signed {
				return fmt.Errorf("%s: thinking block closed without a signature", where)
			}
			if openType == "tool_use" && c.toolJSON && len(args) > 0 {
				var v map[string]any
				if err := json.Unmarshal(args, &v); err != nil {
					return fmt.Errorf("%s: tool arguments %q: %v", where, args, err)
				}
			}
			open = -1
		case "message_delta":
			if deltaSeen {
				return fmt.Errorf("%s: second message_delta", where)
			}
			if open >= 0 {
				return fmt.Errorf("%s: block %d still open", where, open)
			}
			deltaSeen = true
			if err := checkMessageDelta(d.Delta, d.Usage); err != nil {
				return fmt.Errorf("%s: %v", where, err)
			}
		case "message_stop":
			if !deltaSeen {
				return fmt.Errorf("%s: before message_delta", where)
			}
			stopped = true
		default:
			return fmt.Errorf("%s: unknown event", where)
		}
	}
	if c.complete && !stopped {
		return fmt.Errorf("stream of %d events does not end with message_stop", len(evs))
	}
	return nil
}

func checkMessageStart(m json.RawMessage) error {
	var msg struct {
		ID           string            `json:"id"`
		Type         string            `json:"type"`
		Role         string            `json:"role"`
		Model        *string           `json:"model"`
		Content      []json.RawMessage `json:"content"`
		StopReason   *string           `json:"stop_reason"`
		StopSequence *string           `json:"stop_sequence"`
		Usage        struct {
			InputTokens  *int64 `json:"input_tokens"`
			OutputTokens *int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(m, &msg); err != nil {
		return err
	}
	switch {
	case !strings.HasPrefix(msg.ID, "msg_") || len(msg.ID) < 10:
		return fmt.Errorf("message id %q", msg.ID)
	case msg.Type != "message" || msg.Role != "assistant" || msg.Model == nil:
		return fmt.Errorf("message %s", m)
	case msg.Content == nil || len(msg.Content) != 0 || msg.StopReason != nil || msg.StopSequence != nil:
		return fmt.Errorf("message not empty: %s", m)
	case msg.Usage.InputTokens == nil || msg.Usage.OutputTokens == nil:
		return fmt.Errorf("message usage: %s", m)
	}
	return nil
}

func checkBlockStart(cb json.RawMessage) (string, error) {
	var b struct {
		Type      string          `json:"type"`
		Text      *string         `json:"text"`
		Thinking  *string         `json:"thinking"`
		Signature *string         `json:"signature"`
		ID        string          `json:"id"`
		Name      string          `json:"name"`
		Input     json.RawMessage `json:"input"`
	}
	if err := json.Unmarshal(cb, &b); err != nil {
		return "", err
	}
	switch b.Type {
	case "text":
		if b.Text == nil || *b.Text != "" {
			return "", fmt.Errorf("text block start %s", cb)
		}
	case "thinking":
		if b.Thinking == nil || *b.Thinking != "" || b.Signature == nil || *b.Signature != "" {
			return "", fmt.Errorf("thinking block start %s", cb)
		}
	case "tool_use":
		if !toolIDRe.MatchString(b.ID) || b.Name == "" || string(b.Input) != "{}" {
			return "", fmt.Errorf("tool_use block start %s", cb)
		}
	default:
		return "", fmt.Errorf("block type %q", b.Type)
	}
	return b.Type, nil
}

func checkMessageDelta(delta, usage json.RawMessage) error {
	var d struct {
		StopReason   *string         `json:"stop_reason"`
		StopSequence json.RawMessage `json:"stop_sequence"`
	}
	if err := json.Unmarshal(delta, &d); err != nil {
		return err
	}
	if d.StopReason == nil || !validStopReasons[*d.StopReason] {
		return fmt.Errorf("stop_reason in %s", delta)
	}
	var seq *string
	if err := json.Unmarshal(d.StopSequence, &seq); err != nil || d.StopSequence == nil {
		return fmt.Errorf("stop_sequence in %s", delta)
	}
	if (seq != nil) != (*d.StopReason == "stop_sequence") {
		return fmt.Errorf("stop_sequence %s with stop_reason %s", d.StopSequence, *d.StopReason)
	}
	var u map[string]json.RawMessage
	if err := json.Unmarshal(usage, &u); err != nil {
		return fmt.Errorf("usage: %v", err)
	}
	for k, v := range u {
		var n int64
		if err := json.Unmarshal(v, &n); err != nil || n < 0 {
			return fmt.Errorf("usage %s = %s", k, v)
		}
	}
	if _, ok := u["output_tokens"]; !ok {
		return fmt.Errorf("usage without output_tokens: %s", usage)
	}
	return nil
}

// checkChatRequest reports the first way out is not a Chat Completions
// request this package should send: valid JSON, known roles, and every
// assistant message with tool calls followed by exactly one tool message per
// call, in order, and tool messages nowhere else.
func checkChatRequest(out []byte) error {
	var req struct {
		Model    *string `json:"model"`
		Messages []struct {
			Role             string          `json:"role"`
			Content          json.RawMessage `json:"content"`
			ReasoningContent string          `json:"reasoning_content"`
			Reasoning        string          `json:"reasoning"`
			ToolCallID       string          `json:"tool_call_id"`
			ToolCalls        []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"messages"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("output is not a request: %v", err)
	}
	if req.Model == nil || req.Messages == nil {
		return fmt.Errorf("output lacks model or messages")
	}
	var pending []string
	for i, m := range req.Messages {
		if len(pending) > 0 {
			if m.Role != "tool" || m.ToolCallID != pending[0] {
				return fmt.Errorf("message %d: want the tool result for %q, got %s %q", i, pending[0], m.Role, m.ToolCallID)
			}
			pending = pending[1:]
			continue
		}
		switch m.Role {
		case "system", "user":
		case "assistant":
			for _, tc := range m.ToolCalls {
				if tc.Type != "function" || tc.Function.Name == "" {
					return fmt.Errorf("message %d: tool call %+v", i, tc)
				}
				pending = append(pending, tc.ID)
			}
			empty := len(m.Content) == 0 || string(m.Content) == "null" || string(m.Content) == `""`
			if len(m.ToolCalls) == 0 && empty && m.ReasoningContent == "" && m.Reasoning == "" {
				return fmt.Errorf("message %d: empty assistant message", i)
			}
		default:
			return fmt.Errorf("message %d: role %q out of place", i, m.Role)
		}
	}
	if len(pending) > 0 {
		return fmt.Errorf("tool calls %q without results", pending)
	}
	return nil
}
