package team

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

var t0 = time.Unix(1_800_000_000, 0)

func compile(t *testing.T, name string, cfg ...ClientConfig) *Team {
	t.Helper()
	tm, release, err := Compile(cfg, name, func(s string) string { return s })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return tm
}

func TestKeysNameTheirClient(t *testing.T) {
	tm := compile(t, t.Name(), ClientConfig{Name: "alice", Keys: []string{"a1", "a2"}}, ClientConfig{Name: "bob", Keys: []string{"b1"}})
	for key, want := range map[string]string{"a1": "alice", "a2": "alice", "b1": "bob", "nope": "", "a1 ": ""} {
		got := ""
		if c := tm.Match(key); c != nil {
			got = c.Name
		}
		if got != want {
			t.Errorf("%q: %q, want %q", key, got, want)
		}
	}
}

func TestCompileRefusesBadClients(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  []ClientConfig
	}{
		{"no key", []ClientConfig{{Name: "a"}}},
		{"empty key", []ClientConfig{{Name: "a", Keys: []string{""}}}},
		{"twice", []ClientConfig{{Name: "a", Keys: []string{"k"}}, {Name: "a", Keys: []string{"j"}}}},
		{"one key for two clients", []ClientConfig{{Name: "a", Keys: []string{"k"}}, {Name: "b", Keys: []string{"j", "k"}}}},
		{"reserved", []ClientConfig{{Name: "anonymous", Keys: []string{"k"}}}},
		{"spaces", []ClientConfig{{Name: "a b", Keys: []string{"k"}}}},
		{"zero limit", []ClientConfig{{Name: "a", Keys: []string{"k"}, Rate: &Limit{Count: 0, Window: caddy.Duration(time.Minute)}}}},
		{"negative price", []ClientConfig{{Name: "a", Keys: []string{"k"}, Pricing: []Price{{Model: "*", Input: -1}}}}},
	} {
		if _, _, err := Compile(tc.cfg, t.Name(), func(s string) string { return s }); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// A key a client lists twice is one key; keys that expand to the same one
// for two clients are refused.
func TestCompileTellsWhoseKeyItIs(t *testing.T) {
	tm, release, err := Compile([]ClientConfig{{Name: "a", Keys: []string{"k", "k"}}, {Name: "b", Keys: []string{"j"}}}, t.Name(), func(s string) string { return s })
	if err != nil {
		t.Fatalf("a key listed twice by one client: %v", err)
	}
	defer release()
	if c := tm.Owner(sha256.Sum256([]byte("j"))); c == nil || c.Name != "b" {
		t.Fatalf("owner of j: %v", c)
	}
	if c := tm.Owner(sha256.Sum256([]byte("x"))); c != nil {
		t.Fatalf("owner of x: %v", c.Name)
	}
	expand := func(s string) string { return strings.TrimPrefix(s, "{env.") }
	_, _, err = Compile([]ClientConfig{{Name: "a", Keys: []string{"same"}}, {Name: "b", Keys: []string{"{env.same"}}}, t.Name()+"2", expand)
	if err == nil || !strings.Contains(err.Error(), `client "b": a key is also client "a"'s`) {
		t.Fatalf("keys that expand alike: %v", err)
	}
}

func TestRateLimitSlidesAndSaysWhenToComeBack(t *testing.T) {
	tm := compile(t, t.Name(), ClientConfig{Name: "a", Keys: []string{"k"}, Rate: &Limit{Count: 3, Window: caddy.Duration(time.Minute)}})
	c := tm.Clients()[0]
	for i := range 3 {
		if v := c.Admit(t0.Add(time.Duration(i) * 10 * time.Second)); !v.OK {
			t.Fatalf("request %d refused", i)
		}
	}
	v := c.Admit(t0.Add(30 * time.Second))
	if v.OK || v.Limit != "rate" {
		t.Fatalf("fourth request: %+v", v)
	}
	// The first request leaves the window when the minute has slid past the
	// start of its one-second slot: no later, and a moment earlier is refused.
	slot := t0.Truncate(time.Second)
	if !v.RetryAt.Equal(slot.Add(time.Minute)) {
		t.Fatalf("retry at %v, want %v", v.RetryAt, slot.Add(time.Minute))
	}
	if v := c.Admit(v.RetryAt.Add(-time.Millisecond)); v.OK {
		t.Fatal("admitted before the time it was told to come back")
	}
	if v := c.Admit(v.RetryAt); !v.OK {
		t.Fatal("refused at the time it was told to come back")
	}
}

func TestTokensLimitCountsInputCacheWritesAndOutput(t *testing.T) {
	tm := compile(t, t.Name(), ClientConfig{Name: "a", Keys: []string{"k"}, Tokens: &Limit{Count: 1000, Window: caddy.Duration(time.Hour)}})
	c := tm.Clients()[0]
	if !c.Admit(t0).OK {
		t.Fatal("refused at first")
	}
	// Cache reads are reported but not counted.
	c.Charge(t0, "m", "m", "p", Usage{Input: 300, CacheWrite: 200, Output: 400, CacheRead: 100000})
	if !c.Admit(t0.Add(time.Minute)).OK {
		t.Fatal("900 of 1000 refused")
	}
	c.Charge(t0.Add(time.Minute), "m", "m", "p", Usage{Output: 100})
	v := c.Admit(t0.Add(2 * time.Minute))
	if v.OK || v.Limit != "tokens" {
		t.Fatalf("at 1000 of 1000: %+v", v)
	}
	// Enough frees up when the first answer's 900 leave the window.
	if d := v.RetryAt.Sub(t0); d < time.Hour || d > time.Hour+2*time.Minute {
		t.Fatalf("retry after %v", d)
	}
	st := c.Status(t0.Add(2 * time.Minute))
	if st.WindowUsed["tokens"] != 1000 || st.CacheRead != 100000 || st.Requests != 2 || st.Limits["tokens"] != "1000/1h" {
		t.Fatalf("status %+v", st)
	}
}

func TestConcurrentRequestsNeverOvershootTheRate(t *testing.T) {
	tm := compile(t, t.Name(), ClientConfig{Name: "a", Keys: []string{"k"}, Rate: &Limit{Count: 10, Window: caddy.Duration(time.Minute)}})
	c := tm.Clients()[0]
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.Admit(t0).OK {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 10 {
		t.Fatalf("%d admitted of 10", ok.Load())
	}
}

func TestPricingAppliesTheFirstMatchingPrice(t *testing.T) {
	tm := compile(t, t.Name(), ClientConfig{Name: "a", Keys: []string{"k"}, Pricing: []Price{
		{Model: "*opus*", Input: 15, Output: 75, CacheRead: 1.5, CacheWrite: 18.75},
		{Model: "*", Input: 3, Output: 15},
	}})
	c := tm.Clients()[0]
	cost, ok := c.Charge(t0, "claude-opus-5", "claude-opus-5", "p", Usage{Input: 1e6, Output: 1e6, CacheRead: 1e6, CacheWrite: 1e6})
	if !ok || fmt.Sprintf("%.2f", cost) != "110.25" {
		t.Fatalf("opus: %v %v", cost, ok)
	}
	if cost, _ := c.Charge(t0, "claude-haiku-5", "other", "p", Usage{Input: 1e6}); cost != 3 {
		t.Fatalf("haiku: %v", cost)
	}
}

func TestWindowsAreKeptAcrossReloads(t *testing.T) {
	cfg := ClientConfig{Name: "a", Keys: []string{"k"}, Rate: &Limit{Count: 2, Window: caddy.Duration(time.Minute)}}
	first, release, err := Compile([]ClientConfig{cfg}, t.Name(), func(s string) string { return s })
	if err != nil {
		t.Fatal(err)
	}
	first.Clients()[0].Admit(t0)
	first.Clients()[0].Admit(t0)
	// The new config takes its state before the old one lets go of it.
	second := compile(t, t.Name(), cfg)
	release()
	if second.Clients()[0].Admit(t0).OK {
		t.Fatal("the window was lost across the reload")
	}
}

func TestInstancesShareTheirWindows(t *testing.T) {
	cfg := ClientConfig{Name: "a", Keys: []string{"k"}, Rate: &Limit{Count: 5, Window: caddy.Duration(time.Minute)}}
	one := compile(t, t.Name()+"-one", cfg)
	// two stands for the same balancer on another instance: its state is
	// its own, its name the same.
	two := compile(t, t.Name()+"-two", cfg)
	two.balancer = one.balancer
	// other is another balancer whose client has the same name.
	other := compile(t, t.Name()+"-other", cfg)
	now := time.Now()
	for range 3 {
		one.Clients()[0].Admit(now)
	}
	other.Import([][]byte{one.Export(now)})
	if used := other.Clients()[0].Status(now).WindowUsed["rate"]; used != 0 {
		t.Fatalf("another balancer's client of the same name counted %d", used)
	}
	two.Import([][]byte{one.Export(now)})
	two.Clients()[0].Admit(now)
	two.Clients()[0].Admit(now)
	if v := two.Clients()[0].Admit(now); v.OK {
		t.Fatal("3 here and 2 there should fill a window of 5")
	}
}

// Loading a config never changes the windows the running one counts in:
// not when it is refused, and not when it changes a limit's span (it counts
// in a window of its own); a config with the same span goes on counting in
// the same window.
func TestACompiledConfigLeavesTheRunningWindowsAlone(t *testing.T) {
	minute := &Limit{Count: 2, Window: caddy.Duration(time.Minute)}
	hour := &Limit{Count: 2, Window: caddy.Duration(time.Hour)}
	running := compile(t, t.Name(), ClientConfig{Name: "alice", Keys: []string{"a"}, Rate: minute})
	alice := running.Clients()[0]
	for i := range 2 {
		if v := alice.Admit(t0); !v.OK {
			t.Fatalf("request %d refused", i)
		}
	}
	// Refused: bob has alice's key.
	if _, _, err := Compile([]ClientConfig{{Name: "alice", Keys: []string{"a"}, Rate: hour}, {Name: "bob", Keys: []string{"a"}}}, t.Name(), func(s string) string { return s }); err == nil {
		t.Fatal("a shared key was accepted")
	}
	// Accepted, with another span: it starts a window of its own.
	other := compile(t, t.Name(), ClientConfig{Name: "alice", Keys: []string{"a"}, Rate: hour})
	if v := other.Clients()[0].Admit(t0); !v.OK {
		t.Fatal("the new span's window is not empty")
	}
	// The running config still counts its two requests in its one-minute
	// window, and frees them a minute later.
	if v := alice.Admit(t0.Add(time.Second)); v.OK || v.Limit != "rate" {
		t.Fatalf("third request in the minute: %+v", v)
	}
	if st := alice.Status(t0.Add(time.Second)); st.WindowUsed["rate"] != 2 || st.Limits["rate"] != minute.String() {
		t.Fatalf("running status %+v", st)
	}
	if v := alice.Admit(t0.Add(61 * time.Second)); !v.OK {
		t.Fatalf("after the minute: %+v", v)
	}
	// A config with the running span counts in the same window.
	same := compile(t, t.Name(), ClientConfig{Name: "alice", Keys: []string{"a"}, Rate: minute})
	if st := same.Clients()[0].Status(t0.Add(62 * time.Second)); st.WindowUsed["rate"] != 1 {
		t.Fatalf("same span: used %d, want the running window's 1", st.WindowUsed["rate"])
	}
}
