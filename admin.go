package claudebalancer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"go.uber.org/zap"

	"github.com/claude-balancer/caddy-claude-balancer/balancer"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the balancers' operator endpoints on Caddy's admin
// socket, under /claude_balancer/:
//
//	GET  /claude_balancer/providers                    state of every balancer
//	POST /claude_balancer/providers/<name>/reset       clear errors and cooldowns
//	POST /claude_balancer/providers/<name>/disable     take it out of rotation (kept across reloads)
//	POST /claude_balancer/providers/<name>/enable      undo disable (or enable one the config disables)
//	     /claude_balancer/oauth/...                    OAuth status and token administration
//
// With several balancers, ?balancer=<name> picks one.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.claude_balancer",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/claude_balancer/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/claude_balancer/")
	switch {
	case rest == "providers" || rest == "providers/":
		if r.Method != http.MethodGet {
			return apiError(http.StatusMethodNotAllowed, "method not allowed; use GET")
		}
		var out []BalancerStatus
		for _, h := range liveHandlers() {
			out = append(out, h.Status())
		}
		if out == nil {
			out = []BalancerStatus{}
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(out)
	case strings.HasPrefix(rest, "providers/"):
		if r.Method != http.MethodPost {
			return apiError(http.StatusMethodNotAllowed, "method not allowed; use POST")
		}
		parts := strings.Split(strings.TrimPrefix(rest, "providers/"), "/")
		if len(parts) != 2 || parts[0] == "" {
			return apiError(http.StatusNotFound, "use /claude_balancer/providers/<name>/reset|disable|enable")
		}
		h, p, err := findProvider(r.URL.Query().Get("balancer"), parts[0])
		if err != nil {
			return err
		}
		if err := h.providerAction(p, parts[1]); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(h.Status())
	case rest == "oauth" || strings.HasPrefix(rest, "oauth/"):
		h, err := pickBalancer(r.URL.Query().Get("balancer"))
		if err != nil {
			return err
		}
		return h.oauth.AdminHandler("/claude_balancer/oauth").ServeHTTP(w, r)
	}
	return apiError(http.StatusNotFound, "unknown claude_balancer admin endpoint %s", r.URL.Path)
}

// pickBalancer returns the named balancer, or the only one, or "default".
func pickBalancer(name string) (*Handler, error) {
	if name != "" {
		if h := liveHandler(name); h != nil {
			return h, nil
		}
		return nil, apiError(http.StatusNotFound, "no balancer named %q", name)
	}
	all := liveHandlers()
	switch {
	case len(all) == 1:
		return all[0], nil
	case len(all) == 0:
		return nil, apiError(http.StatusNotFound, "no claude_balancer is configured")
	}
	if h := liveHandler("default"); h != nil {
		return h, nil
	}
	return nil, apiError(http.StatusConflict, "several balancers are configured; name one with ?balancer=")
}

// findProvider finds a provider by name, in the named balancer or in the
// only balancer that has it.
func findProvider(balancerName, name string) (*Handler, *balancer.Provider, error) {
	var hs []*Handler
	if balancerName != "" {
		h := liveHandler(balancerName)
		if h == nil {
			return nil, nil, apiError(http.StatusNotFound, "no balancer named %q", balancerName)
		}
		hs = []*Handler{h}
	} else {
		hs = liveHandlers()
	}
	var (
		fh *Handler
		fp *balancer.Provider
	)
	for _, h := range hs {
		if p := h.bal.Provider(name); p != nil {
			if fp != nil {
				return nil, nil, apiError(http.StatusConflict, "provider %q exists in several balancers; name one with ?balancer=", name)
			}
			fh, fp = h, p
		}
	}
	if fp == nil {
		return nil, nil, apiError(http.StatusNotFound, "no provider named %q", name)
	}
	return fh, fp, nil
}

// providerAction applies an operator's action to a provider.
func (h *Handler) providerAction(p *balancer.Provider, action string) error {
	switch action {
	case "reset":
		h.bal.ResetProvider(p)
	case "disable":
		p.SetOverride("disabled")
	case "enable":
		if p.ConfigDisabled() {
			p.SetOverride("enabled")
		} else {
			p.SetOverride("")
		}
	default:
		return apiError(http.StatusNotFound, "unknown action %q (want reset, disable or enable)", action)
	}
	h.logger.Warn("provider changed by an operator", zap.String("provider", p.Name), zap.String("action", action))
	return nil
}

// startupConfig returns the config file and adapter Caddy was started with
// (`caddy run --config <file> --adapter <name>`), as SIGUSR1 reloads do.
func startupConfig() (file, adapter string, ok bool) {
	args := os.Args[1:]
	if len(args) == 0 || args[0] != "run" {
		return "", "", false
	}
	for i := 1; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			continue
		}
		switch name {
		case "config", "c", "adapter", "a":
			if !hasVal {
				if i+1 >= len(args) {
					return "", "", false
				}
				i++
				val = args[i]
			}
			if name == "config" || name == "c" {
				file = val
			} else {
				adapter = val
			}
		case "resume":
			// The running config came from the autosave, not a file.
			return "", "", false
		}
	}
	return file, adapter, true
}

// serveReload reloads the config Caddy was started from, keeping every
// provider's state, and answers with the resulting provider counts.
func (h *Handler) serveReload(w http.ResponseWriter, r *http.Request) {
	file, adapter, ok := startupConfig()
	var cfg []byte
	var err error
	if ok {
		cfg, file, _, err = caddycmd.LoadConfig(file, adapter)
		if err == nil && len(cfg) == 0 {
			ok = false
		}
	}
	if !ok {
		writeJSON(w, http.StatusConflict, map[string]any{"status": "error",
			"message": "Caddy was not started from a config file; reload with `caddy reload --config <file>` or the admin API (POST /load)"})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": "error", "message": "the config file is invalid; the running config is kept: " + err.Error()})
		return
	}
	name := h.bal.Name
	// The reload provisions a new handler and cleans this one up while this
	// request still runs on it; nothing this request needs is torn down.
	if err := caddy.Load(cfg, true); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": "error", "message": "reload failed; the running config is kept: " + err.Error()})
		return
	}
	resp := map[string]any{"status": "success", "message": "configuration reloaded from " + file, "reloaded_at": time.Now().UTC()}
	if nh := liveHandler(name); nh != nil {
		st := nh.Status()
		resp["total_providers"], resp["healthy_providers"], resp["total_model_routes"] = st.TotalProviders, st.HealthyProviders, st.TotalRoutes
	} else {
		resp["message"] = "configuration reloaded from " + file + "; it no longer has balancer " + name
	}
	writeJSON(w, http.StatusOK, resp)
}

// Interface guards
var _ caddy.AdminRouter = adminAPI{}
