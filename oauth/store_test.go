package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func TestStorageKeys(t *testing.T) {
	for _, tc := range []struct{ account, key string }{
		{"me@example.com", "claude_balancer/oauth/me@example.com.json"},
		{"first.last+tag@example.co.uk", "claude_balancer/oauth/first.last+tag@example.co.uk.json"},
		{"../../etc/passwd", "claude_balancer/oauth/sha256-"},
		{"a/b@example.com", "claude_balancer/oauth/sha256-"},
		{".hidden@example.com", "claude_balancer/oauth/sha256-"},
		{"ünï@example.com", "claude_balancer/oauth/sha256-"},
	} {
		if got := storageKey(tc.account); !strings.HasPrefix(got, tc.key) || strings.Count(got, "/") != 2 {
			t.Errorf("storageKey(%q) = %q, want %q…", tc.account, got, tc.key)
		}
	}
	if lockName("me@example.com") != "claude_balancer_oauth_me@example.com" {
		t.Errorf("lock name %q", lockName("me@example.com"))
	}
}

func TestStorageRoundTrip(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	for _, account := range []string{"me@example.com", "../odd/name"} {
		in := &record{Account: account, AccessToken: "at", RefreshToken: "rt", Scopes: []string{"user:inference"},
			ExpiresAt: time.Unix(1760000000, 0).UTC(), CreatedAt: time.Unix(1750000000, 0).UTC()}
		if err := storeRecord(context.Background(), st, in); err != nil {
			t.Fatal(err)
		}
		out, err := loadRecord(context.Background(), st, account)
		if err != nil || out.AccessToken != "at" || out.RefreshToken != "rt" || !out.ExpiresAt.Equal(in.ExpiresAt) ||
			!out.CreatedAt.Equal(in.CreatedAt) || len(out.Scopes) != 1 {
			t.Fatalf("%s: round trip gave %+v, %v", account, out, err)
		}
	}
	names, err := storedAccounts(context.Background(), st)
	if err != nil || len(names) != 2 {
		t.Fatalf("stored accounts %v, %v", names, err)
	}
	if rec, err := loadRecord(context.Background(), st, "missing@example.com"); rec != nil || err != nil {
		t.Fatalf("missing account: %v %v, want nil, nil", rec, err)
	}
	if err := st.Store(context.Background(), storageKey("x@example.com"), []byte(`{"account_email":"y@example.com","access_token":"a"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := loadRecord(context.Background(), st, "x@example.com"); err == nil {
		t.Fatal("a record naming another account must be refused")
	}
}

func TestTokensSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	mk := newMock(t)
	e := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, newClock())
	tok := e.login(t, "Me@Example.com")
	e.m.Close()

	info, err := os.Stat(filepath.Join(dir, "claude_balancer", "oauth", "me@example.com.json"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		t.Errorf("token file mode %v, want it private", info.Mode().Perm())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "claude_balancer", "oauth", "me@example.com.json"))
	var rec record
	if json.Unmarshal(b, &rec) != nil || rec.Account != "me@example.com" || rec.AccessToken != tok {
		t.Fatalf("stored %s", b)
	}

	restarted := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, e.clock)
	got, err := restarted.m.Token(context.Background(), "me@example.com")
	if err != nil || got != tok {
		t.Fatalf("after restart: %v, same token %v", err, got == tok)
	}
	if _, n := mk.counts(); n != 0 {
		t.Fatal("a restart must not refresh a valid token")
	}
}

func TestUpdateKeepsTokens(t *testing.T) {
	e := newEnv(t)
	tok := e.login(t, me)
	cfg := e.mock.config()
	cfg.RefreshBefore = 2 * time.Hour
	// A reload brings a new storage value for the same place and a new
	// refresh window.
	e.m.Update(cfg, &certmagic.FileStorage{Path: e.st.(*certmagic.FileStorage).Path}, nil)
	got, err := e.m.Token(context.Background(), me)
	if err != nil || got == tok {
		t.Fatalf("after Update: %v; the new 2h window should make the 1h token refresh", err)
	}
}

func TestInstancesSharingStorageShareTokensAndRefreshOnce(t *testing.T) {
	dir := t.TempDir()
	mk := newMock(t)
	clock := newClock()
	a := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)
	b := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)

	tok := a.login(t, me)
	if got, err := b.m.Token(context.Background(), me); err != nil || got != tok {
		t.Fatalf("instance b: %v, same token %v", err, got == tok)
	}

	clock.Advance(time.Hour - time.Minute)
	var wg sync.WaitGroup
	var ta, tb string
	var ea, eb error
	wg.Go(func() { ta, ea = a.m.Token(context.Background(), me) })
	wg.Go(func() { tb, eb = b.m.Token(context.Background(), me) })
	wg.Wait()
	if ea != nil || eb != nil || ta != tb || ta == tok {
		t.Fatalf("a: %v, b: %v, same new token %v", ea, eb, ta == tb && ta != tok)
	}
	if _, n := mk.counts(); n != 1 {
		t.Fatalf("%d refresh calls across two instances, want 1", n)
	}
}

func TestRefreshAfterRejectionPicksUpAnotherInstancesRefresh(t *testing.T) {
	dir := t.TempDir()
	mk := newMock(t)
	clock := newClock()
	a := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)
	b := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)
	old := a.login(t, me)
	if _, err := b.m.Token(context.Background(), me); err != nil {
		t.Fatal(err)
	}
	fresh, err := a.m.Refresh(context.Background(), me, old)
	if err != nil {
		t.Fatal(err)
	}
	// b still holds the old token; the upstream refuses it; b finds a's.
	got, err := b.m.Refresh(context.Background(), me, old)
	if err != nil || got != fresh {
		t.Fatalf("b: %v, got a's token %v", err, got == fresh)
	}
	if _, n := mk.counts(); n != 1 {
		t.Fatalf("%d refresh calls, want 1", n)
	}
}

func TestLogoutOnOneInstanceReachesTheOthers(t *testing.T) {
	dir := t.TempDir()
	mk := newMock(t)
	clock := newClock()
	a := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)
	b := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)
	a.login(t, me)
	if _, err := b.m.Token(context.Background(), me); err != nil {
		t.Fatal(err)
	}
	if err := a.m.logout(context.Background(), "ME@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.m.Token(context.Background(), me); !errors.Is(err, ErrNoToken) {
		t.Fatalf("a after logout: %v", err)
	}
	clock.Advance(time.Hour - time.Minute)
	if _, err := b.m.Token(context.Background(), me); !errors.Is(err, ErrNoToken) {
		t.Fatalf("b, once its copy needs a refresh: %v; want the logout seen in storage", err)
	}
	if _, n := mk.counts(); n != 0 {
		t.Fatal("no refresh for a logged-out account")
	}
}

// brokenStorage fails every read.
type brokenStorage struct{ certmagic.Storage }

func (brokenStorage) Load(context.Context, string) ([]byte, error) {
	return nil, errors.New("storage unreachable")
}

func TestStorageFailureMeansNoToken(t *testing.T) {
	mk := newMock(t)
	e := newEnvWith(t, mk, brokenStorage{&certmagic.FileStorage{Path: t.TempDir()}}, newClock())
	e.m.SetAccounts([]string{me})
	_, err := e.m.Token(context.Background(), me)
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "storage unreachable") {
		t.Fatalf("Token: %v", err)
	}
	st := e.m.Status()
	if len(st) != 1 || st[0].LoggedIn || !strings.Contains(st[0].LastError, "storage unreachable") {
		t.Fatalf("status %+v", st)
	}
}

func TestRefreshFindsALoginMadeOnAnotherInstance(t *testing.T) {
	dir := t.TempDir()
	mk := newMock(t)
	clock := newClock()
	a := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)
	b := newEnvWith(t, mk, &certmagic.FileStorage{Path: dir}, clock)
	if _, err := b.m.Token(context.Background(), me); !errors.Is(err, ErrNoToken) {
		t.Fatalf("b before any login: %v", err)
	}
	tok := a.login(t, me)
	clock.Advance(recheckEvery)
	got, err := b.m.Refresh(context.Background(), me, "sk-ant-oat01-some-rejected-token")
	if err != nil || got != tok {
		t.Fatalf("b: %v, got a's token %v", err, got == tok)
	}
}
