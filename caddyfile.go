package claudebalancer

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/convert"
	"github.com/claude-balancer/caddy-claude-balancer/team"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("claude_balancer", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("claude_balancer", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	claude_balancer {
//		name <id>
//		strategy priority|round_robin|random|weighted|least_latency|headroom
//		sticky <ttl>
//		max_request_body <size>
//		client_keys <key...>
//		client <name> {
//			key <key...>
//			rate <count>/<window>
//			tokens <count>/<window>
//			models <pattern...>
//			pricing <pattern> <input> <output> <cache-read> <cache-write>
//		}
//		admin_key <key>
//		list_models <name...>
//		health {
//			threshold <n>
//			cooldown <duration>
//			reset_after <duration>
//			status <code|from-to...>
//			body_pattern <regexp...>
//			near_limit <share>
//		}
//		provider <name> {
//			type anthropic|openai
//			base_url <url>
//			api_key <key>
//			auth_token <token>
//			oauth <account-email>
//			passthrough_auth
//			header <name> <value>
//			proxy <url>
//			resolvers <dns-server...>
//			timeouts {
//				connect <duration>
//				first_byte <duration>
//				idle <duration>
//			}
//			weight <n>
//			disabled
//			fold_system
//			max_tokens_field max_tokens|max_completion_tokens
//			sanitize_schema
//			max_tokens <n>
//			reasoning off|effort|minimal|low|medium|high
//			reasoning_format reasoning_effort|reasoning
//			thinking_history drop|reasoning_content|reasoning
//			inline_system system|merge|user
//			prompt_cache_key
//			extra <json-object>
//			top_k
//		}
//		route <model-pattern...> {
//			to <provider> [<model>]
//		}
//		dedup off
//		dedup {
//			off
//			wait <duration>
//			replay <duration>
//			ignore <field...>
//			max_buffer <size>
//		}
//		count_tokens local
//		count_tokens {
//			local
//			failure_threshold <n>
//			cooldown <duration>
//			timeout <duration>
//			encoding <tiktoken-encoding>
//			calibration <factor>
//			cache_size <blocks>
//		}
//		oauth {
//			storage <module> { ... }
//			refresh_before <duration>
//			proxy <url>
//			authorize_url <url>
//			token_url <url>
//			client_id <id>
//			redirect_uri <url>
//			scopes <scope...>
//			token_format json|form
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	type ref struct {
		provider string
		file     string
		line     int
	}
	var refs []ref
	for d.NextBlock(0) {
		switch d.Val() {
		case "name":
			if err := oneArg(d, &h.Name); err != nil {
				return err
			}
		case "strategy":
			if err := oneArg(d, &h.Strategy); err != nil {
				return err
			}
			switch h.Strategy {
			case balancer.StrategyPriority, balancer.StrategyRoundRobin, balancer.StrategyRandom,
				balancer.StrategyWeighted, balancer.StrategyLeastLatency, balancer.StrategyHeadroom:
			default:
				return d.Errf("unknown strategy %q (want priority, round_robin, random, weighted, least_latency or headroom)", h.Strategy)
			}
		case "sticky":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			h.Sticky = &dur
		case "max_request_body":
			var s string
			if err := oneArg(d, &s); err != nil {
				return err
			}
			n, err := humanize.ParseBytes(s)
			if err != nil || n == 0 || n > math.MaxInt64 {
				return d.Errf("invalid size %q", s)
			}
			h.MaxRequestBody = int64(n)
		case "client_keys":
			keys := d.RemainingArgs()
			if len(keys) == 0 {
				return d.ArgErr()
			}
			h.ClientKeys = append(h.ClientKeys, keys...)
		case "client":
			c, err := parseClient(d)
			if err != nil {
				return err
			}
			for _, prev := range h.Clients {
				if prev.Name == c.Name {
					return d.Errf("client %q is declared twice", c.Name)
				}
			}
			h.Clients = append(h.Clients, c)
		case "admin_key":
			if err := oneArg(d, &h.AdminKey); err != nil {
				return err
			}
		case "list_models":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			for _, n := range names {
				if strings.Contains(n, "*") {
					return d.Errf("list_models names models; %q is a pattern", n)
				}
			}
			h.ListModels = append(h.ListModels, names...)
		case "oauth":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.OAuth == nil {
				h.OAuth = new(OAuthConfig)
			}
			if err := parseOAuth(d, h.OAuth); err != nil {
				return err
			}
		case "dedup":
			if h.Dedup == nil {
				h.Dedup = new(DedupConfig)
			}
			if err := parseDedup(d, h.Dedup); err != nil {
				return err
			}
		case "count_tokens":
			if h.CountTokens == nil {
				h.CountTokens = new(CountTokensConfig)
			}
			if err := parseCount(d, h.CountTokens); err != nil {
				return err
			}
		case "health":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.Health == nil {
				h.Health = new(balancer.HealthConfig)
			}
			if err := parseHealth(d, h.Health); err != nil {
				return err
			}
		case "provider":
			file, line := d.File(), d.Line()
			p, err := parseProvider(d)
			if err != nil {
				return err
			}
			for _, q := range h.Providers {
				if q.Name == p.Name {
					return fmt.Errorf("provider %q is declared twice, at %s:%d", p.Name, file, line)
				}
			}
			h.Providers = append(h.Providers, p)
		case "route":
			file, line := d.File(), d.Line()
			r, err := parseRoute(d)
			if err != nil {
				return err
			}
			for _, t := range r.To {
				refs = append(refs, ref{provider: t.Provider, file: file, line: line})
			}
			h.Routes = append(h.Routes, r)
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
	}
	// Providers may be declared after the routes naming them, so references
	// are checked at the end, with the position of the route.
	for _, r := range refs {
		found := false
		for _, p := range h.Providers {
			found = found || p.Name == r.provider
		}
		if !found {
			return fmt.Errorf("route names unknown provider %q, at %s:%d", r.provider, r.file, r.line)
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// parseClient reads a client block:
//
//	client <name> {
//		key <key...>
//		rate <count>/<window>
//		tokens <count>/<window>
//		models <pattern...>
//		pricing <pattern> <input> <output> <cache-read> <cache-write>
//	}
func parseClient(d *caddyfile.Dispenser) (team.ClientConfig, error) {
	var c team.ClientConfig
	if !d.NextArg() {
		return c, d.ArgErr()
	}
	c.Name = d.Val()
	if d.NextArg() {
		return c, d.ArgErr()
	}
	if c.Name == team.Anonymous || c.Name == team.Local {
		return c, d.Errf("client name %q is reserved for requests of no named client", c.Name)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "key":
			keys := d.RemainingArgs()
			if len(keys) == 0 {
				return c, d.ArgErr()
			}
			c.Keys = append(c.Keys, keys...)
		case "rate", "tokens":
			which := d.Val()
			var v string
			if err := oneArg(d, &v); err != nil {
				return c, err
			}
			l, err := parseLimit(v)
			if err != nil {
				return c, d.Errf("%s %q: %v", which, v, err)
			}
			if which == "rate" {
				c.Rate = l
			} else {
				c.Tokens = l
			}
		case "models":
			ms := d.RemainingArgs()
			if len(ms) == 0 {
				return c, d.ArgErr()
			}
			c.Models = append(c.Models, ms...)
		case "pricing":
			args := d.RemainingArgs()
			if len(args) != 5 {
				return c, d.Errf("pricing takes a model pattern and four prices (USD per million input, output, cache-read and cache-write tokens)")
			}
			p := team.Price{Model: args[0]}
			for i, dst := range []*float64{&p.Input, &p.Output, &p.CacheRead, &p.CacheWrite} {
				f, err := strconv.ParseFloat(args[i+1], 64)
				if err != nil || f < 0 || math.IsInf(f, 0) {
					return c, d.Errf("invalid price %q", args[i+1])
				}
				*dst = f
			}
			c.Pricing = append(c.Pricing, p)
		default:
			return c, d.Errf("unrecognized client option %q", d.Val())
		}
	}
	if len(c.Keys) == 0 {
		return c, d.Errf("client %q has no key", c.Name)
	}
	return c, nil
}

// parseLimit reads "<count>/<window>", such as 60/1m or 5000000/5h.
func parseLimit(v string) (*team.Limit, error) {
	n, w, ok := strings.Cut(v, "/")
	if !ok {
		return nil, fmt.Errorf("want <count>/<window>, such as 60/1m")
	}
	count, err := strconv.ParseInt(n, 10, 64)
	if err != nil || count <= 0 {
		return nil, fmt.Errorf("the count must be a positive integer")
	}
	dur, err := caddy.ParseDuration(w)
	if err != nil || dur < time.Second {
		return nil, fmt.Errorf("the window must be a duration of at least 1s")
	}
	return &team.Limit{Count: count, Window: caddy.Duration(dur)}, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	var s string
	if err := oneArg(d, &s); err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("invalid duration %q: %v", s, err)
	}
	if dur < 0 {
		return 0, d.Errf("duration %q must not be negative", s)
	}
	return caddy.Duration(dur), nil
}

func intArg(d *caddyfile.Dispenser, min int) (int, error) {
	var s string
	if err := oneArg(d, &s); err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min {
		return 0, d.Errf("invalid number %q (want an integer of at least %d)", s, min)
	}
	return n, nil
}

func parseHealth(d *caddyfile.Dispenser, hc *balancer.HealthConfig) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "threshold":
			hc.Threshold, err = intArg(d, 1)
		case "cooldown":
			hc.Cooldown, err = durationArg(d)
		case "reset_after":
			hc.ResetAfter, err = durationArg(d)
		case "status":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				from, to, ok := strings.Cut(a, "-")
				if !ok {
					to = from
				}
				lo, err1 := strconv.Atoi(from)
				hi, err2 := strconv.Atoi(to)
				if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
					return d.Errf("invalid status %q (want a code such as 503 or a range such as 520-524)", a)
				}
				for s := lo; s <= hi; s++ {
					hc.Status = append(hc.Status, s)
				}
			}
		case "body_pattern":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if _, err := regexp.Compile(a); err != nil {
					return d.Errf("invalid body_pattern %q: %v", a, err)
				}
			}
			hc.BodyPattern = append(hc.BodyPattern, args...)
		case "near_limit":
			var v string
			if err = oneArg(d, &v); err != nil {
				return err
			}
			f, perr := strconv.ParseFloat(v, 64)
			if perr != nil || f <= 0 || f > 1 {
				return d.Errf("invalid near_limit %q (want a share above 0 and at most 1, such as 0.9)", v)
			}
			hc.NearLimit = f
		default:
			return d.Errf("unrecognized health option %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func parseProvider(d *caddyfile.Dispenser) (balancer.ProviderConfig, error) {
	var p balancer.ProviderConfig
	if !d.NextArg() {
		return p, d.Errf("provider needs a name")
	}
	p.Name = d.Val()
	if p.Name == "" || strings.ContainsAny(p.Name, " \t/{}") {
		return p, d.Errf("invalid provider name %q (no spaces, slashes or braces)", p.Name)
	}
	if d.NextArg() {
		return p, d.ArgErr()
	}
	start := d.Line()
	openai := func() *convert.Options {
		if p.OpenAI == nil {
			p.OpenAI = new(convert.Options)
		}
		return p.OpenAI
	}
	auths := 0
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "api_key", "auth_token", "oauth", "passthrough_auth":
			if auths++; auths > 1 {
				return p, d.Errf("provider %q: choose one of api_key, auth_token, oauth and passthrough_auth", p.Name)
			}
		}
		switch d.Val() {
		case "type":
			err = oneArg(d, &p.Type)
			if err == nil && p.Type != balancer.TypeAnthropic && p.Type != balancer.TypeOpenAI {
				return p, d.Errf("unknown provider type %q (want anthropic or openai)", p.Type)
			}
		case "base_url":
			err = oneArg(d, &p.BaseURL)
		case "api_key":
			err = oneArg(d, &p.APIKey)
		case "auth_token":
			err = oneArg(d, &p.AuthToken)
		case "oauth":
			err = oneArg(d, &p.OAuth)
		case "passthrough_auth":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			p.PassthroughAuth = true
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return p, d.Errf("header needs a name and a value")
			}
			if !validHeaderName(args[0]) {
				return p, d.Errf("invalid header name %q", args[0])
			}
			if p.Headers == nil {
				p.Headers = map[string][]string{}
			}
			p.Headers[args[0]] = append(p.Headers[args[0]], args[1])
		case "proxy":
			err = oneArg(d, &p.Proxy)
		case "resolvers":
			p.Resolvers = d.RemainingArgs()
			if len(p.Resolvers) == 0 {
				return p, d.ArgErr()
			}
		case "timeouts":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			if p.Timeouts == nil {
				p.Timeouts = new(balancer.Timeouts)
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				var err error
				switch d.Val() {
				case "connect":
					p.Timeouts.Connect, err = durationArg(d)
				case "first_byte":
					p.Timeouts.FirstByte, err = durationArg(d)
				case "idle":
					p.Timeouts.Idle, err = durationArg(d)
				default:
					return p, d.Errf("unrecognized timeout %q (want connect, first_byte or idle)", d.Val())
				}
				if err != nil {
					return p, err
				}
			}
		case "weight":
			p.Weight, err = intArg(d, 1)
			if err == nil && p.Weight > balancer.MaxWeight {
				return p, d.Errf("weight %d is too large (at most %d)", p.Weight, balancer.MaxWeight)
			}
		case "disabled":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			p.Disabled = true
		case "fold_system":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			p.FoldSystem = true
		case "max_tokens_field":
			o := openai()
			err = oneArg(d, &o.MaxTokensField)
			if err == nil && o.MaxTokensField != "max_tokens" && o.MaxTokensField != "max_completion_tokens" {
				return p, d.Errf("max_tokens_field must be max_tokens or max_completion_tokens")
			}
		case "sanitize_schema":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			openai().SanitizeSchema = true
		case "reasoning":
			o := openai()
			err = oneArg(d, &o.Reasoning)
			if err == nil {
				switch o.Reasoning {
				case "off", "effort", "minimal", "low", "medium", "high":
				default:
					return p, d.Errf("reasoning must be off, effort, minimal, low, medium or high")
				}
			}
		case "thinking_history":
			o := openai()
			err = oneArg(d, &o.ThinkingHistory)
			if err == nil && o.ThinkingHistory != "drop" && o.ThinkingHistory != "reasoning_content" && o.ThinkingHistory != "reasoning" {
				return p, d.Errf("thinking_history must be drop, reasoning_content or reasoning")
			}
		case "max_tokens":
			o := openai()
			var s string
			if err = oneArg(d, &s); err == nil {
				n, perr := strconv.ParseInt(s, 10, 64)
				if perr != nil || n < 1 {
					return p, d.Errf("max_tokens must be a positive integer")
				}
				o.MaxTokens = n
			}
		case "reasoning_format":
			o := openai()
			err = oneArg(d, &o.ReasoningFormat)
			if err == nil && o.ReasoningFormat != "reasoning_effort" && o.ReasoningFormat != "reasoning" {
				return p, d.Errf("reasoning_format must be reasoning_effort or reasoning")
			}
		case "inline_system":
			o := openai()
			err = oneArg(d, &o.InlineSystem)
			if err == nil && o.InlineSystem != "system" && o.InlineSystem != "merge" && o.InlineSystem != "user" {
				return p, d.Errf("inline_system must be system, merge or user")
			}
		case "prompt_cache_key":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			openai().PromptCacheKey = true
		case "extra":
			var s string
			if err = oneArg(d, &s); err == nil {
				var obj map[string]json.RawMessage
				if json.Unmarshal([]byte(s), &obj) != nil {
					return p, d.Errf("extra must be a JSON object")
				}
				openai().Extra = json.RawMessage(s)
			}
		case "top_k":
			if d.NextArg() {
				return p, d.ArgErr()
			}
			openai().TopK = true
		default:
			return p, d.Errf("unrecognized provider option %q", d.Val())
		}
		if err != nil {
			return p, err
		}
	}
	if p.OAuth != "" && p.Type == balancer.TypeOpenAI {
		return p, fmt.Errorf("provider %q: oauth accounts are Claude subscriptions and need type anthropic, at %s:%d", p.Name, d.File(), start)
	}
	if p.OpenAI != nil && p.Type != balancer.TypeOpenAI {
		return p, fmt.Errorf("provider %q: OpenAI options need type openai, at %s:%d", p.Name, d.File(), start)
	}
	if p.FoldSystem && p.Type == balancer.TypeOpenAI {
		return p, fmt.Errorf("provider %q: fold_system is for anthropic providers (an openai provider sends system messages as inline_system says), at %s:%d", p.Name, d.File(), start)
	}
	return p, nil
}

func parseRoute(d *caddyfile.Dispenser) (balancer.RouteConfig, error) {
	var r balancer.RouteConfig
	file, line := d.File(), d.Line()
	r.Match = d.RemainingArgs()
	if len(r.Match) == 0 {
		return r, d.Errf("route needs at least one model pattern")
	}
	for _, m := range r.Match {
		if strings.TrimSpace(m) == "" {
			return r, d.Errf("route has an empty model pattern")
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "to" {
			return r, d.Errf("unrecognized route option %q (want to)", d.Val())
		}
		args := d.RemainingArgs()
		if len(args) < 1 || len(args) > 2 {
			return r, d.Errf("to needs a provider and optionally a model")
		}
		if args[0] == "" {
			return r, d.Errf("to needs a provider name")
		}
		t := balancer.TargetConfig{Provider: args[0]}
		if len(args) == 2 {
			t.Model = args[1]
		}
		r.To = append(r.To, t)
	}
	if len(r.To) == 0 {
		return r, fmt.Errorf("route %s has no \"to\" target, at %s:%d", strings.Join(r.Match, " "), file, line)
	}
	return r, nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)

func parseOAuth(d *caddyfile.Dispenser, oc *OAuthConfig) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "storage":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			mod, err := caddyfile.UnmarshalModule(d, "caddy.storage."+name)
			if err != nil {
				return err
			}
			st, ok := mod.(caddy.StorageConverter)
			if !ok {
				return d.Errf("module %s is not a storage module", name)
			}
			oc.StorageRaw = caddyconfig.JSONModuleObject(st, "module", name, nil)
		case "refresh_before":
			oc.RefreshBefore, err = durationArg(d)
		case "proxy":
			err = oneArg(d, &oc.Proxy)
		case "authorize_url":
			err = oneArg(d, &oc.AuthorizeURL)
		case "token_url":
			err = oneArg(d, &oc.TokenURL)
		case "client_id":
			err = oneArg(d, &oc.ClientID)
		case "redirect_uri":
			err = oneArg(d, &oc.RedirectURI)
		case "scopes":
			oc.Scopes = d.RemainingArgs()
			if len(oc.Scopes) == 0 {
				return d.ArgErr()
			}
		case "token_format":
			err = oneArg(d, &oc.TokenFormat)
			if err == nil && oc.TokenFormat != "json" && oc.TokenFormat != "form" {
				return d.Errf("token_format must be json or form")
			}
		default:
			return d.Errf("unrecognized oauth option %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func parseDedup(d *caddyfile.Dispenser, dc *DedupConfig) error {
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return d.Errf("dedup takes only \"off\" or a block")
		}
		dc.Off = true
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "off":
			if d.NextArg() {
				return d.ArgErr()
			}
			dc.Off = true
		case "wait":
			dc.Wait, err = durationArg(d)
		case "replay":
			dc.Replay, err = durationArg(d)
		case "ignore":
			dc.Ignore = d.RemainingArgs()
			if len(dc.Ignore) == 0 {
				return d.ArgErr()
			}
		case "max_buffer":
			var s string
			if err = oneArg(d, &s); err == nil {
				n, perr := humanize.ParseBytes(s)
				if perr != nil || n == 0 {
					return d.Errf("invalid size %q", s)
				}
				dc.MaxBuffer = int64(n)
			}
		default:
			return d.Errf("unrecognized dedup option %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func parseCount(d *caddyfile.Dispenser, cc *CountTokensConfig) error {
	if d.NextArg() {
		if d.Val() != "local" || d.NextArg() {
			return d.Errf("count_tokens takes only \"local\" or a block")
		}
		cc.Local = true
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "local":
			if d.NextArg() {
				return d.ArgErr()
			}
			cc.Local = true
		case "failure_threshold":
			cc.FailureThreshold, err = intArg(d, 1)
		case "cooldown":
			cc.Cooldown, err = durationArg(d)
		case "timeout":
			cc.Timeout, err = durationArg(d)
		case "encoding":
			err = oneArg(d, &cc.Encoding)
		case "calibration":
			var s string
			if err = oneArg(d, &s); err == nil {
				f, perr := strconv.ParseFloat(s, 64)
				if perr != nil || f <= 0 {
					return d.Errf("calibration must be a positive number")
				}
				cc.Calibration = f
			}
		case "cache_size":
			cc.CacheSize, err = intArg(d, 1)
		default:
			return d.Errf("unrecognized count_tokens option %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// validHeaderName reports whether s is an HTTP header field name (an RFC 9110
// token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
