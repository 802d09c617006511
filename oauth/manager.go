package oauth

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/clock"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// ErrNoToken is matched (errors.Is) by every error that means an account has
// no usable token. For the balancer this is a credential failure of the
// provider: fail over. The user fixes it by logging in on the /oauth/ page.
var ErrNoToken = errors.New("no usable oauth token")

var errNotLoggedIn = errors.New("not logged in")

// NoTokenError says why an account has no usable token. It matches ErrNoToken
// and its cause.
type NoTokenError struct {
	// Account is the account (lower-cased email).
	Account string
	// LoginPage is the path of the page where the account logs in again.
	LoginPage string
	// RetryAt is when a failed refresh will be tried again; zero when no
	// refresh is pending.
	RetryAt time.Time
	// Err is the cause: not logged in, a refresh the token endpoint refused.
	Err error
}

func (e *NoTokenError) Error() string {
	msg := "oauth account " + e.Account + ": no usable token"
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + "; log in at " + e.LoginPage
}

// Unwrap returns ErrNoToken and the cause.
func (e *NoTokenError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrNoToken}
	}
	return []error{ErrNoToken, e.Err}
}

// Timing of storage re-reads, refreshes and warnings.
const (
	// recheckEvery limits re-reads of storage for an account that has no
	// usable token, so requests routed to it do not each hit storage.
	recheckEvery = 15 * time.Second
	// flightTimeout bounds one shared refresh: waiting for the storage lock
	// (a stale file lock clears after 10s) plus the token call.
	flightTimeout = time.Minute
	// warnEvery limits "no usable token" warnings per account.
	warnEvery = time.Minute
	// refreshTick is the background refresher's period; it refreshes tokens
	// one tick before requests would have to.
	refreshTick = time.Minute
	// rejectedGrace: a token refreshed this recently that the upstream
	// still rejects is not refreshed again at once; the account backs off.
	rejectedGrace = time.Minute
	// Backoff of failed refreshes: doubling from minBackoff up to
	// maxBackoff; a Retry-After from the token endpoint wins up to
	// maxRetryAfter.
	minBackoff    = 30 * time.Second
	maxBackoff    = 10 * time.Minute
	maxRetryAfter = time.Hour
)

// Manager keeps the tokens of the accounts of one balancer. It is safe for
// concurrent use and meant to live across config reloads: the caller keeps it
// in a caddy.UsagePool and calls Update with each new config.
type Manager struct {
	mu         sync.RWMutex
	cfg        Config
	client     *http.Client
	clientErr  error
	storage    certmagic.Storage
	logger     *zap.Logger
	loginPage  string
	accounts   map[string]*account
	configured []string

	logins logins
	group  singleflight.Group

	// observer is told about every refresh attempt's result.
	observer atomic.Pointer[func(account string, err error)]

	bgStarted atomic.Bool
	bgMu      sync.Mutex
	bgClosed  bool
	bgCancel  context.CancelFunc
	bgDone    chan struct{}

	// clock is the module's one time source; after schedules the background
	// refresher on it. Tests replace them so that nothing sleeps.
	clock clock.Clock
	after func(time.Duration) <-chan time.Time
}

func (m *Manager) now() time.Time { return m.clock.Now() }

// account is the in-memory state of one account. Records are never modified
// once made, so a *record read under mu stays valid after unlocking.
type account struct {
	name     string
	usage    atomic.Int64
	lastUsed atomic.Int64 // unix nanoseconds

	mu          sync.Mutex
	rec         *record
	loaded      bool // storage was read successfully at least once
	checkedAt   time.Time
	loadErr     error
	lastRefresh time.Time
	failures    int
	retryAt     time.Time
	lastErr     string
	needsLogin  bool
	warnedAt    time.Time
}

// env is one consistent view of the Manager's configuration.
type env struct {
	cfg       Config
	client    *http.Client
	clientErr error
	st        certmagic.Storage
	log       *zap.Logger
	loginPage string
}

// NewManager returns a Manager. It neither reads storage nor starts anything:
// tokens are loaded and the background refresher starts on first use, so that
// validating a config touches neither storage nor the network.
func NewManager(cfg Config, storage certmagic.Storage, logger *zap.Logger) *Manager {
	m := &Manager{
		accounts:  make(map[string]*account),
		loginPage: "/oauth/",
		clock:     clock.System,
	}
	m.after = func(d time.Duration) <-chan time.Time { return clock.After(m.clock, d) }
	m.logins.byState = make(map[string]*pendingLogin)
	m.apply(cfg, storage, logger)
	return m
}

// Update installs the configuration of a reloaded config. Tokens, pending
// logins, usage counts and backoff are kept.
func (m *Manager) Update(cfg Config, storage certmagic.Storage, logger *zap.Logger) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apply(cfg, storage, logger)
}

func (m *Manager) apply(cfg Config, storage certmagic.Storage, logger *zap.Logger) {
	if logger == nil {
		logger = zap.NewNop()
	}
	m.cfg = cfg.withDefaults()
	m.client, m.clientErr = m.cfg.client()
	m.storage = storage
	m.logger = logger
}

// SetObserver registers a function called after every refresh with the
// account and the error (nil for success), for metrics and events. It must
// not block.
func (m *Manager) SetObserver(fn func(account string, err error)) {
	m.observer.Store(&fn)
}

func (m *Manager) observe(account string, err error) {
	if fn := m.observer.Load(); fn != nil && *fn != nil {
		(*fn)(account, err)
	}
}

// SetAccounts names the accounts the configured providers use, in order; the
// login page and Status list them even before they log in.
func (m *Manager) SetAccounts(emails []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.configured = m.configured[:0]
	for _, e := range emails {
		name := normalize(e)
		if checkAccount(name) != nil || slices.Contains(m.configured, name) {
			continue
		}
		m.configured = append(m.configured, name)
		if m.accounts[name] == nil {
			m.accounts[name] = &account{name: name}
		}
	}
}

func (m *Manager) env() env {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return env{cfg: m.cfg, client: m.client, clientErr: m.clientErr, st: m.storage, log: m.logger, loginPage: m.loginPage}
}

// lookup finds an account, creating its entry when create is set.
func (m *Manager) lookup(email string, create bool) (*account, time.Duration, error) {
	name := normalize(email)
	m.mu.RLock()
	a, before := m.accounts[name], m.cfg.RefreshBefore
	m.mu.RUnlock()
	if a != nil || !create {
		return a, before, nil
	}
	if err := checkAccount(name); err != nil {
		return nil, before, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a = m.accounts[name]; a == nil {
		a = &account{name: name}
		m.accounts[name] = a
	}
	return a, before, nil
}

// Token returns a usable access token of the account. A token expiring within
// RefreshBefore is refreshed first; when that fails, a token that has not yet
// expired is still returned. An error matching ErrNoToken means the account
// cannot be used until someone logs in (or a backed-off refresh succeeds).
func (m *Manager) Token(ctx context.Context, email string) (string, error) {
	a, before, err := m.lookup(email, true)
	if err != nil {
		return "", m.noToken(normalize(email), nil, err)
	}
	now := m.now()
	a.mu.Lock()
	if rec := a.rec; rec != nil && now.Before(rec.ExpiresAt.Add(-before)) {
		a.mu.Unlock()
		a.use(now)
		m.startBackground()
		return rec.AccessToken, nil
	}
	a.mu.Unlock()
	return m.slowToken(ctx, a, before)
}

func (m *Manager) slowToken(ctx context.Context, a *account, before time.Duration) (string, error) {
	m.startBackground()
	if err := m.ensureLoaded(ctx, a); err != nil {
		return "", m.noToken(a.name, a, err)
	}
	now := m.now()
	rec, retryAt := a.state()
	if rec != nil && now.Before(rec.ExpiresAt.Add(-before)) {
		a.use(now)
		return rec.AccessToken, nil
	}
	if rec == nil || now.Before(retryAt) {
		// Not logged in here, or refreshing is backing off: another instance
		// sharing the storage may have logged in or refreshed since.
		m.recheck(ctx, a)
		rec, retryAt = a.state()
		switch {
		case rec == nil:
			return "", m.noToken(a.name, a, errNotLoggedIn)
		case now.Before(rec.ExpiresAt.Add(-before)):
			a.use(now)
			return rec.AccessToken, nil
		case now.Before(retryAt):
			if now.Before(rec.ExpiresAt) {
				a.use(now)
				return rec.AccessToken, nil
			}
			return "", m.noToken(a.name, a, nil)
		}
	}
	tok, err := m.flight(ctx, a, reasonExpiring, "")
	if err == nil {
		a.use(now)
		return tok, nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if rec, _ = a.state(); rec != nil && m.now().Before(rec.ExpiresAt) {
		a.use(now)
		return rec.AccessToken, nil
	}
	return "", m.noToken(a.name, a, err)
}

// Refresh is called after the upstream rejected failedToken (HTTP 401). It
// returns a token to retry with: the one another caller already put in its
// place, or a new one from a refresh made once however many callers report
// the same failure. During backoff it returns an error matching ErrNoToken.
// An empty failedToken means the account's current token.
func (m *Manager) Refresh(ctx context.Context, email, failedToken string) (string, error) {
	a, _, err := m.lookup(email, true)
	if err != nil {
		return "", m.noToken(normalize(email), nil, err)
	}
	m.startBackground()
	if err := m.ensureLoaded(ctx, a); err != nil {
		return "", m.noToken(a.name, a, err)
	}
	now := m.now()
	rec, retryAt := a.state()
	if rec == nil {
		m.recheck(ctx, a)
		if rec, retryAt = a.state(); rec == nil {
			return "", m.noToken(a.name, a, errNotLoggedIn)
		}
	}
	if failedToken == "" {
		failedToken = rec.AccessToken
	}
	if rec.AccessToken != failedToken && now.Before(rec.ExpiresAt) {
		a.use(now)
		return rec.AccessToken, nil
	}
	if now.Before(retryAt) {
		m.recheck(ctx, a)
		if rec, _ = a.state(); rec != nil && rec.AccessToken != failedToken && now.Before(rec.ExpiresAt) {
			a.use(now)
			return rec.AccessToken, nil
		}
		return "", m.noToken(a.name, a, nil)
	}
	tok, err := m.flight(ctx, a, reasonRejected, failedToken)
	if err == nil && tok == failedToken {
		// Joined a flight started for another reason that kept this token.
		tok, err = m.flight(ctx, a, reasonRejected, failedToken)
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", m.noToken(a.name, a, err)
	}
	if tok == failedToken {
		return "", m.noToken(a.name, a, errors.New("the token was rejected and could not be replaced"))
	}
	a.use(now)
	return tok, nil
}

// state returns the account's record and the end of its backoff.
func (a *account) state() (*record, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rec, a.retryAt
}

func (a *account) use(now time.Time) {
	a.usage.Add(1)
	a.lastUsed.Store(now.UnixNano())
}

// adopt installs what storage holds. A token this process did not have came
// from another instance's login or refresh, which ends any backoff here.
func (a *account) adopt(rec *record) {
	if rec != nil && (a.rec == nil || a.rec.AccessToken != rec.AccessToken) {
		a.failures, a.retryAt, a.lastErr, a.needsLogin = 0, time.Time{}, "", false
		if rec.RefreshedAt.After(a.lastRefresh) {
			a.lastRefresh = rec.RefreshedAt
		}
	}
	a.rec = rec
}

// reload reads the account's record from storage and adopts it.
func (m *Manager) reload(ctx context.Context, st certmagic.Storage, a *account) (*record, error) {
	rec, err := loadRecord(ctx, st, a.name)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checkedAt = m.now()
	if err != nil {
		a.loadErr = err
		return nil, err
	}
	a.loadErr, a.loaded = nil, true
	a.adopt(rec)
	return rec, nil
}

// ensureLoaded reads the account from storage on first use. A failed read is
// retried at most every recheckEvery.
func (m *Manager) ensureLoaded(ctx context.Context, a *account) error {
	a.mu.Lock()
	loaded, loadErr, checked := a.loaded, a.loadErr, a.checkedAt
	a.mu.Unlock()
	if loaded {
		return nil
	}
	if loadErr != nil && m.now().Sub(checked) < recheckEvery {
		return loadErr
	}
	return m.load(ctx, a)
}

// recheck re-reads the account from storage unless that was done recently.
func (m *Manager) recheck(ctx context.Context, a *account) {
	a.mu.Lock()
	checked := a.checkedAt
	a.mu.Unlock()
	if m.now().Sub(checked) >= recheckEvery {
		_ = m.load(ctx, a)
	}
}

// load reads the account from storage once for all concurrent callers.
func (m *Manager) load(ctx context.Context, a *account) error {
	_, err := m.shared(ctx, "load\x00"+a.name, func(ctx context.Context) (string, error) {
		_, err := m.reload(ctx, m.env().st, a)
		return "", err
	})
	return err
}

// shared runs fn once for all concurrent callers with the same key. fn gets a
// context that outlives any one caller, so the first caller leaving does not
// fail the others; each caller still stops waiting when its own ctx ends.
func (m *Manager) shared(ctx context.Context, key string, fn func(context.Context) (string, error)) (string, error) {
	ch := m.group.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		defer cancel()
		return fn(fctx)
	})
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-ch:
		s, _ := r.Val.(string)
		return s, r.Err
	}
}

// noToken builds the error for an account without a usable token and warns,
// at most every warnEvery per account, with the way out.
func (m *Manager) noToken(name string, a *account, cause error) error {
	e := m.env()
	nt := &NoTokenError{Account: name, LoginPage: e.loginPage, Err: cause}
	if a == nil {
		return nt
	}
	now := m.now()
	a.mu.Lock()
	if now.Before(a.retryAt) {
		nt.RetryAt = a.retryAt
		if cause == nil && a.lastErr != "" {
			nt.Err = errors.New("refresh failed: " + a.lastErr)
		}
	}
	warn := now.Sub(a.warnedAt) >= warnEvery
	if warn {
		a.warnedAt = now
	}
	a.mu.Unlock()
	if warn {
		fields := []zap.Field{zap.String("account", name), zap.String("login", "open "+e.loginPage+" to log in")}
		if nt.Err != nil {
			fields = append(fields, zap.String("reason", nt.Err.Error()))
		}
		if !nt.RetryAt.IsZero() {
			fields = append(fields, zap.Time("retry_at", nt.RetryAt))
		}
		e.log.Warn("oauth account has no usable token", fields...)
	}
	return nt
}

// names returns the configured accounts, then the others that hold a token.
func (m *Manager) names() []*account {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*account, 0, len(m.accounts))
	for _, n := range m.configured {
		out = append(out, m.accounts[n])
	}
	var rest []*account
	for n, a := range m.accounts {
		if slices.Contains(m.configured, n) {
			continue
		}
		a.mu.Lock()
		has := a.rec != nil
		a.mu.Unlock()
		if has {
			rest = append(rest, a)
		}
	}
	slices.SortFunc(rest, func(x, y *account) int { return cmp.Compare(x.name, y.name) })
	return append(out, rest...)
}

func (m *Manager) isConfigured(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Contains(m.configured, name)
}

// Status describes every configured account and every other account holding
// a token, reading storage for accounts not yet loaded. It never contains a
// token, only masked previews.
func (m *Manager) Status() []AccountStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return m.status(ctx)
}

func (m *Manager) status(ctx context.Context) []AccountStatus {
	accts := m.names()
	out := make([]AccountStatus, 0, len(accts))
	for _, a := range accts {
		_ = m.ensureLoaded(ctx, a)
		out = append(out, m.statusOf(a))
	}
	return out
}

// Close stops the background refresher. Token and Refresh keep working for
// requests still holding the Manager.
func (m *Manager) Close() {
	m.bgMu.Lock()
	m.bgClosed = true
	cancel, done := m.bgCancel, m.bgDone
	m.bgCancel = nil
	m.bgMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
