package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
)

// Pending logins: each started login waits for its code for loginTTL; at most
// maxPending wait at once (the oldest give way).
const (
	loginTTL   = 10 * time.Minute
	maxPending = 256
)

// opError is a failed management operation with the answer it deserves.
type opError struct {
	status int
	typ    string
	msg    string
}

func (e *opError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &opError{status: http.StatusBadRequest, typ: apierr.InvalidRequest, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &opError{status: http.StatusNotFound, typ: apierr.NotFound, msg: fmt.Sprintf(format, args...)}
}

// pendingLogin is a login waiting for its code: the PKCE verifier stays here,
// only its S256 challenge went to the authorize page.
type pendingLogin struct {
	state    string
	verifier string
	account  string // empty when the login was started without one
	created  time.Time
}

type logins struct {
	mu      sync.Mutex
	byState map[string]*pendingLogin
}

func (l *logins) add(p *pendingLogin) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var oldest *pendingLogin
	for s, q := range l.byState {
		if p.created.Sub(q.created) >= loginTTL {
			delete(l.byState, s)
		} else if oldest == nil || q.created.Before(oldest.created) {
			oldest = q
		}
	}
	if len(l.byState) >= maxPending && oldest != nil {
		delete(l.byState, oldest.state)
	}
	l.byState[p.state] = p
}

// get returns the unexpired login with this state.
func (l *logins) get(state string, now time.Time) *pendingLogin {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.byState[state]
	if p == nil || now.Sub(p.created) >= loginTTL {
		return nil
	}
	return p
}

// latest returns the newest unexpired login started for account.
func (l *logins) latest(account string, now time.Time) *pendingLogin {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *pendingLogin
	for _, p := range l.byState {
		if p.account == account && now.Sub(p.created) < loginTTL && (best == nil || p.created.After(best.created)) {
			best = p
		}
	}
	return best
}

func (l *logins) remove(state string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byState, state)
}

// login is a started login.
type login struct {
	URL       string
	State     string
	Account   string
	ExpiresAt time.Time
}

// startLogin creates a pending login and the authorize URL that begins it.
func (m *Manager) startLogin(account string) (login, error) {
	account = normalize(account)
	if account != "" {
		if err := checkAccount(account); err != nil {
			return login{}, badRequest("%s", err)
		}
	}
	e := m.env()
	p := &pendingLogin{
		state:    oauth2.GenerateVerifier(),
		verifier: oauth2.GenerateVerifier(),
		account:  account,
		created:  m.now(),
	}
	oc := oauth2.Config{
		ClientID:    e.cfg.ClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: e.cfg.AuthorizeURL, TokenURL: e.cfg.TokenURL},
		RedirectURL: e.cfg.RedirectURI,
		Scopes:      e.cfg.Scopes,
	}
	// code=true makes Claude show the code on its callback page instead of
	// redirecting to a local server.
	u := oc.AuthCodeURL(p.state, oauth2.SetAuthURLParam("code", "true"), oauth2.S256ChallengeOption(p.verifier))
	m.logins.add(p)
	m.startBackground()
	return login{URL: u, State: p.state, Account: account, ExpiresAt: p.created.Add(loginTTL)}, nil
}

// parseCode takes what the user pasted: "code#state" as Claude's page shows
// it, a bare code, or the whole callback URL, with stray whitespace.
func parseCode(input string) (code, state string) {
	s := strings.TrimSpace(input)
	if i := strings.Index(s, "code="); i >= 0 {
		q := s
		if j := strings.IndexByte(q, '?'); j >= 0 && j < i {
			q = q[j+1:]
		}
		frag := ""
		if j := strings.IndexByte(q, '#'); j >= 0 {
			q, frag = q[:j], q[j+1:]
		}
		if v, err := url.ParseQuery(q); err == nil && v.Get("code") != "" {
			code, state = v.Get("code"), v.Get("state")
			if state == "" && frag != "" && !strings.Contains(frag, "=") {
				state = frag
			}
			return strings.TrimSpace(code), strings.TrimSpace(state)
		}
	}
	code, state, _ = strings.Cut(s, "#")
	code, _, _ = strings.Cut(code, "&")
	state, _, _ = strings.Cut(state, "&")
	return strings.TrimSpace(code), strings.TrimSpace(state)
}

// exchange finishes a login: it trades the pasted code for tokens, stores
// them and returns the account's new status.
func (m *Manager) exchange(ctx context.Context, input, account string) (AccountStatus, error) {
	code, state := parseCode(input)
	if code == "" {
		return AccountStatus{}, badRequest("Missing authorization code")
	}
	account = normalize(account)
	now := m.now()
	var p *pendingLogin
	switch {
	case state != "":
		if p = m.logins.get(state, now); p == nil {
			return AccountStatus{}, badRequest("unknown or expired login state: logins expire after %d minutes and work once; start the login again", int(loginTTL/time.Minute))
		}
	case account == "":
		return AccountStatus{}, badRequest("the code carries no state (Claude shows it as code#state): paste all of it, or choose the account the login was started for")
	default:
		if p = m.logins.latest(account, now); p == nil {
			return AccountStatus{}, badRequest("no login for %s was started in the last %d minutes: start the login again", account, int(loginTTL/time.Minute))
		}
	}
	switch {
	case p.account != "" && account == "":
		account = p.account
	case p.account != "" && account != p.account:
		return AccountStatus{}, badRequest("this login was started for %s, not %s", p.account, account)
	case account == "":
		return AccountStatus{}, badRequest("Missing account_email parameter. Please provide your email address for account identification.")
	}
	if err := checkAccount(account); err != nil {
		return AccountStatus{}, badRequest("%s", err)
	}
	e := m.env()
	if e.clientErr != nil {
		return AccountStatus{}, e.clientErr
	}
	resp, err := m.tokenCall(ctx, e.cfg, e.client, [][2]string{
		{"grant_type", "authorization_code"},
		{"client_id", e.cfg.ClientID},
		{"code", code},
		{"redirect_uri", e.cfg.RedirectURI},
		{"code_verifier", p.verifier},
		{"state", p.state},
	}, true)
	if err != nil {
		var te *tokenError
		if errors.As(err, &te) && te.permanent() {
			return AccountStatus{}, badRequest("Claude refused the code (%s); codes work once and expire quickly: start the login again", te)
		}
		return AccountStatus{}, &opError{status: http.StatusBadGateway, typ: apierr.API, msg: "Failed to exchange authorization code: " + err.Error()}
	}
	if got := normalize(resp.Account.Email); got != "" && strings.Contains(account, "@") && got != account {
		return AccountStatus{}, badRequest("Claude logged in %s, not %s: sign in to claude.ai as %s and start again", got, account, account)
	}
	now = m.now()
	rec := &record{
		Account:      account,
		AccessToken:  resp.AccessToken,
		RefreshToken: resp.RefreshToken,
		ExpiresAt:    expiry(now, resp.ExpiresIn),
		Scopes:       strings.Fields(resp.Scope),
		CreatedAt:    now,
	}
	if len(rec.Scopes) == 0 {
		rec.Scopes = append([]string(nil), e.cfg.Scopes...)
	}
	// Under the lock, so that a refresh of the previous login running on
	// another instance cannot overwrite this one afterwards.
	if err := m.withLock(ctx, e, account, func() error { return storeRecord(ctx, e.st, rec) }); err != nil {
		return AccountStatus{}, fmt.Errorf("save login: %w", err)
	}
	m.logins.remove(p.state)
	a, _, _ := m.lookup(account, true)
	a.mu.Lock()
	a.rec, a.loaded, a.checkedAt, a.loadErr = rec, true, now, nil
	a.failures, a.retryAt, a.lastErr, a.needsLogin = 0, time.Time{}, "", false
	a.mu.Unlock()
	m.startBackground()
	e.log.Info("oauth account logged in", zap.String("account", account), zap.Time("expires_at", rec.ExpiresAt))
	return m.statusOf(a), nil
}

// refreshNow refreshes an account's token at an operator's request, even
// during backoff.
func (m *Manager) refreshNow(ctx context.Context, account string) (AccountStatus, error) {
	a, _, err := m.lookup(account, true)
	if err != nil {
		return AccountStatus{}, badRequest("%s", err)
	}
	if err := m.ensureLoaded(ctx, a); err != nil {
		return AccountStatus{}, err
	}
	if rec, _ := a.state(); rec == nil {
		return AccountStatus{}, notFound("Token not found for account: %s; log in at %s", a.name, m.env().loginPage)
	}
	if _, err := m.flight(ctx, a, reasonManual, ""); err != nil {
		return AccountStatus{}, &opError{status: http.StatusBadGateway, typ: apierr.API,
			msg: fmt.Sprintf("refresh failed for account %s: %s", a.name, err)}
	}
	return m.statusOf(a), nil
}

// logout forgets an account's token here and in storage.
func (m *Manager) logout(ctx context.Context, account string) error {
	name := normalize(account)
	if err := checkAccount(name); err != nil {
		return badRequest("%s", err)
	}
	e := m.env()
	a, _, _ := m.lookup(name, false)
	found := false
	if a != nil {
		rec, _ := a.state()
		found = rec != nil
	}
	err := m.withLock(ctx, e, name, func() error {
		found = found || e.st.Exists(ctx, storageKey(name))
		return deleteRecord(ctx, e.st, name)
	})
	if err != nil {
		return err
	}
	if a != nil {
		a.mu.Lock()
		a.rec, a.loaded, a.checkedAt = nil, true, m.now()
		a.failures, a.retryAt, a.lastErr, a.needsLogin = 0, time.Time{}, "", false
		a.mu.Unlock()
	}
	if !found {
		return notFound("Token for %s not found", name)
	}
	e.log.Info("oauth account logged out", zap.String("account", name))
	return nil
}

// logoutAll forgets every account's token here and in storage.
func (m *Manager) logoutAll(ctx context.Context) error {
	stored, err := storedAccounts(ctx, m.env().st)
	if err != nil {
		return err
	}
	m.mu.RLock()
	names := stored
	for n := range m.accounts {
		names = append(names, n)
	}
	m.mu.RUnlock()
	var errs []error
	for _, n := range names {
		if err := m.logout(ctx, n); err != nil {
			var oe *opError
			if !errors.As(err, &oe) || oe.status != http.StatusNotFound {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// discover loads accounts that have a token in storage but are not known
// here, such as ones logged in on another instance.
func (m *Manager) discover(ctx context.Context) {
	names, err := storedAccounts(ctx, m.env().st)
	if err != nil {
		return
	}
	for _, n := range names {
		if checkAccount(n) != nil {
			continue
		}
		if a, _, _ := m.lookup(n, true); a != nil {
			_ = m.ensureLoaded(ctx, a)
		}
	}
}
