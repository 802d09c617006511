package oauth

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

//go:embed page.html
var pageHTML string

var pageTmpl = template.Must(template.New("page").Parse(pageHTML))

// maxJSONBody bounds the JSON bodies the endpoints read.
const maxJSONBody = 64 << 10

// Handler serves the login page and the JSON endpoints under prefix (such as
// "/oauth"). The caller checks that the client may manage the balancer
// (admin_key or loopback) before calling it. Unsafe requests coming from
// another site in a browser are refused, so a page elsewhere cannot submit
// the forms on the user's behalf.
//
// Endpoints, all under prefix:
//
//	GET    /                   the login page (no JavaScript needed)
//	GET    /login?account_email=    start a login: redirects to Claude's authorize page
//	POST   /exchange           the page's form: code (+ account_email) -> page with the result
//	POST   /refresh, /logout   the page's buttons (form field account_email)
//	GET    /generate-url       JSON: start a login (optional ?account_email=)
//	POST   /exchange-code      JSON {code, account_email}: finish a login
//	GET    /status             JSON: every account
//	POST   /refresh/{email}    JSON: refresh now
//	DELETE /tokens/{email}     JSON: log one account out
//	DELETE /tokens             JSON: log every account out
//
// The page's links point at prefix, so the messages saying where to log in
// use it too.
func (m *Manager) Handler(prefix string) http.Handler {
	prefix = cleanPrefix(prefix)
	m.mu.Lock()
	m.loginPage = prefix + "/"
	m.mu.Unlock()
	return m.handler(prefix)
}

// AdminHandler serves the same endpoints as Handler under prefix (such as
// "/claude_balancer/oauth") for Caddy's admin API, without claiming prefix
// as the place users log in.
func (m *Manager) AdminHandler(prefix string) caddy.AdminHandler {
	h := m.handler(cleanPrefix(prefix))
	return caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	})
}

func cleanPrefix(p string) string {
	p = strings.TrimRight(p, "/")
	if p != "" && p[0] != '/' {
		p = "/" + p
	}
	return p
}

func (m *Manager) handler(prefix string) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		apierr.Write(w, http.StatusForbidden, apierr.Permission, "cross-origin request refused")
	}))
	return cop.Handler(&handler{m: m, prefix: prefix})
}

type handler struct {
	m      *Manager
	prefix string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, h.prefix)
	if !ok {
		apierr.Write(w, http.StatusNotFound, apierr.NotFound, "not found")
		return
	}
	switch {
	case rest == "":
		if allow(w, r, http.MethodGet) {
			http.Redirect(w, r, h.prefix+"/", http.StatusMovedPermanently)
		}
	case rest == "/":
		if allow(w, r, http.MethodGet) {
			h.page(w, r, http.StatusOK, pageNote{})
		}
	case rest == "/login":
		if allow(w, r, http.MethodGet) {
			h.login(w, r)
		}
	case rest == "/exchange":
		if allow(w, r, http.MethodPost) {
			h.exchangeForm(w, r)
		}
	case rest == "/refresh":
		if allow(w, r, http.MethodPost) {
			h.refreshForm(w, r)
		}
	case rest == "/logout":
		if allow(w, r, http.MethodPost) {
			h.logoutForm(w, r)
		}
	case rest == "/generate-url":
		if allow(w, r, http.MethodGet) {
			h.generateURL(w, r)
		}
	case rest == "/exchange-code":
		if allow(w, r, http.MethodPost) {
			h.exchangeCode(w, r)
		}
	case rest == "/status":
		if allow(w, r, http.MethodGet) {
			h.status(w, r)
		}
	case rest == "/tokens":
		if allow(w, r, http.MethodDelete) {
			h.deleteAll(w, r)
		}
	case strings.HasPrefix(rest, "/refresh/"):
		if allow(w, r, http.MethodPost) {
			h.refresh(w, r, strings.TrimPrefix(rest, "/refresh/"))
		}
	case strings.HasPrefix(rest, "/tokens/"):
		if allow(w, r, http.MethodDelete) {
			h.deleteOne(w, r, strings.TrimPrefix(rest, "/tokens/"))
		}
	default:
		apierr.Write(w, http.StatusNotFound, apierr.NotFound, "no such oauth endpoint: "+r.URL.Path)
	}
}

// allow reports whether the request's method is one of methods, answering
// 405 itself when it is not. HEAD is allowed wherever GET is: the server
// sends the GET answer without its body.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m || r.Method == http.MethodHead && m == http.MethodGet {
			return true
		}
	}
	if slices.Contains(methods, http.MethodGet) && !slices.Contains(methods, http.MethodHead) {
		methods = append(methods, http.MethodHead)
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	apierr.Write(w, http.StatusMethodNotAllowed, apierr.InvalidRequest, "method not allowed; use "+strings.Join(methods, ", "))
	return false
}

// writeJSON answers with v; the management answers must never be cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		apierr.Write(w, http.StatusInternalServerError, apierr.API, "encode answer: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError answers with an operation's error in the Anthropic envelope.
func writeError(w http.ResponseWriter, err error) {
	status, typ, msg := errorAnswer(err)
	apierr.Write(w, status, typ, msg)
}

func errorAnswer(err error) (status int, typ, msg string) {
	var oe *opError
	if errors.As(err, &oe) {
		return oe.status, oe.typ, oe.msg
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout, apierr.Timeout, err.Error()
	}
	return http.StatusInternalServerError, apierr.API, err.Error()
}

func (h *handler) generateURL(w http.ResponseWriter, r *http.Request) {
	l, err := h.m.startLogin(r.URL.Query().Get("account_email"))
	if err != nil {
		writeError(w, err)
		return
	}
	e := h.m.env()
	email := l.Account
	if email == "" {
		email = "you@example.com"
	}
	exch, _ := json.Marshal(map[string]string{"code": "CODE#STATE", "account_email": email})
	out := map[string]any{
		"status":    "success",
		"login_url": l.URL,
		"state":     l.State,
		"instructions": map[string]string{
			"step_1": "Open the login_url in your browser",
			"step_2": "Sign in to claude.ai and allow access",
			"step_3": "Copy the code Claude shows (code#state)",
			"step_4": "POST it to " + h.prefix + "/exchange-code with the account_email",
		},
		"callback_format":    e.cfg.RedirectURI + "?code=YOUR_CODE&state=STATE",
		"exchange_example":   "curl -X POST " + h.prefix + "/exchange-code -H 'Content-Type: application/json' -d '" + string(exch) + "'",
		"expires_in_minutes": int(loginTTL / time.Minute),
		"expires_at":         l.ExpiresAt.Unix(),
	}
	if l.Account != "" {
		out["account_email"] = l.Account
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) exchangeCode(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Code    string `json:"code"`
		Account string `json:"account_email"`
		State   string `json:"state"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil {
		apierr.Write(w, http.StatusBadRequest, apierr.InvalidRequest, "body must be JSON {\"code\": ..., \"account_email\": ...}: "+err.Error())
		return
	}
	code := in.Code
	if in.State != "" && !strings.Contains(code, "#") && !strings.Contains(code, "state=") {
		code += "#" + in.State
	}
	st, err := h.m.exchange(r.Context(), code, in.Account)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status":        "success",
		"message":       "Authorization successful",
		"account_email": st.Account,
		"expires_at":    st.ExpiresAt.Unix(),
		"scopes":        st.Scopes,
	})
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	h.m.discover(r.Context())
	list := h.m.status(r.Context())
	now := h.m.now()
	var total, healthy, expired, soon int
	for _, s := range list {
		if !s.LoggedIn {
			continue
		}
		total++
		if s.Healthy {
			healthy++
		} else {
			expired++
		}
		if s.Healthy && s.ExpiringSoon {
			soon++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"system": map[string]any{
			"oauth_manager_status": "active",
			"current_time":         now.Unix(),
			"current_time_iso":     now.UTC().Format(time.RFC3339),
			"login_page":           h.m.env().loginPage,
		},
		"summary": map[string]any{
			"total_tokens":   total,
			"healthy_tokens": healthy,
			"expired_tokens": expired,
			"expiring_soon":  soon,
			"accounts":       len(list),
		},
		"tokens": list,
	})
}

func (h *handler) refresh(w http.ResponseWriter, r *http.Request, email string) {
	st, err := h.m.refreshNow(r.Context(), email)
	if err != nil {
		writeError(w, err)
		return
	}
	left := st.ExpiresAt.Sub(st.Now)
	writeJSON(w, http.StatusOK, map[string]any{
		"status":               "success",
		"message":              "Token refreshed successfully for account: " + st.Account,
		"account_email":        st.Account,
		"account_id":           st.Account,
		"expires_at":           st.ExpiresAt.Unix(),
		"expires_in_seconds":   int64(left / time.Second),
		"expires_in_minutes":   math.Round(left.Minutes()*10) / 10,
		"expires_in_human":     human(left),
		"access_token_preview": st.AccessTokenPreview,
		"scopes":               st.Scopes,
		"refreshed_at":         st.LastRefresh.Unix(),
	})
}

func (h *handler) deleteOne(w http.ResponseWriter, r *http.Request, email string) {
	if err := h.m.logout(r.Context(), email); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "success", "message": "Token for " + normalize(email) + " removed"})
}

func (h *handler) deleteAll(w http.ResponseWriter, r *http.Request) {
	if err := h.m.logoutAll(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "success", "message": "All tokens cleared"})
}

// login starts a login from the page and sends the browser to Claude.
func (h *handler) login(w http.ResponseWriter, r *http.Request) {
	email := r.URL.Query().Get("account_email")
	if normalize(email) == "" {
		h.page(w, r, http.StatusBadRequest, pageNote{err: "Type the email of the account to log in."})
		return
	}
	l, err := h.m.startLogin(email)
	if err != nil {
		status, _, msg := errorAnswer(err)
		h.page(w, r, status, pageNote{err: msg})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, l.URL, http.StatusSeeOther)
}

func (h *handler) exchangeForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
	st, err := h.m.exchange(r.Context(), r.PostFormValue("code"), r.PostFormValue("account_email"))
	if err != nil {
		status, _, msg := errorAnswer(err)
		h.page(w, r, status, pageNote{err: msg})
		return
	}
	h.page(w, r, http.StatusOK, pageNote{result: &st})
}

func (h *handler) refreshForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
	st, err := h.m.refreshNow(r.Context(), r.PostFormValue("account_email"))
	if err != nil {
		status, _, msg := errorAnswer(err)
		h.page(w, r, status, pageNote{err: msg})
		return
	}
	h.page(w, r, http.StatusOK, pageNote{msg: "Refreshed " + st.Account + "; the token now expires " + when(st.ExpiresAt) + "."})
}

func (h *handler) logoutForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
	email := normalize(r.PostFormValue("account_email"))
	if err := h.m.logout(r.Context(), email); err != nil {
		status, _, msg := errorAnswer(err)
		h.page(w, r, status, pageNote{err: msg})
		return
	}
	h.page(w, r, http.StatusOK, pageNote{msg: email + " is logged out."})
}

// shortDuration writes 5m rather than 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// origin returns the scheme and host of u.
func origin(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return ""
	}
	return p.Scheme + "://" + p.Host
}

// pageNote is what the page reports at its top.
type pageNote struct {
	err    string
	msg    string
	result *AccountStatus
}

type pageAccount struct {
	Name, State, StateText, Expires, LastRefresh, LastError string
	Uses                                                    int64
	Configured, LoggedIn                                    bool
}

type pageResult struct {
	Account, Expires, In string
}

type pageData struct {
	Prefix        string
	Accounts      []pageAccount
	Error         string
	Message       string
	Result        *pageResult
	LoginMinutes  int
	RefreshBefore string
}

var stateText = map[string]string{
	"ok":              "logged in",
	"expiring":        "logged in, refreshing soon",
	"refresh_failing": "logged in, refresh failing",
	"expired":         "expired: log in again",
	"needs_login":     "refresh refused: log in again",
	"logged_out":      "not logged in",
}

// when formats a time for the page.
func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func (h *handler) page(w http.ResponseWriter, r *http.Request, status int, note pageNote) {
	h.m.discover(r.Context())
	d := pageData{
		Prefix:        h.prefix,
		Error:         note.err,
		Message:       note.msg,
		LoginMinutes:  int(loginTTL / time.Minute),
		RefreshBefore: shortDuration(h.m.env().cfg.RefreshBefore),
	}
	if s := note.result; s != nil {
		d.Result = &pageResult{Account: s.Account, Expires: when(s.ExpiresAt), In: human(s.ExpiresAt.Sub(s.Now))}
	}
	for _, s := range h.m.status(r.Context()) {
		pa := pageAccount{
			Name: s.Account, State: s.State(), StateText: stateText[s.State()], Uses: s.UsageCount,
			Configured: s.Configured, LoggedIn: s.LoggedIn, LastError: s.LastError, Expires: "—", LastRefresh: "—",
		}
		if s.LoggedIn {
			pa.Expires = when(s.ExpiresAt) + " (" + human(s.ExpiresAt.Sub(s.Now)) + ")"
		}
		if !s.LastRefresh.IsZero() {
			pa.LastRefresh = ago(s.LastRefresh, s.Now)
		}
		d.Accounts = append(d.Accounts, pa)
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, d); err != nil {
		apierr.Write(w, http.StatusInternalServerError, apierr.API, "render page: "+err.Error())
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Frame-Options", "DENY")
	// The account form redirects to the authorize page, and browsers apply
	// form-action to the redirect too.
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' "+
		origin(h.m.env().cfg.AuthorizeURL)+"; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}
