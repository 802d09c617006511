package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

const me = "me@example.com"

func TestTokenRefreshesOnlyWithinRefreshBefore(t *testing.T) {
	e := newEnv(t)
	first := e.login(t, me)

	e.clock.Advance(time.Hour - DefaultRefreshBefore - time.Second)
	if tok, err := e.m.Token(context.Background(), me); err != nil || tok != first {
		t.Fatalf("before the window: %v, token changed %v", err, tok != first)
	}
	if _, n := e.mock.counts(); n != 0 {
		t.Fatalf("%d refreshes before the window, want 0", n)
	}

	e.clock.Advance(2 * time.Second)
	tok, err := e.m.Token(context.Background(), me)
	if err != nil {
		t.Fatal(err)
	}
	if _, n := e.mock.counts(); n != 1 || tok == first {
		t.Fatalf("inside the window: %d refreshes, new token %v; want 1, true", n, tok != first)
	}
	rec, err := loadRecord(context.Background(), e.st, me)
	if err != nil || rec.AccessToken != tok || !rec.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) || !rec.RefreshedAt.Equal(e.clock.Now()) {
		t.Fatalf("stored record %+v, %v: want the refreshed token", rec, err)
	}
}

func TestConcurrentTokenCallsRefreshOnce(t *testing.T) {
	st := &countingStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}}
	e := newEnvWith(t, newMock(t), st, newClock())
	first := e.login(t, me)
	e.clock.Advance(time.Hour - time.Minute)
	_, locksBefore := st.count()
	// Hold the refresh at the endpoint until it is under way, so that the
	// other callers find it in flight.
	e.mock.mu.Lock()
	e.mock.gate, e.mock.entered = make(chan struct{}), make(chan struct{}, 1)
	e.mock.mu.Unlock()

	const n = 50
	var wg sync.WaitGroup
	start := make(chan struct{})
	toks := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			toks[i], errs[i] = e.m.Token(context.Background(), me)
		})
	}
	close(start)
	<-e.mock.entered
	close(e.mock.gate)
	wg.Wait()
	if _, r := e.mock.counts(); r != 1 {
		t.Fatalf("%d refresh calls, want exactly 1", r)
	}
	if _, locks := st.count(); locks-locksBefore != 1 {
		t.Fatalf("%d storage locks, want 1: callers in one process share one refresh", locks-locksBefore)
	}
	for i := range n {
		if errs[i] != nil || toks[i] == first || toks[i] != toks[0] {
			t.Fatalf("call %d: %v, got the new token: %v", i, errs[i], toks[i] != first && toks[i] == toks[0])
		}
	}
	if got := e.m.statusOf(e.m.accounts[me]).UsageCount; got != n+1 {
		t.Fatalf("usage count %d, want %d", got, n+1)
	}
}

func TestRefreshAfterRejectionRefreshesOnceForAllCallers(t *testing.T) {
	e := newEnv(t)
	failed := e.login(t, me)

	e.mock.mu.Lock()
	e.mock.gate, e.mock.entered = make(chan struct{}), make(chan struct{}, 4)
	e.mock.mu.Unlock()
	results := make(chan string, 2)
	for range 2 {
		go func() {
			tok, err := e.m.Refresh(context.Background(), me, failed)
			if err != nil {
				tok = "error: " + err.Error()
			}
			results <- tok
		}()
	}
	<-e.mock.entered
	close(e.mock.gate)
	a, b := <-results, <-results
	if a != b || a == failed || strings.HasPrefix(a, "error") {
		t.Fatalf("callers got %q and %q, want the same new token", a, b)
	}
	// A caller reporting the same failure later gets the replacement without a call.
	tok, err := e.m.Refresh(context.Background(), me, failed)
	if err != nil || tok != a {
		t.Fatalf("late caller: %v, same token %v", err, tok == a)
	}
	if _, n := e.mock.counts(); n != 1 {
		t.Fatalf("%d refresh calls, want 1", n)
	}
	if tok, _ := e.m.Token(context.Background(), me); tok != a {
		t.Fatal("Token does not return the replacement")
	}
}

func TestRefreshOfATokenJustRefreshedBacksOff(t *testing.T) {
	e := newEnv(t)
	first := e.login(t, me)
	second, err := e.m.Refresh(context.Background(), me, first)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Refresh(context.Background(), me, second)
	if !errors.Is(err, ErrNoToken) {
		t.Fatalf("rejected again at once: %v, want no usable token", err)
	}
	if _, n := e.mock.counts(); n != 1 {
		t.Fatalf("%d refresh calls, want 1: a token refused right after a refresh is not refreshed again at once", n)
	}
	e.clock.Advance(rejectedGrace + minBackoff)
	third, err := e.m.Refresh(context.Background(), me, second)
	if err != nil || third == second {
		t.Fatalf("after the backoff: %v", err)
	}
}

func TestRefreshFailureBacksOff(t *testing.T) {
	e := newEnv(t)
	e.login(t, me)
	e.mock.setRefuse("", refusal{status: http.StatusInternalServerError, body: `{"error":"server_error"}`})
	e.clock.Advance(time.Hour + time.Second) // expired

	check := func(wantCalls int) {
		t.Helper()
		_, err := e.m.Token(context.Background(), me)
		var nt *NoTokenError
		if !errors.As(err, &nt) || !errors.Is(err, ErrNoToken) {
			t.Fatalf("Token: %v, want a NoTokenError", err)
		}
		if _, n := e.mock.counts(); n != wantCalls {
			t.Fatalf("%d refresh calls, want %d", n, wantCalls)
		}
	}
	check(1)
	check(1)
	e.clock.Advance(minBackoff - time.Second)
	check(1)
	e.clock.Advance(time.Second)
	check(2)
	e.clock.Advance(2*minBackoff - time.Second) // the second failure doubles the wait
	check(2)
	e.clock.Advance(time.Second)
	check(3)

	e.mock.clearRefuse()
	e.clock.Advance(4 * minBackoff)
	if _, err := e.m.Token(context.Background(), me); err != nil {
		t.Fatalf("after the endpoint recovers: %v", err)
	}
	st := e.m.statusOf(e.m.accounts[me])
	if st.LastError != "" || !st.RetryAt.IsZero() || st.State() != "ok" {
		t.Fatalf("a success should clear the backoff: %+v", st)
	}
}

func TestRefreshHonoursRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		wait         time.Duration
	}{
		{"seconds", "300", 300 * time.Second},
		{"http date", "", 7 * time.Minute},
		{"capped", "86400", maxRetryAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.login(t, me)
			header := tc.header
			if header == "" {
				header = e.clock.Now().Add(time.Hour + tc.wait).UTC().Format(http.TimeFormat)
			}
			e.mock.setRefuse("", refusal{status: http.StatusTooManyRequests, retryAfter: header, body: `{"error":{"type":"rate_limit_error","message":"slow down"}}`})
			e.clock.Advance(time.Hour)
			if _, err := e.m.Token(context.Background(), me); !errors.Is(err, ErrNoToken) {
				t.Fatalf("Token: %v", err)
			}
			var nt *NoTokenError
			_, err := e.m.Token(context.Background(), me)
			if !errors.As(err, &nt) || !nt.RetryAt.Equal(e.clock.Now().Add(tc.wait)) {
				t.Fatalf("err %v: want RetryAt in %s", err, tc.wait)
			}
			if !strings.Contains(err.Error(), "rate_limit_error: slow down") || !strings.Contains(err.Error(), "/oauth/") {
				t.Fatalf("error %q should give the cause and the login page", err)
			}
			e.clock.Advance(tc.wait - time.Second)
			_, _ = e.m.Token(context.Background(), me)
			if _, n := e.mock.counts(); n != 1 {
				t.Fatalf("%d calls inside Retry-After, want 1", n)
			}
			e.clock.Advance(time.Second)
			_, _ = e.m.Token(context.Background(), me)
			if _, n := e.mock.counts(); n != 2 {
				t.Fatalf("%d calls after Retry-After, want 2", n)
			}
		})
	}
}

func TestFailedRefreshStillUsesAnUnexpiredToken(t *testing.T) {
	e := newEnv(t)
	first := e.login(t, me)
	e.mock.setRefuse("", refusal{status: http.StatusServiceUnavailable, body: "{}"})
	e.clock.Advance(time.Hour - time.Minute)
	for range 3 {
		tok, err := e.m.Token(context.Background(), me)
		if err != nil || tok != first {
			t.Fatalf("Token: %v; want the still-valid token", err)
		}
	}
	if _, n := e.mock.counts(); n != 1 {
		t.Fatalf("%d refresh calls, want 1", n)
	}
	if s := e.m.statusOf(e.m.accounts[me]).State(); s != "refresh_failing" {
		t.Fatalf("state %q", s)
	}
	e.clock.Advance(time.Minute)
	if _, err := e.m.Token(context.Background(), me); !errors.Is(err, ErrNoToken) {
		t.Fatalf("once expired during backoff: %v", err)
	}
}

func TestRefusedRefreshTokenNeedsLogin(t *testing.T) {
	e := newEnv(t)
	e.login(t, me)
	e.mock.setRefuse("", refusal{status: http.StatusBadRequest, body: `{"error":"invalid_grant","error_description":"Refresh token revoked"}`})
	e.clock.Advance(time.Hour)
	_, err := e.m.Token(context.Background(), me)
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("Token: %v", err)
	}
	st := e.m.statusOf(e.m.accounts[me])
	if !st.NeedsLogin || st.State() != "needs_login" || !st.RetryAt.Equal(e.clock.Now().Add(maxBackoff)) {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(e.logs.String(), "the refresh token was refused: open /oauth/ to log in again") {
		t.Fatalf("the log should say how to log in again:\n%s", e.logs)
	}
	// Logging in again ends the backoff at once.
	e.mock.clearRefuse()
	e.login(t, me)
	if st := e.m.statusOf(e.m.accounts[me]); st.State() != "ok" {
		t.Fatalf("after a new login: %s", st.State())
	}
}

func TestAccountsAreIndependent(t *testing.T) {
	e := newEnv(t)
	e.login(t, "a@example.com")
	b := e.login(t, "b@example.com")
	recA, _ := loadRecord(context.Background(), e.st, "a@example.com")
	e.mock.setRefuse(recA.RefreshToken, refusal{status: http.StatusInternalServerError, body: "{}"})
	e.clock.Advance(time.Hour)

	if _, err := e.m.Token(context.Background(), "a@example.com"); !errors.Is(err, ErrNoToken) {
		t.Fatalf("a: %v, want no usable token", err)
	}
	tb, err := e.m.Token(context.Background(), "b@example.com")
	if err != nil || tb == b {
		t.Fatalf("b: %v; want a refreshed token despite a's failure", err)
	}
	if _, err := e.m.Token(context.Background(), "B@Example.com"); err != nil {
		t.Fatalf("accounts compare case-insensitively: %v", err)
	}
}

func TestUnknownAccountHasNoToken(t *testing.T) {
	e := newEnv(t)
	_, err := e.m.Token(context.Background(), "nobody@example.com")
	var nt *NoTokenError
	if !errors.As(err, &nt) || !errors.Is(err, errNotLoggedIn) || nt.LoginPage != "/oauth/" {
		t.Fatalf("err %v", err)
	}
	if _, err := e.m.Token(context.Background(), " "); !errors.Is(err, ErrNoToken) {
		t.Fatalf("empty account: %v", err)
	}
	if _, n := e.mock.counts(); n != 0 {
		t.Fatal("no token endpoint call is needed to know")
	}
}

// countingStorage counts what is asked of a storage.
type countingStorage struct {
	certmagic.Storage
	mu    sync.Mutex
	loads int
	locks int
}

func (c *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	c.loads++
	c.mu.Unlock()
	return c.Storage.Load(ctx, key)
}

func (c *countingStorage) Lock(ctx context.Context, name string) error {
	c.mu.Lock()
	c.locks++
	c.mu.Unlock()
	return c.Storage.Lock(ctx, name)
}

func (c *countingStorage) count() (loads, locks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loads, c.locks
}

func TestNotLoggedInAccountRereadsStorageSparingly(t *testing.T) {
	mk := newMock(t)
	st := &countingStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}}
	e := newEnvWith(t, mk, st, newClock())
	for range 20 {
		_, _ = e.m.Token(context.Background(), me)
	}
	if loads, _ := st.count(); loads != 1 {
		t.Fatalf("%d storage reads for 20 requests, want 1", loads)
	}
	e.clock.Advance(recheckEvery)
	_, _ = e.m.Token(context.Background(), me)
	if loads, _ := st.count(); loads != 2 {
		t.Fatalf("%d storage reads, want a re-read after %s", loads, recheckEvery)
	}
}

func TestNothingIsReadOrStartedBeforeFirstUse(t *testing.T) {
	mk := newMock(t)
	st := &countingStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}}
	m := NewManager(mk.config(), st, nil)
	m.Update(mk.config(), st, nil)
	m.SetAccounts([]string{me})
	_ = m.Handler("/oauth")
	if loads, locks := st.count(); loads+locks != 0 || m.bgStarted.Load() {
		t.Fatalf("loads %d locks %d refresher started %v: want nothing before first use", loads, locks, m.bgStarted.Load())
	}
	m.Close()
	_, _ = m.Token(context.Background(), me)
	if m.bgStarted.Load() {
		t.Fatal("the refresher must not start after Close")
	}
}

func TestBackgroundRefresherRefreshesAheadOfRequests(t *testing.T) {
	e := newEnv(t)
	ticks := make(chan time.Time)
	e.m.after = func(d time.Duration) <-chan time.Time {
		if d != refreshTick {
			t.Errorf("refresher waits %s, want %s", d, refreshTick)
		}
		return ticks
	}
	e.m.SetAccounts([]string{me})
	e.mock.mu.Lock()
	e.mock.entered = make(chan struct{}, 1)
	e.mock.mu.Unlock()
	first := e.login(t, me)
	if !e.m.bgStarted.Load() {
		t.Fatal("the refresher should start on first use")
	}

	e.clock.Advance(time.Hour - DefaultRefreshBefore - refreshTick - time.Second)
	ticks <- e.clock.Now() // not due yet
	e.clock.Advance(time.Second)
	ticks <- e.clock.Now() // due
	<-e.mock.entered
	ticks <- e.clock.Now() // returns once the previous pass has finished
	if _, n := e.mock.counts(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	tok, err := e.m.Token(context.Background(), me)
	if err != nil || tok == first {
		t.Fatalf("after the background refresh: %v, new token %v", err, tok != first)
	}
	if _, n := e.mock.counts(); n != 1 {
		t.Fatal("a request after a background refresh must not refresh again")
	}
	e.m.Close()
}

func TestBackoffDelay(t *testing.T) {
	for _, tc := range []struct {
		n          int
		retryAfter time.Duration
		permanent  bool
		want       time.Duration
	}{
		{1, 0, false, 30 * time.Second},
		{2, 0, false, time.Minute},
		{5, 0, false, 8 * time.Minute},
		{6, 0, false, maxBackoff},
		{60, 0, false, maxBackoff},
		{1, 0, true, maxBackoff},
		{1, 2 * time.Minute, false, 2 * time.Minute},
		{1, 5 * time.Second, false, 30 * time.Second},
		{1, 48 * time.Hour, false, maxRetryAfter},
	} {
		if got := backoffDelay(tc.n, tc.retryAfter, tc.permanent); got != tc.want {
			t.Errorf("backoffDelay(%d, %s, %v) = %s, want %s", tc.n, tc.retryAfter, tc.permanent, got, tc.want)
		}
	}
}

func TestObserverSeesRefreshResults(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var got []string
	e.m.SetObserver(func(account string, err error) {
		mu.Lock()
		got = append(got, fmt.Sprintf("%s:%v", account, err == nil))
		mu.Unlock()
	})
	e.login(t, me)
	if _, err := e.m.Refresh(context.Background(), me, ""); err != nil {
		t.Fatal(err)
	}
	e.mock.setRefuse("", refusal{status: http.StatusInternalServerError, body: `{"error":"server_error"}`})
	e.clock.Advance(time.Hour + time.Second)
	if _, err := e.m.Token(context.Background(), me); err == nil {
		t.Fatal("refresh should fail")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0] != me+":true" || got[1] != me+":false" {
		t.Fatalf("observer saw %v", got)
	}
}
