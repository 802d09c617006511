package oauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// reason says why a refresh is wanted; it decides, after storage has been
// re-read under the lock, whether the token endpoint is still needed.
type reason int

const (
	reasonExpiring   reason = iota // a request found the token within RefreshBefore of expiry
	reasonBackground               // the refresher found it within RefreshBefore plus one tick
	reasonRejected                 // the upstream answered 401 to a token
	reasonManual                   // an operator asked
)

// backoffError is returned while an account waits after failed refreshes.
type backoffError struct {
	until time.Time
	last  string
}

func (e *backoffError) Error() string {
	return fmt.Sprintf("refresh failed (%s); next attempt at %s", e.last, e.until.UTC().Format(time.RFC3339))
}

// flight refreshes the account once for all concurrent callers in this
// process.
func (m *Manager) flight(ctx context.Context, a *account, why reason, failed string) (string, error) {
	return m.shared(ctx, "refresh\x00"+a.name, func(ctx context.Context) (string, error) {
		return m.refreshLocked(ctx, a, why, failed)
	})
}

// refreshLocked refreshes under the storage lock, so that instances sharing
// the storage refresh once: whoever comes second finds the new token in
// storage and takes it.
func (m *Manager) refreshLocked(ctx context.Context, a *account, why reason, failed string) (string, error) {
	e := m.env()
	if e.clientErr != nil {
		return "", e.clientErr
	}
	var tok string
	err := m.withLock(ctx, e, a.name, func() error {
		rec, err := m.reload(ctx, e.st, a)
		if err != nil {
			return err
		}
		if rec == nil {
			return errNotLoggedIn
		}
		now := m.now()
		window := e.cfg.RefreshBefore
		if why == reasonBackground {
			window += refreshTick
		}
		expiring := !now.Before(rec.ExpiresAt.Add(-window))
		need := expiring
		switch why {
		case reasonManual:
			need = true
		case reasonRejected:
			need = expiring || rec.AccessToken == failed
		}
		if !need {
			tok = rec.AccessToken
			return nil
		}
		if why != reasonManual {
			a.mu.Lock()
			until, last := a.retryAt, a.lastErr
			a.mu.Unlock()
			if now.Before(until) {
				return &backoffError{until: until, last: last}
			}
			if why == reasonRejected && !expiring && !rec.RefreshedAt.IsZero() && now.Sub(rec.RefreshedAt) < rejectedGrace {
				err := errors.New("the upstream rejected a token refreshed moments ago")
				m.refreshFailed(e, a, rec, err)
				return err
			}
		}
		if rec.RefreshToken == "" {
			err := errors.New("no refresh token stored")
			m.refreshFailed(e, a, rec, err)
			return err
		}
		resp, err := m.tokenCall(ctx, e.cfg, e.client, [][2]string{
			{"grant_type", "refresh_token"},
			{"client_id", e.cfg.ClientID},
			{"refresh_token", rec.RefreshToken},
		}, false)
		if err != nil {
			m.refreshFailed(e, a, rec, err)
			return err
		}
		next := *rec
		next.AccessToken = resp.AccessToken
		if resp.RefreshToken != "" {
			next.RefreshToken = resp.RefreshToken
		}
		next.ExpiresAt = expiry(now, resp.ExpiresIn)
		if resp.Scope != "" {
			next.Scopes = strings.Fields(resp.Scope)
		}
		next.RefreshedAt = now
		if err := storeRecord(ctx, e.st, &next); err != nil {
			// The new token works here; instances sharing the storage will
			// find the old refresh token spent and need a new login.
			e.log.Error("oauth token refreshed but not saved", zap.String("account", a.name), zap.Error(err))
		}
		a.mu.Lock()
		a.rec, a.lastRefresh = &next, now
		a.failures, a.retryAt, a.lastErr, a.needsLogin = 0, time.Time{}, "", false
		a.mu.Unlock()
		e.log.Info("oauth token refreshed", zap.String("account", a.name), zap.Time("expires_at", next.ExpiresAt))
		m.observe(a.name, nil)
		tok = next.AccessToken
		return nil
	})
	return tok, err
}

// expiry turns expires_in into a time; an answer without it is taken to last
// an hour, Claude's usual lifetime being longer.
func expiry(now time.Time, expiresIn int64) time.Time {
	if expiresIn <= 0 {
		return now.Add(time.Hour)
	}
	return now.Add(time.Duration(expiresIn) * time.Second)
}

// refreshFailed records a failed refresh and schedules the next attempt.
func (m *Manager) refreshFailed(e env, a *account, rec *record, err error) {
	var te *tokenError
	var retryAfter time.Duration
	permanent := rec.RefreshToken == ""
	if errors.As(err, &te) {
		retryAfter, permanent = te.RetryAfter, te.permanent()
	}
	msg := scrub(err.Error(), rec)
	now := m.now()
	a.mu.Lock()
	a.failures++
	a.retryAt = now.Add(backoffDelay(a.failures, retryAfter, permanent))
	a.lastErr, a.needsLogin = msg, permanent
	until := a.retryAt
	a.mu.Unlock()
	how := "open " + e.loginPage + " to log in again if this persists"
	if permanent {
		how = "the refresh token was refused: open " + e.loginPage + " to log in again"
	}
	e.log.Warn("oauth token refresh failed",
		zap.String("account", a.name), zap.String("error", msg), zap.Time("retry_at", until), zap.String("login", how))
	m.observe(a.name, errors.New(msg))
}

// backoffDelay is the wait after the n-th failure in a row.
func backoffDelay(n int, retryAfter time.Duration, permanent bool) time.Duration {
	d := maxBackoff
	if !permanent && n <= 5 {
		d = min(minBackoff<<(n-1), maxBackoff)
	}
	if retryAfter > d {
		d = min(retryAfter, maxRetryAfter)
	}
	return d
}

// scrub removes the record's tokens from a message, in case an endpoint
// echoes them back.
func scrub(msg string, rec *record) string {
	for _, t := range []string{rec.AccessToken, rec.RefreshToken} {
		if len(t) >= 8 {
			msg = strings.ReplaceAll(msg, t, mask(t))
		}
	}
	return msg
}

// withLock runs fn holding the account's storage lock. Unlock gets a context
// that is not cancelled, so that a caller giving up never leaves it behind.
func (m *Manager) withLock(ctx context.Context, e env, account string, fn func() error) error {
	name := lockName(account)
	if err := e.st.Lock(ctx, name); err != nil {
		return fmt.Errorf("lock oauth token of %s: %w", account, err)
	}
	defer func() {
		if err := e.st.Unlock(context.WithoutCancel(ctx), name); err != nil {
			e.log.Error("oauth storage unlock failed", zap.String("account", account), zap.Error(err))
		}
	}()
	return fn()
}

// startBackground starts the refresher on first use; never in NewManager,
// so that validating a config does not start it.
func (m *Manager) startBackground() {
	if m.bgStarted.Load() {
		return
	}
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	if m.bgStarted.Load() || m.bgClosed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.bgCancel, m.bgDone = cancel, make(chan struct{})
	m.bgStarted.Store(true)
	go m.refresher(ctx, m.bgDone)
}

func (m *Manager) refresher(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.after(refreshTick):
		}
		m.refreshDue(ctx)
	}
}

// refreshDue refreshes every account whose token will enter the RefreshBefore
// window before the next tick, so requests rarely wait for a refresh.
func (m *Manager) refreshDue(ctx context.Context) {
	e := m.env()
	for _, a := range m.names() {
		if ctx.Err() != nil {
			return
		}
		if m.ensureLoaded(ctx, a) != nil {
			continue
		}
		now := m.now()
		rec, retryAt := a.state()
		if rec == nil || now.Before(retryAt) || now.Before(rec.ExpiresAt.Add(-e.cfg.RefreshBefore-refreshTick)) {
			continue
		}
		_, _ = m.flight(ctx, a, reasonBackground, "")
	}
}
