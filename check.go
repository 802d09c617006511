package claudebalancer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
	"github.com/claude-balancer/caddy-claude-balancer/conformance"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "claude-balancer",
		Usage: "<command>",
		Short: "Commands of the claude_balancer module",
		Long: `
Commands of the claude_balancer module. "caddy claude-balancer check" probes
the providers of a config for what Claude Code needs.`,
		CobraFunc: func(cmd *cobra.Command) {
			check := newCheckCommand(func(c *cobra.Command, o checkOptions) error {
				return exitStatus(c, func() (int, error) { return runCheck(c.Context(), o, c.OutOrStdout()) })
			})
			check.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
				return exitStatus(c, func() (int, error) { return 2, err })
			})
			cmd.AddCommand(check)
		},
	})
}

// exitStatus returns what makes Caddy's main exit with the status f returns
// (caddycmd turns a status above 1 into the process's exit status, and an
// error into status 1).
func exitStatus(c *cobra.Command, f func() (int, error)) error {
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return f() })(c, nil)
}

// checkOptions are the flags of the check command.
type checkOptions struct {
	config, adapter string
	providers       []string
	balancer, model string
	json            bool
	timeout         time.Duration
}

const checkLong = `
Loads a config the way "caddy run" does and probes each provider of its
claude_balancer handlers (or those named with --provider) for what Claude Code
needs: a streamed text answer, a tool call with streamed arguments, a tool
result round trip, thinking (and the signature sent back on Anthropic types),
an image, count_tokens, the prompt-cache usage fields and the quota headers.
Each probe is one small request that goes through the balancer's own
conversion, so the verdict is what Claude Code would get.

The config is provisioned in this process and never started: no listener, no
admin endpoint, no certificate activity, no handler other than claude_balancer,
so it is safe beside a running instance of the same config. Providers with
passthrough_auth are asked with ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN from
the environment (skipped without them); disabled providers are skipped unless
named with --provider.

The exit status is 0 when every required probe passed, 1 when one failed, and
2 for usage and configuration errors. count_tokens (there is a local
fallback), the prompt-cache usage fields and the quota headers are reported
but optional.`

// newCheckCommand builds the check command; run does the work once the flags
// are parsed.
func newCheckCommand(run func(*cobra.Command, checkOptions) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check [flags]",
		Short: "Probes each provider for what Claude Code needs",
		Long:  strings.TrimSpace(checkLong),
		Example: `  $ caddy claude-balancer check
  $ caddy claude-balancer check --config /etc/caddy/Caddyfile --provider openrouter --json`,
	}
	f := cmd.Flags()
	f.StringP("config", "c", "", "Configuration file (default: the Caddyfile in the current directory)")
	f.StringP("adapter", "a", "", "Name of config adapter to apply")
	f.StringSlice("provider", nil, "Provider to check; repeatable or comma-separated (default: every provider)")
	f.String("balancer", "", "Balancer whose providers to check, by its name option (default: every balancer)")
	f.String("model", "", "Model to ask every provider for (default: the model its routes name, else a Claude model they route to it)")
	f.Bool("json", false, "Write the report as JSON")
	f.Duration("timeout", conformance.DefaultTimeout, "Bound on each probe request")
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return c.FlagErrorFunc()(c, fmt.Errorf("unexpected arguments: %s", strings.Join(args, " ")))
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		var o checkOptions
		o.config, _ = f.GetString("config")
		o.adapter, _ = f.GetString("adapter")
		o.providers, _ = f.GetStringSlice("provider")
		o.balancer, _ = f.GetString("balancer")
		o.model, _ = f.GetString("model")
		o.json, _ = f.GetBool("json")
		o.timeout, _ = f.GetDuration("timeout")
		if o.timeout <= 0 {
			return c.FlagErrorFunc()(c, fmt.Errorf("--timeout must be positive"))
		}
		return run(c, o)
	}
	return cmd
}

// Check runs "caddy claude-balancer check" with the given arguments (those
// after "check"), writing the report to stdout and errors to stderr, and
// returns the exit status: 0 when every required probe passed, 1 when one
// failed, 2 for usage and configuration errors.
func Check(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	status := 0
	cmd := newCheckCommand(func(c *cobra.Command, o checkOptions) error {
		var err error
		status, err = runCheck(ctx, o, c.OutOrStdout())
		if err != nil {
			fmt.Fprintln(stderr, "check:", err)
		}
		return nil
	})
	usage := errors.New("usage")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		fmt.Fprintln(stderr, "check:", err)
		return usage
	})
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	if err := cmd.ExecuteContext(ctx); err != nil {
		if err != usage {
			fmt.Fprintln(stderr, "check:", err)
		}
		return 2
	}
	return status
}

// claudeModels are the models asked of a provider whose routes name none,
// smallest first.
var claudeModels = []string{"claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"}

// runCheck loads the config, probes the providers and writes the report. It
// returns the exit status and, for a status other than 0, why.
func runCheck(ctx context.Context, o checkOptions, out io.Writer) (int, error) {
	raw, _, _, err := caddycmd.LoadConfig(o.config, o.adapter)
	if err != nil {
		return 2, err
	}
	if raw == nil {
		return 2, errors.New("no config: name one with --config (there is no Caddyfile in the current directory)")
	}
	raw, err = isolateConfig(raw)
	if err != nil {
		return 2, err
	}
	var cfg caddy.Config
	if err := caddy.StrictUnmarshalJSON(raw, &cfg); err != nil {
		return 2, fmt.Errorf("decoding the config: %w", err)
	}
	// Provisioned, never started: nothing listens and no app runs. The
	// handlers register themselves as live handlers of this load.
	pctx, err := caddy.ProvisionContext(&cfg)
	if err != nil {
		return 2, fmt.Errorf("loading the config: %w", err)
	}
	load := any(pctx.FileSystems())
	newest, all := handlersOf(load)
	defer func() {
		for _, h := range all {
			_ = h.Cleanup()
		}
	}()
	if len(newest) == 0 {
		return 2, errors.New("the config has no claude_balancer handler")
	}
	providers, err := checkTargets(newest, o)
	if err != nil {
		return 2, err
	}
	reports := conformance.Run(ctx, providers, conformance.Options{Timeout: o.timeout})
	if o.json {
		err = conformance.WriteJSON(out, reports)
	} else {
		err = conformance.WriteText(out, reports)
	}
	if err != nil {
		return 2, fmt.Errorf("writing the report: %w", err)
	}
	if !conformance.Passed(reports) {
		var failed []string
		for _, r := range reports {
			if f := r.Failed(); len(f) > 0 {
				failed = append(failed, fmt.Sprintf("%s (%s)", r.Provider, strings.Join(f, ", ")))
			}
		}
		return 1, fmt.Errorf("required probes failed: %s", strings.Join(failed, "; "))
	}
	return 0, nil
}

// handlersOf returns the handlers a config load provisioned: the newest of
// each balancer name, sorted by name, and all of them.
func handlersOf(load any) (newest, all []*Handler) {
	for _, h := range liveHandlersAll() {
		if h.load != load {
			continue
		}
		all = append(all, h)
		if i := slices.IndexFunc(newest, func(x *Handler) bool { return x.bal.Name == h.bal.Name }); i >= 0 {
			newest[i] = h
		} else {
			newest = append(newest, h)
		}
	}
	slices.SortFunc(newest, func(a, b *Handler) int { return strings.Compare(a.bal.Name, b.bal.Name) })
	return newest, all
}

// liveHandlersAll returns every live handler, oldest first per name.
func liveHandlersAll() []*Handler {
	live.Lock()
	defer live.Unlock()
	var out []*Handler
	for _, list := range live.m {
		out = append(out, list...)
	}
	return out
}

// checkTargets lists the providers to check, in configuration order, with
// the means to ask each through its balancer.
func checkTargets(handlers []*Handler, o checkOptions) ([]conformance.Provider, error) {
	var names []string
	for _, n := range o.providers {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	if o.balancer != "" {
		i := slices.IndexFunc(handlers, func(h *Handler) bool { return h.bal.Name == o.balancer })
		if i < 0 {
			return nil, fmt.Errorf("no balancer named %q in the config (balancers: %s)", o.balancer, balancerNames(handlers))
		}
		handlers = handlers[i : i+1]
	}
	found := map[string]bool{}
	var out []conformance.Provider
	for _, h := range handlers {
		for _, p := range h.bal.Providers() {
			named := slices.Contains(names, p.Name)
			if len(names) > 0 && !named {
				continue
			}
			found[p.Name] = true
			out = append(out, h.checkTarget(p, o.model, named))
		}
	}
	for _, n := range names {
		if !found[n] {
			var all []string
			for _, h := range handlers {
				for _, p := range h.bal.Providers() {
					all = append(all, p.Name)
				}
			}
			return nil, fmt.Errorf("no provider named %q (providers: %s)", n, strings.Join(all, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the config has no provider to check")
	}
	return out, nil
}

func balancerNames(handlers []*Handler) string {
	var names []string
	for _, h := range handlers {
		names = append(names, h.bal.Name)
	}
	return strings.Join(names, ", ")
}

// checkTarget describes one provider to the conformance check.
func (h *Handler) checkTarget(p *balancer.Provider, model string, named bool) conformance.Provider {
	if model == "" {
		model = h.probeModel(p)
	}
	t := conformance.Provider{Balancer: h.bal.Name, Name: p.Name, Type: p.Type, Auth: p.AuthMode(), Model: model}
	for _, pc := range h.Providers {
		if pc.Name == p.Name && pc.OpenAI != nil {
			t.Reasoning = pc.OpenAI.Reasoning
		}
	}
	hdr := http.Header{
		"Anthropic-Version": {"2023-06-01"},
		"Content-Type":      {"application/json"},
		"User-Agent":        {"caddy-claude-balancer-check"},
	}
	switch {
	case p.ConfigDisabled() && !named:
		t.Skip = "disabled in the config (name it with --provider to check it)"
	case p.Passthrough():
		key, token := os.Getenv("ANTHROPIC_API_KEY"), os.Getenv("ANTHROPIC_AUTH_TOKEN")
		if key != "" {
			hdr.Set("X-Api-Key", key)
		}
		if token != "" {
			hdr.Set("Authorization", "Bearer "+token)
		}
		if key == "" && token == "" {
			t.Skip = "passthrough_auth: set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN to the credential Claude Code would pass through"
		}
	}
	t.Send = func(ctx context.Context, body []byte) conformance.Reply { return h.probe(ctx, p.Name, body, hdr) }
	switch {
	case h.CountTokens != nil && h.CountTokens.Local:
		t.CountLocal = "count_tokens local is configured"
	case p.Type != balancer.TypeAnthropic:
		t.CountLocal = "OpenAI-compatible providers are counted locally"
	default:
		t.Count = func(ctx context.Context, body []byte) conformance.CountReply {
			peek, err := balancer.PeekBody(body)
			if err != nil {
				return conformance.CountReply{Reason: "the probe's body: " + err.Error()}
			}
			res := h.bal.ProbeCount(ctx, p.Name, "", &balancer.Request{Body: body, Peek: peek, Header: hdr.Clone()})
			return conformance.CountReply{Upstream: res.Upstream, Status: res.Status, Body: res.Body, Reason: res.Reason}
		}
	}
	return t
}

// probeModel is the model a provider is asked for: the first model a route
// names for it, else the first exact pattern of a route serving it, else the
// first Claude model (smallest first) whose route has it as a candidate,
// else the smallest Claude model.
func (h *Handler) probeModel(p *balancer.Provider) string {
	routes := h.bal.Routes()
	serves := func(r *balancer.Route) bool {
		return r != nil && slices.ContainsFunc(r.Targets, func(t balancer.Target) bool { return t.Provider == p })
	}
	for _, r := range routes {
		for _, t := range r.Targets {
			if t.Provider == p && t.Model != "" {
				return t.Model
			}
		}
	}
	for _, r := range routes {
		if !serves(r) {
			continue
		}
		for _, pat := range strings.Fields(r.ID) {
			if !strings.Contains(pat, "*") {
				return pat
			}
		}
	}
	for _, m := range claudeModels {
		if serves(h.bal.MatchRoute(m)) {
			return m
		}
	}
	return claudeModels[0]
}

// probe sends one probe request to a provider through the balancer and
// records the answer as the client would get it.
func (h *Handler) probe(ctx context.Context, provider string, body []byte, hdr http.Header) conformance.Reply {
	peek, err := balancer.PeekBody(body)
	if err != nil {
		return conformance.Reply{Error: "the probe's body: " + err.Error()}
	}
	req := &balancer.Request{Body: body, Peek: peek, Header: hdr.Clone(), EstimateTokens: h.estimateTokens}
	out := &probeOutput{}
	res := h.bal.Probe(ctx, provider, "", req, out)
	rep := conformance.Reply{Status: out.status, Header: out.header, Stream: out.stream, Body: out.body.Bytes(),
		StreamError: res.StreamError}
	if f := res.Failure; f != nil {
		rep.Status, rep.Header, rep.Body = f.Status, f.Header, f.Body
		rep.Error = f.Message()
		if len(res.Attempts) > 0 && res.Attempts[0].Error != "" {
			rep.Error = res.Attempts[0].Error
		}
	}
	return rep
}

// probeOutput records an answer.
type probeOutput struct {
	status int
	header http.Header
	stream bool
	body   bytes.Buffer
}

func (o *probeOutput) Start(status int, header http.Header, stream bool) error {
	o.status, o.header, o.stream = status, header.Clone(), stream
	return nil
}

func (o *probeOutput) Body(p []byte) error {
	o.body.Write(p)
	return nil
}

func (o *probeOutput) Event(ev relay.Event, _ bool) error {
	o.body.Write(ev.Raw)
	return nil
}

var _ relay.Output = (*probeOutput)(nil)

// isolateConfig makes a config safe to provision beside a running instance
// of it: the admin endpoint off, no app but http, in which every server has
// automatic HTTPS off and keeps, of its routes, only claude_balancer
// handlers (and the subroutes that hold them), and logs only errors to
// stderr. Nothing is started anyway; this keeps provisioning itself from
// reaching out (a reverse proxy's health checks, certificate loaders, log
// files).
func isolateConfig(raw []byte) ([]byte, error) {
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("decoding the config: %w", err)
	}
	cfg["admin"] = map[string]any{"disabled": true}
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}}
	apps, _ := cfg["apps"].(map[string]any)
	httpApp, _ := apps["http"].(map[string]any)
	if httpApp == nil {
		return nil, errors.New("the config has no HTTP app, so no claude_balancer handler")
	}
	cfg["apps"] = map[string]any{"http": httpApp}
	servers, _ := httpApp["servers"].(map[string]any)
	for _, s := range servers {
		srv, ok := s.(map[string]any)
		if !ok {
			continue
		}
		srv["automatic_https"] = map[string]any{"disable": true}
		for _, k := range []string{"logs", "listener_wrappers", "tls_connection_policies", "named_routes"} {
			delete(srv, k)
		}
		srv["routes"] = balancerRoutes(srv["routes"])
		if errs, ok := srv["errors"].(map[string]any); ok {
			errs["routes"] = balancerRoutes(errs["routes"])
		}
	}
	return json.Marshal(cfg)
}

// balancerRoutes keeps, of a list of routes, the claude_balancer handlers and
// the subroutes that hold some, dropping routes left without a handler.
func balancerRoutes(v any) []any {
	list, _ := v.([]any)
	var out []any
	for _, r := range list {
		route, ok := r.(map[string]any)
		if !ok {
			continue
		}
		handle, _ := route["handle"].([]any)
		var keep []any
		for _, hv := range handle {
			hd, ok := hv.(map[string]any)
			if !ok {
				continue
			}
			switch hd["handler"] {
			case "claude_balancer":
				keep = append(keep, hd)
			case "subroute":
				if sub := balancerRoutes(hd["routes"]); len(sub) > 0 {
					hd["routes"] = sub
					if errs, ok := hd["errors"].(map[string]any); ok {
						errs["routes"] = balancerRoutes(errs["routes"])
					}
					keep = append(keep, hd)
				}
			}
		}
		if len(keep) > 0 {
			route["handle"] = keep
			out = append(out, route)
		}
	}
	return out
}
