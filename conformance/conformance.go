// Package conformance checks that a provider gives Claude Code what it needs:
// a streamed text answer, a tool call with streamed arguments, a tool result
// round trip, thinking (and its block sent back on the next turn), an
// image, count_tokens, the prompt-cache usage fields and the quota headers.
//
// Each probe is one small request. The caller supplies the means to send it
// (Provider.Send): the balancer's command sends it through the balancer's own
// conversion and relay, so that a verdict is what Claude Code would get, not
// what the provider said before conversion. The package knows nothing of
// Caddy or of the balancer's configuration.
package conformance

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Provider types, as the balancer's configuration names them.
const (
	TypeAnthropic = "anthropic"
	TypeOpenAI    = "openai"
)

// Provider is one provider to check, and the means to ask it.
type Provider struct {
	// Balancer names the balancer the provider belongs to.
	Balancer string
	// Name is the provider's name in the configuration.
	Name string
	// Type is TypeAnthropic or TypeOpenAI.
	Type string
	// Auth says how the provider authenticates: api_key, auth_token, oauth,
	// passthrough or none.
	Auth string
	// Model is the model the probes ask for.
	Model string
	// Reasoning is an OpenAI-compatible provider's reasoning option ("" and
	// "off" mean thinking settings are not sent upstream).
	Reasoning string
	// Skip, when set, skips every probe for this reason.
	Skip string
	// Send sends a Messages request body and returns the answer as the
	// client would get it.
	Send func(ctx context.Context, body []byte) Reply
	// Count asks the provider's own count_tokens endpoint. Nil means counts
	// are never asked upstream; CountLocal says why.
	Count func(ctx context.Context, body []byte) CountReply
	// CountLocal says why count_tokens is always counted locally for this
	// provider, when Count is nil.
	CountLocal string
}

// Reply is the answer to one probe request, as the client gets it.
type Reply struct {
	// Status is the HTTP status sent to the client; 0 when the request could
	// not be sent at all.
	Status int
	// Header holds the response headers.
	Header http.Header
	// Stream reports an SSE answer.
	Stream bool
	// Body is the answer's bytes: the event stream, the JSON message, or the
	// error envelope.
	Body []byte
	// Error is the upstream's own error when the request failed before its
	// answer started (status and message), or why it could not be sent.
	Error string
	// StreamError says why a stream that had started ended in an error.
	StreamError string
}

// CountReply is the answer of a provider's count_tokens endpoint.
type CountReply struct {
	// Upstream reports that the provider answered with a count.
	Upstream bool
	// Status is the provider's HTTP status, when it answered.
	Status int
	// Body is the provider's answer, {"input_tokens": n}.
	Body []byte
	// Reason says why the count would be made locally: the provider's own
	// error when it gave one.
	Reason string
}

// Verdict is the outcome of one probe.
type Verdict string

// Verdicts. Only Fail fails the check: OptionalFail is a probe Claude Code can
// do without (count_tokens has a local fallback, quota headers exist on
// subscriptions only, a tiny prompt is never cached).
const (
	Pass         Verdict = "pass"
	Fail         Verdict = "fail"
	OptionalFail Verdict = "optional-fail"
	Skipped      Verdict = "skipped"
)

// Probe names, in the order they run.
const (
	ProbeText         = "text"
	ProbeToolCall     = "tool_call"
	ProbeToolResult   = "tool_result"
	ProbeThinking     = "thinking"
	ProbeSignature    = "thinking_round_trip"
	ProbeImage        = "image"
	ProbeCountTokens  = "count_tokens"
	ProbePromptCache  = "prompt_cache"
	ProbeQuotaHeaders = "quota_headers"
)

// Result is the verdict of one probe.
type Result struct {
	Probe   string  `json:"probe"`
	Verdict Verdict `json:"verdict"`
	// Required reports whether a failure of this probe fails the check.
	Required bool `json:"required"`
	// Status is the HTTP status of the probe's (last) answer.
	Status   int           `json:"status,omitempty"`
	Duration time.Duration `json:"-"`
	// DurationMS is Duration in milliseconds, for JSON.
	DurationMS int64 `json:"duration_ms"`
	// Detail says what was seen, or why the probe was skipped.
	Detail string `json:"detail,omitempty"`
	// Error is the upstream's own error, when the probe failed on one.
	Error string `json:"error,omitempty"`
}

// Report holds the verdicts on one provider.
type Report struct {
	Balancer string `json:"balancer"`
	Provider string `json:"provider"`
	Type     string `json:"type"`
	Auth     string `json:"auth"`
	Model    string `json:"model"`
	// Passed reports that no required probe failed.
	Passed bool     `json:"passed"`
	Probes []Result `json:"probes"`
}

// Failed returns the names of the required probes that failed.
func (r Report) Failed() []string {
	var out []string
	for _, p := range r.Probes {
		if p.Verdict == Fail {
			out = append(out, p.Probe)
		}
	}
	return out
}

// Options tune a run.
type Options struct {
	// Timeout bounds each probe request. Default: 60s.
	Timeout time.Duration
	// Parallel is how many providers are checked at once. Default: 4.
	Parallel int
}

// DefaultTimeout bounds each probe request unless Options say otherwise.
const DefaultTimeout = 60 * time.Second

// Run checks every provider and returns their reports in the same order.
// The probes of one provider run one after the other, since some send back
// what an earlier one received.
func Run(ctx context.Context, providers []Provider, opt Options) []Report {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Parallel <= 0 {
		opt.Parallel = 4
	}
	out := make([]Report, len(providers))
	sem := make(chan struct{}, opt.Parallel)
	var wg sync.WaitGroup
	for i := range providers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = check(ctx, &providers[i], opt.Timeout)
		}()
	}
	wg.Wait()
	return out
}

// Passed reports whether no required probe failed in any report.
func Passed(reports []Report) bool {
	for _, r := range reports {
		if !r.Passed {
			return false
		}
	}
	return true
}
