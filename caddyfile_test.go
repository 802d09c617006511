package claudebalancer

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/convert"
	"github.com/claude-balancer/caddy-claude-balancer/team"
)

// updateAdapt rewrites the expected JSON of the golden adapt tests from the
// current output; review the diff before keeping it.
var updateAdapt = flag.Bool("update-adapt", false, "rewrite testdata/caddyfile_adapt goldens")

func dur(d time.Duration) caddy.Duration { return caddy.Duration(d) }

// unmarshal parses a whole "claude_balancer { ... }" directive.
func unmarshal(input string) (Handler, error) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return h, err
}

// assertHandler compares every exported field on its own, so a failure names
// the field, and new fields are compared without touching this helper.
func assertHandler(t *testing.T, got, want Handler) {
	t.Helper()
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		f := gv.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if !reflect.DeepEqual(g, w) {
			gj, _ := json.Marshal(g)
			wj, _ := json.Marshal(w)
			t.Errorf("%s = %s (%#v)\nwant %s (%#v)", f.Name, gj, g, wj, w)
		}
	}
}

func TestUnmarshalCaddyfileBalancerOptions(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  Handler
	}{
		{
			name:  "no block leaves every option at its default",
			input: `claude_balancer`,
			want:  Handler{},
		},
		{
			name:  "empty block leaves every option at its default",
			input: "claude_balancer {\n}",
			want:  Handler{},
		},
		{
			name: "name",
			input: `claude_balancer {
				name team-a
			}`,
			want: Handler{Name: "team-a"},
		},
		{
			name: "strategy priority",
			input: `claude_balancer {
				strategy priority
			}`,
			want: Handler{Strategy: balancer.StrategyPriority},
		},
		{
			name: "strategy round_robin",
			input: `claude_balancer {
				strategy round_robin
			}`,
			want: Handler{Strategy: balancer.StrategyRoundRobin},
		},
		{
			name: "strategy random",
			input: `claude_balancer {
				strategy random
			}`,
			want: Handler{Strategy: balancer.StrategyRandom},
		},
		{
			name: "strategy weighted",
			input: `claude_balancer {
				strategy weighted
			}`,
			want: Handler{Strategy: balancer.StrategyWeighted},
		},
		{
			name: "strategy headroom",
			input: `claude_balancer {
				strategy headroom
			}`,
			want: Handler{Strategy: balancer.StrategyHeadroom},
		},
		{
			name: "strategy least_latency",
			input: `claude_balancer {
				strategy least_latency
			}`,
			want: Handler{Strategy: balancer.StrategyLeastLatency},
		},
		{
			name: "sticky duration",
			input: `claude_balancer {
				sticky 10m
			}`,
			want: Handler{Sticky: new(dur(10 * time.Minute))},
		},
		{
			name: "sticky in days",
			input: `claude_balancer {
				sticky 1d
			}`,
			want: Handler{Sticky: new(dur(24 * time.Hour))},
		},
		{
			name: "sticky 0 is kept to turn stickiness off",
			input: `claude_balancer {
				sticky 0
			}`,
			want: Handler{Sticky: new(dur(0))},
		},
		{
			name: "max_request_body in MiB",
			input: `claude_balancer {
				max_request_body 32MiB
			}`,
			want: Handler{MaxRequestBody: 32 << 20},
		},
		{
			name: "max_request_body in decimal MB",
			input: `claude_balancer {
				max_request_body 10MB
			}`,
			want: Handler{MaxRequestBody: 10_000_000},
		},
		{
			name: "max_request_body fractional GiB",
			input: `claude_balancer {
				max_request_body 1.5GiB
			}`,
			want: Handler{MaxRequestBody: 3 << 29},
		},
		{
			name: "max_request_body lower case unit",
			input: `claude_balancer {
				max_request_body 512kib
			}`,
			want: Handler{MaxRequestBody: 512 << 10},
		},
		{
			name: "max_request_body quoted with a space",
			input: `claude_balancer {
				max_request_body "2 MiB"
			}`,
			want: Handler{MaxRequestBody: 2 << 20},
		},
		{
			name: "max_request_body plain bytes",
			input: `claude_balancer {
				max_request_body 1048576
			}`,
			want: Handler{MaxRequestBody: 1 << 20},
		},
		{
			name: "list_models on two lines",
			input: `claude_balancer {
				list_models claude-opus-4-5 my-alias
				list_models extra
			}`,
			want: Handler{ListModels: []string{"claude-opus-4-5", "my-alias", "extra"}},
		},
		{
			name: "client_keys several on one line",
			input: `claude_balancer {
				client_keys {env.KEY_A} {env.KEY_B}
			}`,
			want: Handler{ClientKeys: []string{"{env.KEY_A}", "{env.KEY_B}"}},
		},
		{
			name: "named clients",
			input: `claude_balancer {
				client alice {
					key {env.ALICE_KEY} {env.ALICE_CI_KEY}
					rate 60/1m
					tokens 5000000/5h
					models *sonnet* *haiku*
					pricing *opus* 15 75 1.5 18.75
					pricing * 3 15 0.3 3.75
				}
				client bob {
					key {env.BOB_KEY}
				}
			}`,
			want: Handler{Clients: []team.ClientConfig{
				{Name: "alice", Keys: []string{"{env.ALICE_KEY}", "{env.ALICE_CI_KEY}"},
					Rate:    &team.Limit{Count: 60, Window: dur(time.Minute)},
					Tokens:  &team.Limit{Count: 5000000, Window: dur(5 * time.Hour)},
					Models:  []string{"*sonnet*", "*haiku*"},
					Pricing: []team.Price{{Model: "*opus*", Input: 15, Output: 75, CacheRead: 1.5, CacheWrite: 18.75}, {Model: "*", Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75}}},
				{Name: "bob", Keys: []string{"{env.BOB_KEY}"}},
			}},
		},
		{
			name: "client_keys lines accumulate",
			input: `claude_balancer {
				client_keys a
				client_keys b c
			}`,
			want: Handler{ClientKeys: []string{"a", "b", "c"}},
		},
		{
			name: "admin_key",
			input: `claude_balancer {
				admin_key {env.ADMIN_KEY}
			}`,
			want: Handler{AdminKey: "{env.ADMIN_KEY}"},
		},
		{
			name:  "dedup off",
			input: "claude_balancer {\n\tdedup off\n}",
			want:  Handler{Dedup: &DedupConfig{Off: true}},
		},
		{
			name: "dedup block",
			input: `claude_balancer {
				dedup {
					wait 30s
					replay 10s
					ignore max_tokens metadata
					max_buffer 4MiB
				}
			}`,
			want: Handler{Dedup: &DedupConfig{Wait: caddy.Duration(30 * time.Second), Replay: caddy.Duration(10 * time.Second),
				Ignore: []string{"max_tokens", "metadata"}, MaxBuffer: 4 << 20}},
		},
		{
			name: "dedup off in a block",
			input: `claude_balancer {
				dedup {
					off
				}
			}`,
			want: Handler{Dedup: &DedupConfig{Off: true}},
		},
		{
			name:  "count_tokens local",
			input: "claude_balancer {\n\tcount_tokens local\n}",
			want:  Handler{CountTokens: &CountTokensConfig{Local: true}},
		},
		{
			name: "count_tokens block",
			input: `claude_balancer {
				count_tokens {
					failure_threshold 3
					cooldown 1m
					timeout 5s
					encoding o200k_base
					calibration 1.2
					cache_size 1000
				}
			}`,
			want: Handler{CountTokens: &CountTokensConfig{FailureThreshold: 3, Cooldown: caddy.Duration(time.Minute),
				Timeout: caddy.Duration(5 * time.Second), Encoding: "o200k_base", Calibration: 1.2, CacheSize: 1000}},
		},
		{
			name: "oauth block",
			input: `claude_balancer {
				oauth {
					refresh_before 10m
					proxy socks5://127.0.0.1:1080
					authorize_url https://auth.example/authorize
					token_url https://auth.example/token
					client_id cid
					redirect_uri https://auth.example/callback
					scopes user:inference user:profile
					token_format form
				}
			}`,
			want: Handler{OAuth: &OAuthConfig{RefreshBefore: caddy.Duration(10 * time.Minute), Proxy: "socks5://127.0.0.1:1080",
				AuthorizeURL: "https://auth.example/authorize", TokenURL: "https://auth.example/token", ClientID: "cid",
				RedirectURI: "https://auth.example/callback", Scopes: []string{"user:inference", "user:profile"}, TokenFormat: "form"}},
		},
		{
			name: "oauth storage module",
			input: `claude_balancer {
				oauth {
					storage file_system /var/lib/tokens
				}
			}`,
			want: Handler{OAuth: &OAuthConfig{StorageRaw: json.RawMessage(`{"module":"file_system","root":"/var/lib/tokens"}`)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := unmarshal(tt.input)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			assertHandler(t, got, tt.want)
			if err := checkParsed(&got); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestUnmarshalCaddyfileHealth(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  *balancer.HealthConfig
	}{
		{
			name: "empty block",
			input: `claude_balancer {
				health {
				}
			}`,
			want: &balancer.HealthConfig{},
		},
		{
			name: "threshold",
			input: `claude_balancer {
				health {
					threshold 3
				}
			}`,
			want: &balancer.HealthConfig{Threshold: 3},
		},
		{
			name: "cooldown",
			input: `claude_balancer {
				health {
					cooldown 90s
				}
			}`,
			want: &balancer.HealthConfig{Cooldown: dur(90 * time.Second)},
		},
		{
			name: "reset_after",
			input: `claude_balancer {
				health {
					reset_after 1h30m
				}
			}`,
			want: &balancer.HealthConfig{ResetAfter: dur(90 * time.Minute)},
		},
		{
			name: "status codes",
			input: `claude_balancer {
				health {
					status 429 503
				}
			}`,
			want: &balancer.HealthConfig{Status: []int{429, 503}},
		},
		{
			name: "status range expands to every code in it",
			input: `claude_balancer {
				health {
					status 520-524
				}
			}`,
			want: &balancer.HealthConfig{Status: []int{520, 521, 522, 523, 524}},
		},
		{
			name: "status one-code range",
			input: `claude_balancer {
				health {
					status 529-529
				}
			}`,
			want: &balancer.HealthConfig{Status: []int{529}},
		},
		{
			name: "status codes and ranges mixed, lines accumulate",
			input: `claude_balancer {
				health {
					status 401 500-502
					status 529
				}
			}`,
			want: &balancer.HealthConfig{Status: []int{401, 500, 501, 502, 529}},
		},
		{
			name: "status bounds 100 and 599",
			input: `claude_balancer {
				health {
					status 100 599
				}
			}`,
			want: &balancer.HealthConfig{Status: []int{100, 599}},
		},
		{
			name: "near_limit",
			input: `claude_balancer {
				health {
					near_limit 0.75
				}
			}`,
			want: &balancer.HealthConfig{NearLimit: 0.75},
		},
		{
			name: "body_pattern several, quoted, lines accumulate",
			input: `claude_balancer {
				health {
					body_pattern overloaded "rate limit(ed)?"
					body_pattern (?i)quota
				}
			}`,
			want: &balancer.HealthConfig{BodyPattern: []string{"overloaded", "rate limit(ed)?", "(?i)quota"}},
		},
		{
			name: "every option",
			input: `claude_balancer {
				health {
					threshold 5
					cooldown 2m
					reset_after 10m
					status 429 500-503
					body_pattern overloaded_error
				}
			}`,
			want: &balancer.HealthConfig{
				Threshold:   5,
				Cooldown:    dur(2 * time.Minute),
				ResetAfter:  dur(10 * time.Minute),
				Status:      []int{429, 500, 501, 502, 503},
				BodyPattern: []string{"overloaded_error"},
			},
		},
		{
			name: "two blocks merge",
			input: `claude_balancer {
				health {
					threshold 4
				}
				health {
					cooldown 1m
				}
			}`,
			want: &balancer.HealthConfig{Threshold: 4, Cooldown: dur(time.Minute)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := unmarshal(tt.input)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			assertHandler(t, got, Handler{Health: tt.want})
			if err := checkParsed(&got); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestUnmarshalCaddyfileProvider(t *testing.T) {
	tests := []struct {
		name string
		// block is the body of "provider p { ... }".
		block string
		want  balancer.ProviderConfig
	}{
		{
			name:  "empty block sets only the name",
			block: "",
			want:  balancer.ProviderConfig{Name: "p"},
		},
		{
			name:  "type anthropic",
			block: "type anthropic",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeAnthropic},
		},
		{
			name:  "type openai",
			block: "type openai",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI},
		},
		{
			name:  "base_url",
			block: "base_url https://relay.example.com/claudecode",
			want:  balancer.ProviderConfig{Name: "p", BaseURL: "https://relay.example.com/claudecode"},
		},
		{
			name:  "api_key",
			block: "api_key {env.ANTHROPIC_API_KEY}",
			want:  balancer.ProviderConfig{Name: "p", APIKey: "{env.ANTHROPIC_API_KEY}"},
		},
		{
			name:  "auth_token",
			block: "auth_token {file./run/secrets/relay}",
			want:  balancer.ProviderConfig{Name: "p", AuthToken: "{file./run/secrets/relay}"},
		},
		{
			name:  "oauth",
			block: "oauth me@example.com",
			want:  balancer.ProviderConfig{Name: "p", OAuth: "me@example.com"},
		},
		{
			name:  "passthrough_auth",
			block: "passthrough_auth",
			want:  balancer.ProviderConfig{Name: "p", PassthroughAuth: true},
		},
		{
			name:  "header",
			block: "header anthropic-beta prompt-caching-2024-07-31",
			want: balancer.ProviderConfig{Name: "p", Headers: map[string][]string{
				"anthropic-beta": {"prompt-caching-2024-07-31"},
			}},
		},
		{
			name: "header repeated: same name appends, quoted value keeps spaces",
			block: `header X-Tag a
				header X-Tag b
				header User-Agent "claude balancer/1"
				header X-Secret {env.RELAY_SECRET}`,
			want: balancer.ProviderConfig{Name: "p", Headers: map[string][]string{
				"X-Tag":      {"a", "b"},
				"User-Agent": {"claude balancer/1"},
				"X-Secret":   {"{env.RELAY_SECRET}"},
			}},
		},
		{
			name:  "proxy",
			block: "proxy socks5://127.0.0.1:1080",
			want:  balancer.ProviderConfig{Name: "p", Proxy: "socks5://127.0.0.1:1080"},
		},
		{
			name:  "timeouts empty block",
			block: "timeouts {\n}",
			want:  balancer.ProviderConfig{Name: "p", Timeouts: &balancer.Timeouts{}},
		},
		{
			name:  "timeouts connect",
			block: "timeouts {\nconnect 5s\n}",
			want:  balancer.ProviderConfig{Name: "p", Timeouts: &balancer.Timeouts{Connect: dur(5 * time.Second)}},
		},
		{
			name:  "timeouts first_byte",
			block: "timeouts {\nfirst_byte 2m\n}",
			want:  balancer.ProviderConfig{Name: "p", Timeouts: &balancer.Timeouts{FirstByte: dur(2 * time.Minute)}},
		},
		{
			name:  "timeouts idle",
			block: "timeouts {\nidle 45s\n}",
			want:  balancer.ProviderConfig{Name: "p", Timeouts: &balancer.Timeouts{Idle: dur(45 * time.Second)}},
		},
		{
			name:  "timeouts all three",
			block: "timeouts {\nconnect 3s\nfirst_byte 30s\nidle 1m\n}",
			want: balancer.ProviderConfig{Name: "p", Timeouts: &balancer.Timeouts{
				Connect: dur(3 * time.Second), FirstByte: dur(30 * time.Second), Idle: dur(time.Minute),
			}},
		},
		{
			name:  "weight",
			block: "weight 3",
			want:  balancer.ProviderConfig{Name: "p", Weight: 3},
		},
		{
			name:  "disabled",
			block: "disabled",
			want:  balancer.ProviderConfig{Name: "p", Disabled: true},
		},
		{
			name:  "fold_system",
			block: "fold_system",
			want:  balancer.ProviderConfig{Name: "p", FoldSystem: true},
		},
		{
			name:  "max_tokens_field max_tokens",
			block: "type openai\nmax_tokens_field max_tokens",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{MaxTokensField: "max_tokens"}},
		},
		{
			name:  "max_tokens_field max_completion_tokens",
			block: "type openai\nmax_tokens_field max_completion_tokens",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{MaxTokensField: "max_completion_tokens"}},
		},
		{
			name:  "sanitize_schema",
			block: "type openai\nsanitize_schema",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{SanitizeSchema: true}},
		},
		{
			name:  "reasoning off",
			block: "type openai\nreasoning off",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{Reasoning: "off"}},
		},
		{
			name:  "reasoning effort",
			block: "type openai\nreasoning effort",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{Reasoning: "effort"}},
		},
		{
			name:  "reasoning low",
			block: "type openai\nreasoning low",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{Reasoning: "low"}},
		},
		{
			name:  "reasoning medium",
			block: "type openai\nreasoning medium",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{Reasoning: "medium"}},
		},
		{
			name:  "reasoning high",
			block: "type openai\nreasoning high",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{Reasoning: "high"}},
		},
		{
			name:  "thinking_history drop",
			block: "type openai\nthinking_history drop",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{ThinkingHistory: "drop"}},
		},
		{
			name:  "thinking_history reasoning_content",
			block: "type openai\nthinking_history reasoning_content",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{ThinkingHistory: "reasoning_content"}},
		},
		{
			name:  "resolvers",
			block: "resolvers 127.0.0.1:5353 10.0.0.1",
			want:  balancer.ProviderConfig{Name: "p", Resolvers: []string{"127.0.0.1:5353", "10.0.0.1"}},
		},
		{
			name:  "openai extras",
			block: "type openai\nmax_tokens 8192\nreasoning minimal\nreasoning_format reasoning\nthinking_history reasoning\ninline_system merge\nprompt_cache_key\nextra `{\"provider\":{\"sort\":\"throughput\"}}`",
			want: balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{MaxTokens: 8192, Reasoning: "minimal",
				ReasoningFormat: "reasoning", ThinkingHistory: "reasoning", InlineSystem: "merge", PromptCacheKey: true,
				Extra: json.RawMessage(`{"provider":{"sort":"throughput"}}`)}},
		},
		{
			name:  "top_k",
			block: "type openai\ntop_k",
			want:  balancer.ProviderConfig{Name: "p", Type: balancer.TypeOpenAI, OpenAI: &convert.Options{TopK: true}},
		},
		{
			name: "every openai option at once",
			block: `type openai
				base_url https://openrouter.ai/api/v1
				api_key {env.OPENROUTER_API_KEY}
				max_tokens_field max_completion_tokens
				sanitize_schema
				reasoning effort
				thinking_history reasoning_content
				top_k`,
			want: balancer.ProviderConfig{
				Name: "p", Type: balancer.TypeOpenAI, BaseURL: "https://openrouter.ai/api/v1",
				APIKey: "{env.OPENROUTER_API_KEY}",
				OpenAI: &convert.Options{
					MaxTokensField: "max_completion_tokens", SanitizeSchema: true, Reasoning: "effort",
					ThinkingHistory: "reasoning_content", TopK: true,
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := "claude_balancer {\nprovider p {\n" + tt.block + "\n}\n}"
			got, err := unmarshal(input)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			assertHandler(t, got, Handler{Providers: []balancer.ProviderConfig{tt.want}})
			if err := checkParsed(&got); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestUnmarshalCaddyfileProvidersAndRoutes(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  Handler
	}{
		{
			name: "provider without a block",
			input: `claude_balancer {
				provider bare
			}`,
			want: Handler{Providers: []balancer.ProviderConfig{{Name: "bare"}}},
		},
		{
			name: "providers keep declaration order",
			input: `claude_balancer {
				provider zeta {
					passthrough_auth
				}
				provider alpha {
					api_key k
				}
				provider mid
			}`,
			want: Handler{Providers: []balancer.ProviderConfig{
				{Name: "zeta", PassthroughAuth: true},
				{Name: "alpha", APIKey: "k"},
				{Name: "mid"},
			}},
		},
		{
			name: "route with one pattern and one target",
			input: `claude_balancer {
				provider a
				route * {
					to a
				}
			}`,
			want: Handler{
				Providers: []balancer.ProviderConfig{{Name: "a"}},
				Routes:    []balancer.RouteConfig{{Match: []string{"*"}, To: []balancer.TargetConfig{{Provider: "a"}}}},
			},
		},
		{
			name: "route with several patterns, targets in order, model rewrite",
			input: `claude_balancer {
				provider a
				provider b
				route *opus* *sonnet* claude-3-5-haiku-20241022 {
					to a
					to b anthropic/claude-sonnet-4
				}
			}`,
			want: Handler{
				Providers: []balancer.ProviderConfig{{Name: "a"}, {Name: "b"}},
				Routes: []balancer.RouteConfig{{
					Match: []string{"*opus*", "*sonnet*", "claude-3-5-haiku-20241022"},
					To:    []balancer.TargetConfig{{Provider: "a"}, {Provider: "b", Model: "anthropic/claude-sonnet-4"}},
				}},
			},
		},
		{
			name: "routes keep file order and may name providers declared later",
			input: `claude_balancer {
				route *haiku* {
					to late
				}
				route * {
					to early
					to late
				}
				provider early
				provider late
			}`,
			want: Handler{
				Providers: []balancer.ProviderConfig{{Name: "early"}, {Name: "late"}},
				Routes: []balancer.RouteConfig{
					{Match: []string{"*haiku*"}, To: []balancer.TargetConfig{{Provider: "late"}}},
					{Match: []string{"*"}, To: []balancer.TargetConfig{{Provider: "early"}, {Provider: "late"}}},
				},
			},
		},
		{
			name: "the same provider may appear twice in a route with different models",
			input: `claude_balancer {
				provider or
				route * {
					to or a/one
					to or b/two
				}
			}`,
			want: Handler{
				Providers: []balancer.ProviderConfig{{Name: "or"}},
				Routes: []balancer.RouteConfig{{
					Match: []string{"*"},
					To:    []balancer.TargetConfig{{Provider: "or", Model: "a/one"}, {Provider: "or", Model: "b/two"}},
				}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := unmarshal(tt.input)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			assertHandler(t, got, tt.want)
			if err := checkParsed(&got); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestUnmarshalCaddyfileEveryOption sets every option at once, so options
// that overwrite one another would show here.
func TestUnmarshalCaddyfileEveryOption(t *testing.T) {
	got, err := unmarshal(`claude_balancer {
		name team-a
		strategy weighted
		sticky 15m
		max_request_body 64MiB
		client_keys {env.KEY_A} {env.KEY_B}
		admin_key {env.ADMIN_KEY}
		health {
			threshold 3
			cooldown 1m
			reset_after 10m
			status 429 520-522
			body_pattern overloaded
		}
		provider direct {
			type anthropic
			base_url https://api.anthropic.com
			api_key {env.ANTHROPIC_API_KEY}
			header anthropic-beta b1
			proxy http://proxy.internal:3128
			timeouts {
				connect 5s
				first_byte 45s
				idle 90s
			}
			weight 4
		}
		provider relay {
			base_url https://relay.example.com
			auth_token {env.RELAY_TOKEN}
			disabled
		}
		provider max {
			oauth me@example.com
		}
		provider mine {
			base_url https://api.anthropic.com
			passthrough_auth
		}
		provider router {
			type openai
			base_url https://openrouter.ai/api/v1
			api_key {env.OPENROUTER_API_KEY}
			max_tokens_field max_completion_tokens
			sanitize_schema
			reasoning high
			thinking_history reasoning_content
			top_k
		}
		route *opus* {
			to max
			to router anthropic/claude-opus-4
		}
		route * {
			to direct
			to relay
			to mine
		}
	}`)
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	assertHandler(t, got, Handler{
		Name:           "team-a",
		Strategy:       balancer.StrategyWeighted,
		Sticky:         new(dur(15 * time.Minute)),
		MaxRequestBody: 64 << 20,
		ClientKeys:     []string{"{env.KEY_A}", "{env.KEY_B}"},
		AdminKey:       "{env.ADMIN_KEY}",
		Health: &balancer.HealthConfig{
			Threshold:   3,
			Cooldown:    dur(time.Minute),
			ResetAfter:  dur(10 * time.Minute),
			Status:      []int{429, 520, 521, 522},
			BodyPattern: []string{"overloaded"},
		},
		Providers: []balancer.ProviderConfig{
			{
				Name: "direct", Type: balancer.TypeAnthropic, BaseURL: "https://api.anthropic.com",
				APIKey:  "{env.ANTHROPIC_API_KEY}",
				Headers: map[string][]string{"anthropic-beta": {"b1"}},
				Proxy:   "http://proxy.internal:3128",
				Timeouts: &balancer.Timeouts{
					Connect: dur(5 * time.Second), FirstByte: dur(45 * time.Second), Idle: dur(90 * time.Second),
				},
				Weight: 4,
			},
			{Name: "relay", BaseURL: "https://relay.example.com", AuthToken: "{env.RELAY_TOKEN}", Disabled: true},
			{Name: "max", OAuth: "me@example.com"},
			{Name: "mine", BaseURL: "https://api.anthropic.com", PassthroughAuth: true},
			{
				Name: "router", Type: balancer.TypeOpenAI, BaseURL: "https://openrouter.ai/api/v1",
				APIKey: "{env.OPENROUTER_API_KEY}",
				OpenAI: &convert.Options{
					MaxTokensField: "max_completion_tokens", SanitizeSchema: true, Reasoning: "high",
					ThinkingHistory: "reasoning_content", TopK: true,
				},
			},
		},
		Routes: []balancer.RouteConfig{
			{Match: []string{"*opus*"}, To: []balancer.TargetConfig{{Provider: "max"}, {Provider: "router", Model: "anthropic/claude-opus-4"}}},
			{Match: []string{"*"}, To: []balancer.TargetConfig{{Provider: "direct"}, {Provider: "relay"}, {Provider: "mine"}}},
		},
	})
	if err := checkParsed(&got); err != nil {
		t.Error(err)
	}
}

// TestUnmarshalCaddyfileErrors checks that each bad input is rejected with a
// message saying what is wrong and naming the file and line at fault.
func TestUnmarshalCaddyfileErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		// line is the line the error must name; want is a part of the message.
		line int
		want string
	}{
		// The directive itself.
		{"directive with an argument", "claude_balancer extra {\n}", 1, "wrong argument count"},
		{"unknown subdirective", "claude_balancer {\n\tbogus 1\n}", 2, `unrecognized subdirective "bogus"`},
		{"provider option at the top level", "claude_balancer {\n\tapi_key k\n}", 2, `unrecognized subdirective "api_key"`},
		{"route option at the top level", "claude_balancer {\n\tto a\n}", 2, `unrecognized subdirective "to"`},
		{"block after a single-value option", "claude_balancer {\n\tname x {\n\t}\n}", 2, "unrecognized subdirective"},

		// name, strategy, sticky, max_request_body, client_keys, admin_key.
		{"list_models without names", "claude_balancer {\n\tlist_models\n}", 2, "wrong argument count"},
		{"list_models with a pattern", "claude_balancer {\n\tlist_models a *sonnet*\n}", 2, `list_models names models; "*sonnet*" is a pattern`},
		{"name without value", "claude_balancer {\n\tname\n}", 2, "wrong argument count"},
		{"name with two values", "claude_balancer {\n\tname a b\n}", 2, "wrong argument count"},
		{"strategy without value", "claude_balancer {\n\tstrategy\n}", 2, "wrong argument count"},
		{"strategy with two values", "claude_balancer {\n\tstrategy random weighted\n}", 2, "wrong argument count"},
		{"unknown strategy", "claude_balancer {\n\tstrategy fastest\n}", 2, `unknown strategy "fastest"`},
		{"strategy is case sensitive", "claude_balancer {\n\tstrategy Random\n}", 2, `unknown strategy "Random"`},
		{"sticky without value", "claude_balancer {\n\tsticky\n}", 2, "wrong argument count"},
		{"sticky with two values", "claude_balancer {\n\tsticky 1m 2m\n}", 2, "wrong argument count"},
		{"sticky not a duration", "claude_balancer {\n\tsticky soon\n}", 2, `invalid duration "soon"`},
		{"sticky without unit", "claude_balancer {\n\tsticky 5\n}", 2, `invalid duration "5"`},
		{"sticky negative", "claude_balancer {\n\tsticky -1m\n}", 2, `duration "-1m" must not be negative`},
		{"max_request_body without value", "claude_balancer {\n\tmax_request_body\n}", 2, "wrong argument count"},
		{"max_request_body with two values", "claude_balancer {\n\tmax_request_body 1MB 2MB\n}", 2, "wrong argument count"},
		{"max_request_body not a size", "claude_balancer {\n\tmax_request_body lots\n}", 2, `invalid size "lots"`},
		{"max_request_body unknown unit", "claude_balancer {\n\tmax_request_body 10XB\n}", 2, `invalid size "10XB"`},
		{"max_request_body zero", "claude_balancer {\n\tmax_request_body 0\n}", 2, `invalid size "0"`},
		{"max_request_body beyond int64", "claude_balancer {\n\tmax_request_body 8EiB\n}", 2, `invalid size "8EiB"`},
		{"duplicate provider names the first line", "claude_balancer {\n\tprovider a\n\tprovider a {\n\t\tweight 2\n\t}\n}", 3, `provider "a" is declared twice`},
		{"route without to names its line", "claude_balancer {\n\troute * {\n\t}\n}", 2, `has no "to" target`},
		{"invalid body_pattern", "claude_balancer {\n\thealth {\n\t\tbody_pattern (\n\t}\n}", 3, "invalid body_pattern"},
		{"extra not an object", "claude_balancer {\n\tprovider p {\n\t\ttype openai\n\t\textra [1]\n\t}\n}", 4, "extra must be a JSON object"},
		{"max_tokens cap not a number", "claude_balancer {\n\tprovider p {\n\t\ttype openai\n\t\tmax_tokens lots\n\t}\n}", 4, "max_tokens must be a positive integer"},
		{"oauth with type openai", "claude_balancer {\n\tprovider p {\n\t\ttype openai\n\t\toauth me@x.com\n\t}\n}", 2, "need type anthropic"},
		{"openai option on anthropic", "claude_balancer {\n\tprovider p {\n\t\ttop_k\n\t}\n}", 2, "need type openai"},
		{"fold_system on openai", "claude_balancer {\n\tprovider p {\n\t\tfold_system\n\t\ttype openai\n\t}\n}", 2, "fold_system is for anthropic providers"},
		{"empty provider name", "claude_balancer {\n\tprovider \"\"\n}", 2, "invalid provider name"},
		{"empty route pattern", "claude_balancer {\n\troute \"\" {\n\t\tto a\n\t}\n}", 2, "empty model pattern"},
		{"invalid header name", "claude_balancer {\n\tprovider p {\n\t\theader \"Bad Name\" v\n\t}\n}", 3, "invalid header name"},
		{"dedup bad argument", "claude_balancer {\n\tdedup maybe\n}", 2, "dedup takes only"},
		{"dedup unknown option", "claude_balancer {\n\tdedup {\n\t\tfast\n\t}\n}", 3, `unrecognized dedup option "fast"`},
		{"dedup bad duration", "claude_balancer {\n\tdedup {\n\t\twait soon\n\t}\n}", 3, "invalid duration"},
		{"count_tokens bad argument", "claude_balancer {\n\tcount_tokens remote\n}", 2, "count_tokens takes only"},
		{"count_tokens bad calibration", "claude_balancer {\n\tcount_tokens {\n\t\tcalibration -1\n\t}\n}", 3, "calibration must be a positive number"},
		{"count_tokens unknown option", "claude_balancer {\n\tcount_tokens {\n\t\tfast\n\t}\n}", 3, `unrecognized count_tokens option "fast"`},
		{"oauth unknown option", "claude_balancer {\n\toauth {\n\t\tfast\n\t}\n}", 3, `unrecognized oauth option "fast"`},
		{"oauth bad token_format", "claude_balancer {\n\toauth {\n\t\ttoken_format xml\n\t}\n}", 3, "token_format must be json or form"},
		{"oauth unknown storage", "claude_balancer {\n\toauth {\n\t\tstorage nowhere\n\t}\n}", 3, "nowhere"},
		{"max_request_body negative", "claude_balancer {\n\tmax_request_body -1MB\n}", 2, `invalid size "-1MB"`},
		{"max_request_body beyond uint64", "claude_balancer {\n\tmax_request_body 20EiB\n}", 2, `invalid size "20EiB"`},
		{"client_keys without value", "claude_balancer {\n\tclient_keys\n}", 2, "wrong argument count"},
		{"client without a name", "claude_balancer {\n\tclient {\n\t\tkey k\n\t}\n}", 2, "wrong argument count"},
		{"client without a key", "claude_balancer {\n\tclient a {\n\t\trate 1/1m\n\t}\n}", 4, `client "a" has no key`},
		{"client declared twice", "claude_balancer {\n\tclient a {\n\t\tkey k\n\t}\n\tclient a {\n\t\tkey j\n\t}\n}", 7, `client "a" is declared twice`},
		{"client with a reserved name", "claude_balancer {\n\tclient local {\n\t\tkey k\n\t}\n}", 2, "reserved"},
		{"client rate without a window", "claude_balancer {\n\tclient a {\n\t\trate 60\n\t}\n}", 3, "want <count>/<window>"},
		{"client rate zero", "claude_balancer {\n\tclient a {\n\t\trate 0/1m\n\t}\n}", 3, "positive integer"},
		{"client tokens window too short", "claude_balancer {\n\tclient a {\n\t\ttokens 10/1ms\n\t}\n}", 3, "at least 1s"},
		{"client pricing short", "claude_balancer {\n\tclient a {\n\t\tpricing * 1 2\n\t}\n}", 3, "four prices"},
		{"client pricing negative", "claude_balancer {\n\tclient a {\n\t\tpricing * 1 2 3 -4\n\t}\n}", 3, `invalid price "-4"`},
		{"client unknown option", "claude_balancer {\n\tclient a {\n\t\tkey k\n\t\tbudget 5\n\t}\n}", 4, `unrecognized client option "budget"`},
		{"admin_key without value", "claude_balancer {\n\tadmin_key\n}", 2, "wrong argument count"},
		{"admin_key with two values", "claude_balancer {\n\tadmin_key a b\n}", 2, "wrong argument count"},

		// health.
		{"health with an argument", "claude_balancer {\n\thealth passive {\n\t}\n}", 2, "wrong argument count"},
		{"unknown health option", "claude_balancer {\n\thealth {\n\t\tinterval 10s\n\t}\n}", 3, `unrecognized health option "interval"`},
		{"threshold without value", "claude_balancer {\n\thealth {\n\t\tthreshold\n\t}\n}", 3, "wrong argument count"},
		{"threshold with two values", "claude_balancer {\n\thealth {\n\t\tthreshold 1 2\n\t}\n}", 3, "wrong argument count"},
		{"threshold zero", "claude_balancer {\n\thealth {\n\t\tthreshold 0\n\t}\n}", 3, `invalid number "0"`},
		{"near_limit above one", "claude_balancer {\n\thealth {\n\t\tnear_limit 1.5\n\t}\n}", 3, `invalid near_limit "1.5"`},
		{"near_limit zero", "claude_balancer {\n\thealth {\n\t\tnear_limit 0\n\t}\n}", 3, `invalid near_limit "0"`},
		{"near_limit a percentage", "claude_balancer {\n\thealth {\n\t\tnear_limit 90%\n\t}\n}", 3, `invalid near_limit "90%"`},
		{"threshold negative", "claude_balancer {\n\thealth {\n\t\tthreshold -2\n\t}\n}", 3, `invalid number "-2"`},
		{"threshold not a number", "claude_balancer {\n\thealth {\n\t\tthreshold two\n\t}\n}", 3, `invalid number "two"`},
		{"threshold fractional", "claude_balancer {\n\thealth {\n\t\tthreshold 1.5\n\t}\n}", 3, `invalid number "1.5"`},
		{"cooldown without value", "claude_balancer {\n\thealth {\n\t\tcooldown\n\t}\n}", 3, "wrong argument count"},
		{"cooldown not a duration", "claude_balancer {\n\thealth {\n\t\tcooldown later\n\t}\n}", 3, `invalid duration "later"`},
		{"cooldown negative", "claude_balancer {\n\thealth {\n\t\tcooldown -5m\n\t}\n}", 3, "must not be negative"},
		{"reset_after without value", "claude_balancer {\n\thealth {\n\t\treset_after\n\t}\n}", 3, "wrong argument count"},
		{"reset_after with two values", "claude_balancer {\n\thealth {\n\t\treset_after 5 minutes\n\t}\n}", 3, "wrong argument count"},
		{"reset_after bad unit", "claude_balancer {\n\thealth {\n\t\treset_after 5y\n\t}\n}", 3, `invalid duration "5y"`},
		{"status without value", "claude_balancer {\n\thealth {\n\t\tstatus\n\t}\n}", 3, "wrong argument count"},
		{"status not a number", "claude_balancer {\n\thealth {\n\t\tstatus 503 abc\n\t}\n}", 3, `invalid status "abc"`},
		{"status class", "claude_balancer {\n\thealth {\n\t\tstatus 5xx\n\t}\n}", 3, `invalid status "5xx"`},
		{"status below 100", "claude_balancer {\n\thealth {\n\t\tstatus 99\n\t}\n}", 3, `invalid status "99"`},
		{"status above 599", "claude_balancer {\n\thealth {\n\t\tstatus 600\n\t}\n}", 3, `invalid status "600"`},
		{"status range reversed", "claude_balancer {\n\thealth {\n\t\tstatus 524-520\n\t}\n}", 3, `invalid status "524-520"`},
		{"status range open end", "claude_balancer {\n\thealth {\n\t\tstatus 520-\n\t}\n}", 3, `invalid status "520-"`},
		{"status range open start", "claude_balancer {\n\thealth {\n\t\tstatus -524\n\t}\n}", 3, `invalid status "-524"`},
		{"status range of three", "claude_balancer {\n\thealth {\n\t\tstatus 500-510-520\n\t}\n}", 3, `invalid status "500-510-520"`},
		{"status range past 599", "claude_balancer {\n\thealth {\n\t\tstatus 590-610\n\t}\n}", 3, `invalid status "590-610"`},
		{"status range below 100", "claude_balancer {\n\thealth {\n\t\tstatus 50-150\n\t}\n}", 3, `invalid status "50-150"`},
		{"body_pattern without value", "claude_balancer {\n\thealth {\n\t\tbody_pattern\n\t}\n}", 3, "wrong argument count"},
		{"error on a later line of the block", "claude_balancer {\n\thealth {\n\t\tthreshold 2\n\n\t\tcooldown nope\n\t}\n}", 5, `invalid duration "nope"`},

		// provider.
		{"provider without name", "claude_balancer {\n\tprovider\n}", 2, "provider needs a name"},
		{"provider without name before its block", "claude_balancer {\n\tprovider {\n\t}\n}", 2, "provider needs a name"},
		{"provider with two names", "claude_balancer {\n\tprovider a b {\n\t}\n}", 2, "wrong argument count"},
		{"unknown provider option", "claude_balancer {\n\tprovider a {\n\t\tmodel x\n\t}\n}", 3, `unrecognized provider option "model"`},
		{"balancer option inside a provider", "claude_balancer {\n\tprovider a {\n\t\tstrategy random\n\t}\n}", 3, `unrecognized provider option "strategy"`},
		{"type without value", "claude_balancer {\n\tprovider a {\n\t\ttype\n\t}\n}", 3, "wrong argument count"},
		{"type with two values", "claude_balancer {\n\tprovider a {\n\t\ttype openai anthropic\n\t}\n}", 3, "wrong argument count"},
		{"unknown provider type", "claude_balancer {\n\tprovider a {\n\t\ttype gemini\n\t}\n}", 3, `unknown provider type "gemini"`},
		{"base_url without value", "claude_balancer {\n\tprovider a {\n\t\tbase_url\n\t}\n}", 3, "wrong argument count"},
		{"base_url with two values", "claude_balancer {\n\tprovider a {\n\t\tbase_url http://a http://b\n\t}\n}", 3, "wrong argument count"},
		{"api_key without value", "claude_balancer {\n\tprovider a {\n\t\tapi_key\n\t}\n}", 3, "wrong argument count"},
		{"api_key with two values", "claude_balancer {\n\tprovider a {\n\t\tapi_key k1 k2\n\t}\n}", 3, "wrong argument count"},
		{"auth_token without value", "claude_balancer {\n\tprovider a {\n\t\tauth_token\n\t}\n}", 3, "wrong argument count"},
		{"oauth without value", "claude_balancer {\n\tprovider a {\n\t\toauth\n\t}\n}", 3, "wrong argument count"},
		{"oauth with two values", "claude_balancer {\n\tprovider a {\n\t\toauth a@x b@x\n\t}\n}", 3, "wrong argument count"},
		{"passthrough_auth with a value", "claude_balancer {\n\tprovider a {\n\t\tpassthrough_auth yes\n\t}\n}", 3, "wrong argument count"},
		{"api_key and auth_token", "claude_balancer {\n\tprovider a {\n\t\tapi_key k\n\t\tauth_token t\n\t}\n}", 4, `provider "a": choose one of`},
		{"api_key and oauth", "claude_balancer {\n\tprovider a {\n\t\tapi_key k\n\t\toauth me@example.com\n\t}\n}", 4, `provider "a": choose one of`},
		{"auth_token and passthrough_auth", "claude_balancer {\n\tprovider a {\n\t\tauth_token t\n\t\tpassthrough_auth\n\t}\n}", 4, `provider "a": choose one of`},
		{"oauth and passthrough_auth", "claude_balancer {\n\tprovider a {\n\t\tpassthrough_auth\n\t\toauth me@example.com\n\t}\n}", 4, `provider "a": choose one of`},
		{"api_key twice", "claude_balancer {\n\tprovider a {\n\t\tapi_key k1\n\t\tapi_key k2\n\t}\n}", 4, `provider "a": choose one of`},
		{"header without value", "claude_balancer {\n\tprovider a {\n\t\theader X-Foo\n\t}\n}", 3, "header needs a name and a value"},
		{"header without name", "claude_balancer {\n\tprovider a {\n\t\theader\n\t}\n}", 3, "header needs a name and a value"},
		{"header with three values", "claude_balancer {\n\tprovider a {\n\t\theader X-Foo a b\n\t}\n}", 3, "header needs a name and a value"},
		{"proxy without value", "claude_balancer {\n\tprovider a {\n\t\tproxy\n\t}\n}", 3, "wrong argument count"},
		{"timeouts with an argument", "claude_balancer {\n\tprovider a {\n\t\ttimeouts 5s\n\t}\n}", 3, "wrong argument count"},
		{"unknown timeout", "claude_balancer {\n\tprovider a {\n\t\ttimeouts {\n\t\t\tread 5s\n\t\t}\n\t}\n}", 4, `unrecognized timeout "read"`},
		{"connect without value", "claude_balancer {\n\tprovider a {\n\t\ttimeouts {\n\t\t\tconnect\n\t\t}\n\t}\n}", 4, "wrong argument count"},
		{"connect not a duration", "claude_balancer {\n\tprovider a {\n\t\ttimeouts {\n\t\t\tconnect fast\n\t\t}\n\t}\n}", 4, `invalid duration "fast"`},
		{"first_byte negative", "claude_balancer {\n\tprovider a {\n\t\ttimeouts {\n\t\t\tfirst_byte -1s\n\t\t}\n\t}\n}", 4, "must not be negative"},
		{"first_byte with two values", "claude_balancer {\n\tprovider a {\n\t\ttimeouts {\n\t\t\tfirst_byte 1s 2s\n\t\t}\n\t}\n}", 4, "wrong argument count"},
		{"idle not a duration", "claude_balancer {\n\tprovider a {\n\t\ttimeouts {\n\t\t\tidle forever\n\t\t}\n\t}\n}", 4, `invalid duration "forever"`},
		{"weight without value", "claude_balancer {\n\tprovider a {\n\t\tweight\n\t}\n}", 3, "wrong argument count"},
		{"weight zero", "claude_balancer {\n\tprovider a {\n\t\tweight 0\n\t}\n}", 3, `invalid number "0"`},
		{"weight negative", "claude_balancer {\n\tprovider a {\n\t\tweight -1\n\t}\n}", 3, `invalid number "-1"`},
		{"weight not a number", "claude_balancer {\n\tprovider a {\n\t\tweight heavy\n\t}\n}", 3, `invalid number "heavy"`},
		{"weight too large", "claude_balancer {\n\tprovider a {\n\t\tweight 9223372036854775807\n\t}\n}", 3, "too large"},
		{"weight overflowing int", "claude_balancer {\n\tprovider a {\n\t\tweight 99999999999999999999\n\t}\n}", 3, "invalid number"},
		{"disabled with a value", "claude_balancer {\n\tprovider a {\n\t\tdisabled true\n\t}\n}", 3, "wrong argument count"},
		{"fold_system with a value", "claude_balancer {\n\tprovider a {\n\t\tfold_system on\n\t}\n}", 3, "wrong argument count"},
		{"max_tokens_field without value", "claude_balancer {\n\tprovider a {\n\t\tmax_tokens_field\n\t}\n}", 3, "wrong argument count"},
		{"max_tokens_field unknown", "claude_balancer {\n\tprovider a {\n\t\tmax_tokens_field max_output_tokens\n\t}\n}", 3, "max_tokens_field must be max_tokens or max_completion_tokens"},
		{"sanitize_schema with a value", "claude_balancer {\n\tprovider a {\n\t\tsanitize_schema on\n\t}\n}", 3, "wrong argument count"},
		{"reasoning without value", "claude_balancer {\n\tprovider a {\n\t\treasoning\n\t}\n}", 3, "wrong argument count"},
		{"reasoning unknown", "claude_balancer {\n\tprovider a {\n\t\treasoning extreme\n\t}\n}", 3, "reasoning must be off, effort, minimal, low, medium or high"},
		{"thinking_history without value", "claude_balancer {\n\tprovider a {\n\t\tthinking_history\n\t}\n}", 3, "wrong argument count"},
		{"thinking_history unknown", "claude_balancer {\n\tprovider a {\n\t\tthinking_history keep\n\t}\n}", 3, "thinking_history must be drop, reasoning_content or reasoning"},
		{"top_k with a value", "claude_balancer {\n\tprovider a {\n\t\ttop_k 40\n\t}\n}", 3, "wrong argument count"},
		{"block after a flag", "claude_balancer {\n\tprovider a {\n\t\tdisabled {\n\t\t}\n\t}\n}", 3, "unrecognized provider option"},
		{"duplicate provider", "claude_balancer {\n\tprovider a\n\tprovider b\n\tprovider a\n}", 4, `provider "a" is declared twice`},

		// route.
		{"route without pattern", "claude_balancer {\n\tprovider a\n\troute {\n\t\tto a\n\t}\n}", 3, "route needs at least one model pattern"},
		{"route without block", "claude_balancer {\n\tprovider a\n\troute *\n}", 3, `route * has no "to" target`},
		{"route with unknown option", "claude_balancer {\n\tprovider a\n\troute * {\n\t\tsend a\n\t}\n}", 4, `unrecognized route option "send"`},
		{"to without provider", "claude_balancer {\n\tprovider a\n\troute * {\n\t\tto\n\t}\n}", 4, "to needs a provider and optionally a model"},
		{"to with three values", "claude_balancer {\n\tprovider a\n\troute * {\n\t\tto a m extra\n\t}\n}", 4, "to needs a provider and optionally a model"},
		{"route naming an unknown provider", "claude_balancer {\n\tprovider a\n\n\troute *opus* {\n\t\tto a\n\t\tto nope\n\t}\n}", 4, `route names unknown provider "nope"`},
		{"unknown provider in a route declared before the providers", "claude_balancer {\n\troute * {\n\t\tto ghost\n\t}\n\tprovider a\n}", 2, `route names unknown provider "ghost"`},
		{"unknown provider in the second route", "claude_balancer {\n\tprovider a\n\troute *haiku* {\n\t\tto a\n\t}\n\troute * {\n\t\tto a\n\t\tto b\n\t}\n}", 6, `route names unknown provider "b"`},
		{"route naming a provider without any provider", "claude_balancer {\n\troute * {\n\t\tto a\n\t}\n}", 2, `route names unknown provider "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := unmarshal(tt.input)
			if err == nil {
				t.Fatal("unexpected success")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if pos := fmt.Sprintf("Testfile:%d", tt.line); !strings.Contains(err.Error(), pos) {
				t.Errorf("error %q does not name %s", err, pos)
			}
		})
	}
}

// checkParsed holds what every successfully parsed config satisfies,
// whatever the input: values out of range are rejected with a position at
// parse time rather than later in Provision, which has none.
func checkParsed(h *Handler) error {
	switch h.Strategy {
	case "", balancer.StrategyPriority, balancer.StrategyRoundRobin, balancer.StrategyRandom,
		balancer.StrategyWeighted, balancer.StrategyLeastLatency, balancer.StrategyHeadroom:
	default:
		return fmt.Errorf("strategy %q accepted", h.Strategy)
	}
	if h.Sticky != nil && *h.Sticky < 0 {
		return fmt.Errorf("negative sticky %v accepted", *h.Sticky)
	}
	if h.MaxRequestBody < 0 {
		return fmt.Errorf("negative max_request_body %d accepted", h.MaxRequestBody)
	}
	if hc := h.Health; hc != nil {
		if hc.Threshold < 0 || hc.Cooldown < 0 || hc.ResetAfter < 0 {
			return fmt.Errorf("negative health setting accepted: %+v", hc)
		}
		for _, s := range hc.Status {
			if s < 100 || s > 599 {
				return fmt.Errorf("status %d accepted", s)
			}
		}
	}
	names := map[string]bool{}
	for _, p := range h.Providers {
		if names[p.Name] {
			return fmt.Errorf("provider %q accepted twice", p.Name)
		}
		names[p.Name] = true
		auths := 0
		for _, set := range []bool{p.APIKey != "", p.AuthToken != "", p.OAuth != "", p.PassthroughAuth} {
			if set {
				auths++
			}
		}
		if auths > 1 {
			return fmt.Errorf("provider %q: %d auth modes accepted", p.Name, auths)
		}
		if p.Type != "" && p.Type != balancer.TypeAnthropic && p.Type != balancer.TypeOpenAI {
			return fmt.Errorf("provider %q: type %q accepted", p.Name, p.Type)
		}
		if p.Weight < 0 {
			return fmt.Errorf("provider %q: weight %d accepted", p.Name, p.Weight)
		}
		if to := p.Timeouts; to != nil && (to.Connect < 0 || to.FirstByte < 0 || to.Idle < 0) {
			return fmt.Errorf("provider %q: negative timeout accepted: %+v", p.Name, to)
		}
		if o := p.OpenAI; o != nil {
			if o.Validate() != nil {
				return fmt.Errorf("provider %q: openai option out of range accepted: %+v", p.Name, o)
			}
		}
	}
	for _, r := range h.Routes {
		if len(r.Match) == 0 || len(r.To) == 0 {
			return fmt.Errorf("route without pattern or target accepted: %+v", r)
		}
		for _, tc := range r.To {
			if !names[tc.Provider] {
				return fmt.Errorf("route naming unknown provider %q accepted", tc.Provider)
			}
		}
	}
	if _, err := json.Marshal(h); err != nil {
		return fmt.Errorf("parsed config does not encode: %w", err)
	}
	return nil
}

// adaptCaddyfile runs the Caddyfile adapter the way "caddy adapt" does.
func adaptCaddyfile(t *testing.T, text string) []byte {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), nil)
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	return out
}

// TestCaddyfileAdapt compares each testdata/caddyfile_adapt/*.caddytest file,
// a Caddyfile then a "----------" line then the expected JSON, with the
// adapter's output. When the part after the separator does not start with
// "{", it is text the adapter's error must contain instead. Run with
// -update-adapt to rewrite the expected JSON.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "caddyfile_adapt", "*.caddytest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files found")
	}
	const sep = "\n----------\n"
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(data), "\r\n", "\n")
			cfgText, expected, ok := strings.Cut(text, sep)
			if !ok {
				t.Fatalf("no %q separator line", strings.TrimSpace(sep))
			}
			cfgText = strings.TrimSpace(cfgText) + "\n"
			expected = strings.TrimSpace(expected)
			if w, different := caddyfile.FormattingDifference(file, []byte(cfgText)); different {
				t.Errorf("Caddyfile part is not formatted as caddy fmt would: %s", w.Message)
			}
			if !strings.HasPrefix(expected, "{") {
				_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfgText), nil)
				if err == nil {
					t.Fatalf("adapt succeeded, want an error containing %q", expected)
				}
				if !strings.Contains(err.Error(), expected) {
					t.Fatalf("adapt error %q does not contain %q", err, expected)
				}
				return
			}
			if *updateAdapt {
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, adaptCaddyfile(t, cfgText), "", "\t"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(cfgText+strings.TrimPrefix(sep, "\n")+pretty.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !caddytest.CompareAdapt(t, file, cfgText, "caddyfile", expected) {
				t.Errorf("adapted JSON differs from %s (diff above)", file)
			}
		})
	}
}

// TestCaddyfileAdaptKeepsSecretPlaceholders: "caddy adapt" output never
// contains a secret written as an {env.*} placeholder; Provision expands it.
func TestCaddyfileAdaptKeepsSecretPlaceholders(t *testing.T) {
	secrets := map[string]string{
		"CB_TEST_CLIENT_KEY":    "marker-client-4f1c",
		"CB_TEST_ADMIN_KEY":     "marker-admin-9a2e",
		"CB_TEST_API_KEY":       "marker-apikey-77d0",
		"CB_TEST_AUTH_TOKEN":    "marker-token-c3b5",
		"CB_TEST_HEADER_SECRET": "marker-header-e81f",
		"CB_TEST_PROXY_PASS":    "marker-proxy-5b60",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	// env renders the Caddyfile with the given placeholder syntax for
	// environment variables: "{env.%s}" (runtime) or "{$%s}" (adapt time).
	env := func(format string) string {
		e := func(name string) string { return fmt.Sprintf(format, name) }
		return `{
	skip_install_trust
}

localhost:9090 {
	claude_balancer {
		client_keys ` + e("CB_TEST_CLIENT_KEY") + `
		admin_key ` + e("CB_TEST_ADMIN_KEY") + `
		provider direct {
			base_url https://api.anthropic.com
			api_key ` + e("CB_TEST_API_KEY") + `
			header X-Relay-Secret ` + e("CB_TEST_HEADER_SECRET") + `
		}
		provider relay {
			base_url https://relay.example.com
			auth_token ` + e("CB_TEST_AUTH_TOKEN") + `
			proxy http://user:` + e("CB_TEST_PROXY_PASS") + `@proxy.internal:3128
		}
	}
}
`
	}

	out := string(adaptCaddyfile(t, env("{env.%s}")))
	for name, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("adapt output contains the value of %s", name)
		}
		if placeholder := "{env." + name + "}"; !strings.Contains(out, placeholder) {
			t.Errorf("adapt output lacks the placeholder %s:\n%s", placeholder, out)
		}
	}

	// Adapt-time {$VAR} substitution does put the value in the output: this
	// shows the environment is visible to the adapter, so the check above
	// would catch a leak.
	out = string(adaptCaddyfile(t, env("{$%s}")))
	for name, secret := range secrets {
		if !strings.Contains(out, secret) {
			t.Errorf("control: adapt output with {$%s} lacks its value", name)
		}
	}
}

// TestCaddyfileDirectiveOrderedBeforeReverseProxy: written after
// reverse_proxy in a site, claude_balancer still runs first, since it is
// registered before reverse_proxy in the directive order.
func TestCaddyfileDirectiveOrderedBeforeReverseProxy(t *testing.T) {
	if _, err := caddy.GetModule("http.handlers.claude_balancer"); err != nil {
		t.Fatalf("module not registered: %v", err)
	}
	out := adaptCaddyfile(t, `{
	skip_install_trust
}

localhost:9090 {
	reverse_proxy localhost:9091
	claude_balancer {
		provider anthropic {
			base_url https://api.anthropic.com
			passthrough_auth
		}
	}
}
`)
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Handler string `json:"handler"`
							Routes  []struct {
								Handle []struct {
									Handler string `json:"handler"`
								} `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				if h.Handler != "subroute" {
					order = append(order, h.Handler)
					continue
				}
				for _, sr := range h.Routes {
					for _, sh := range sr.Handle {
						order = append(order, sh.Handler)
					}
				}
			}
		}
	}
	if want := []string{"claude_balancer", "reverse_proxy"}; !reflect.DeepEqual(order, want) {
		t.Errorf("handler order = %v, want %v\n%s", order, want, out)
	}
}

// errPosition is how parse errors name their place in the fuzzed input.
var errPosition = regexp.MustCompile(`Fuzzfile:[1-9][0-9]*`)

// FuzzCaddyfile feeds arbitrary text as the body of a claude_balancer block.
// Parsing must never panic; a rejected input gets an error naming its file
// and line; an accepted one satisfies checkParsed. Seeds are in
// testdata/fuzz/FuzzCaddyfile.
func FuzzCaddyfile(f *testing.F) {
	f.Fuzz(func(t *testing.T, body string) {
		tokens, err := caddyfile.Tokenize([]byte("claude_balancer {\n"+body+"\n}\n"), "Fuzzfile")
		if err != nil {
			return
		}
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			if !errPosition.MatchString(err.Error()) {
				t.Fatalf("error without file and line: %v", err)
			}
			return
		}
		if err := checkParsed(&h); err != nil {
			t.Fatal(err)
		}
	})
}
