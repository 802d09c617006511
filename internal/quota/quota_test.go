package quota

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"
)

var now = time.Unix(1790800000, 0)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestParseRealShapes(t *testing.T) {
	reset5h, reset7d := "1790814600", "1791300000"
	for _, tc := range []struct {
		name string
		h    http.Header
		want Reading
		ok   bool
	}{
		{"an API key answer", hdr("Anthropic-Ratelimit-Requests-Remaining", "99"), Reading{}, false},
		{"allowed, both account windows", hdr(
			"anthropic-ratelimit-unified-status", "allowed",
			"anthropic-ratelimit-unified-reset", reset5h,
			"anthropic-ratelimit-unified-representative-claim", "five_hour",
			"anthropic-ratelimit-unified-5h-utilization", "0.42",
			"anthropic-ratelimit-unified-5h-reset", reset5h,
			"anthropic-ratelimit-unified-5h-status", "allowed",
			"anthropic-ratelimit-unified-7d-utilization", "0.1",
			"anthropic-ratelimit-unified-7d-reset", reset7d,
			"anthropic-ratelimit-unified-7d-status", "allowed",
			"anthropic-ratelimit-unified-overage-status", "rejected",
			"anthropic-ratelimit-unified-overage-disabled-reason", "org_level_disabled",
			"anthropic-ratelimit-unified-fallback-percentage", "0.5",
			"anthropic-ratelimit-unified-fallback", "available",
		), Reading{Status: Allowed, Reset: time.Unix(1790814600, 0), Representative: "5h", Overage: "rejected", OverageDisabled: "org_level_disabled",
			Fallback: "available", FallbackPercentage: 0.5, HasFallbackPercentage: true,
			Windows: []Window{
				{Name: "5h", Utilization: 0.42, HasUtil: true, Status: Allowed, Reset: time.Unix(1790814600, 0)},
				{Name: "7d", Utilization: 0.1, HasUtil: true, Status: Allowed, Reset: time.Unix(1791300000, 0)},
			}}, true},
		{"a model window on an opus answer", hdr(
			"anthropic-ratelimit-unified-status", "allowed_warning",
			"anthropic-ratelimit-unified-representative-claim", "seven_day_oi",
			"anthropic-ratelimit-unified-7d_oi-utilization", "0.93",
			"anthropic-ratelimit-unified-7d_oi-reset", reset7d,
			"anthropic-ratelimit-unified-7d_oi-status", "allowed_warning",
		), Reading{Status: AllowedWarning, Representative: "7d_oi", Windows: []Window{
			{Name: "7d_oi", Utilization: 0.93, HasUtil: true, Status: AllowedWarning, Reset: time.Unix(1791300000, 0)},
		}}, true},
		{"over one, seven-day claim", hdr(
			"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-representative-claim", "seven_day",
			"anthropic-ratelimit-unified-7d-utilization", "1.07",
			"anthropic-ratelimit-unified-7d-status", "rejected",
		), Reading{Status: Rejected, Representative: "7d", Windows: []Window{{Name: "7d", Utilization: 1.07, HasUtil: true, Status: Rejected}}}, true},
		{"odd values spare their neighbours", hdr(
			"anthropic-ratelimit-unified-status", "maybe",
			"anthropic-ratelimit-unified-5h-utilization", "lots",
			"anthropic-ratelimit-unified-5h-status", "allowed",
			"anthropic-ratelimit-unified-5h-reset", "tomorrow",
			"anthropic-ratelimit-unified-7d-utilization", "-0.5",
			"anthropic-ratelimit-unified-7d-reset", reset7d,
			"anthropic-ratelimit-unified-7d_sonnet-utilization", "0.5",
			"anthropic-ratelimit-unified-weird window-utilization", "0.5",
			"anthropic-ratelimit-unified-", "x",
			"anthropic-ratelimit-unified-nohyphen", "x",
		), Reading{Windows: []Window{
			{Name: "5h", Status: Allowed},
			{Name: "7d_sonnet", Utilization: 0.5, HasUtil: true},
		}}, true},
		{"a window whose reset has passed is dropped", hdr(
			"anthropic-ratelimit-unified-5h-utilization", "0.99",
			"anthropic-ratelimit-unified-5h-reset", "1790799999",
			"anthropic-ratelimit-unified-7d-utilization", "0.3",
		), Reading{Windows: []Window{{Name: "7d", Utilization: 0.3, HasUtil: true}}}, true},
		{"reset in RFC 3339", hdr(
			"anthropic-ratelimit-unified-5h-utilization", "0.2",
			"anthropic-ratelimit-unified-5h-reset", "2027-01-01T12:00:00Z",
		), Reading{Windows: []Window{{Name: "5h", Utilization: 0.2, HasUtil: true, Reset: time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Parse(tc.h, now)
			if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v %v\nwant %+v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func reading(kv ...string) Reading {
	r, _ := Parse(hdr(kv...), now)
	return r
}

func TestModelWindowRejectionCoolsOnlyItsModels(t *testing.T) {
	var a Account
	a.Observe(reading("anthropic-ratelimit-unified-7d_oi-utilization", "0.95"), "claude-opus-5", now, 0.9)
	a.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.2"), "claude-sonnet-5", now, 0.9)
	rej := a.Reject(reading(
		"anthropic-ratelimit-unified-status", "rejected",
		"anthropic-ratelimit-unified-7d_oi-status", "rejected",
		"anthropic-ratelimit-unified-7d_oi-reset", "1791300000",
		"anthropic-ratelimit-unified-5h-status", "allowed",
	), true, "claude-opus-5", now.Add(time.Minute), now)
	if rej.AccountWide || rej.Window != "7d_oi" || !rej.Until.Equal(time.Unix(1791300000, 0)) {
		t.Fatalf("rejection %+v", rej)
	}
	if ok, until, _ := a.Available("claude-opus-5", now); ok || !until.Equal(rej.Until) {
		t.Fatalf("opus: available %v until %v", ok, until)
	}
	if ok, _, _ := a.Available("claude-sonnet-5", now); !ok {
		t.Fatal("sonnet must keep being served")
	}
	// Beyond a day: a rejected 7-day window needs up to eight days.
	if rej.Until.Sub(now) < 5*24*time.Hour {
		t.Fatalf("cooldown of %v", rej.Until.Sub(now))
	}
}

func TestAccountWindowOrNoWindowCoolsEveryModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Reading
		has  bool
		want time.Time
	}{
		{"5h rejected", reading("anthropic-ratelimit-unified-5h-status", "rejected", "anthropic-ratelimit-unified-5h-reset", "1790810000"), true, time.Unix(1790810000, 0)},
		{"7d and a model window rejected", reading("anthropic-ratelimit-unified-7d-status", "rejected", "anthropic-ratelimit-unified-7d-reset", "1791000000",
			"anthropic-ratelimit-unified-7d_oi-status", "rejected", "anthropic-ratelimit-unified-7d_oi-reset", "1791300000"), true, time.Unix(1791000000, 0)},
		{"no window named", Reading{}, false, now.Add(10 * time.Minute)},
		{"summary reset only", reading("anthropic-ratelimit-unified-status", "rejected", "anthropic-ratelimit-unified-reset", "1790820000"), true, time.Unix(1790820000, 0)},
		{"retry-after later than the reset", reading("anthropic-ratelimit-unified-5h-status", "rejected", "anthropic-ratelimit-unified-5h-reset", "1790800100"), true, now.Add(10 * time.Minute)},
		{"absurd reset", reading("anthropic-ratelimit-unified-7d-status", "rejected", "anthropic-ratelimit-unified-7d-reset", "1899999999"), true, now.Add(MaxCooldown)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a Account
			rej := a.Reject(tc.r, tc.has, "any-model", now.Add(10*time.Minute), now)
			if !rej.AccountWide || !rej.Until.Equal(tc.want) {
				t.Fatalf("rejection %+v, want account-wide until %v", rej, tc.want)
			}
			for _, m := range []string{"any-model", "other-model", ""} {
				if ok, until, quota := a.Available(m, now); ok || !until.Equal(tc.want) || !quota {
					t.Fatalf("%s: available %v until %v", m, ok, until)
				}
			}
			if ok, _, _ := a.Available("any-model", tc.want); !ok {
				t.Fatal("still cooling down after the cooldown")
			}
		})
	}
}

func TestRejectWithoutATimeCoolsNothing(t *testing.T) {
	var a Account
	if rej := a.Reject(Reading{}, false, "m", time.Time{}, now); !rej.Until.IsZero() {
		t.Fatalf("rejection %+v", rej)
	}
	if ok, _, _ := a.Available("m", now); !ok {
		t.Fatal("an answer with no time to come back must not cool the account")
	}
}

func TestFullestAppliesModelWindowsToTheirModels(t *testing.T) {
	var a Account
	a.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.3", "anthropic-ratelimit-unified-7d-utilization", "0.5"), "sonnet", now, 0.9)
	a.Observe(reading("anthropic-ratelimit-unified-7d_oi-utilization", "0.97"), "opus", now, 0.9)
	if u, w, ok := a.Fullest("opus", now); !ok || u != 0.97 || w != "7d_oi" {
		t.Fatalf("opus: %v %s %v", u, w, ok)
	}
	if u, w, ok := a.Fullest("sonnet", now); !ok || u != 0.5 || w != "7d" {
		t.Fatalf("sonnet: %v %s %v", u, w, ok)
	}
	var empty Account
	if _, _, ok := empty.Fullest("x", now); ok {
		t.Fatal("no reading must be unknown")
	}
}

func TestObserveReportsTransitions(t *testing.T) {
	var a Account
	if ev := a.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.5", "anthropic-ratelimit-unified-5h-reset", "1790810000"), "m", now, 0.9); len(ev) != 0 {
		t.Fatalf("events %v", ev)
	}
	ev := a.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.91", "anthropic-ratelimit-unified-5h-reset", "1790810000",
		"anthropic-ratelimit-unified-5h-status", "allowed_warning"), "m", now, 0.9)
	if len(ev) != 1 || ev[0].Kind != EventNearLimit || ev[0].Window != "5h" {
		t.Fatalf("events %v", ev)
	}
	if ev := a.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.95", "anthropic-ratelimit-unified-5h-reset", "1790810000"), "m", now, 0.9); len(ev) != 0 {
		t.Fatalf("staying near must not repeat the event: %v", ev)
	}
	later := time.Unix(1790810001, 0)
	ev = a.Observe(Reading{}, "m", later, 0.9)
	if len(ev) != 1 || ev[0].Kind != EventReset || ev[0].Window != "5h" {
		t.Fatalf("events after the reset %v", ev)
	}
	if _, _, ok := a.Fullest("m", later); ok {
		t.Fatal("a window whose reset passed is dropped")
	}
}

func TestMergeTakesTheLaterCooldownAndTheNewerReading(t *testing.T) {
	var a, b Account
	a.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.2"), "m", now, 0.9)
	b.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.6"), "m", now.Add(time.Second), 0.9)
	b.Reject(Reading{}, false, "m", now.Add(600*time.Second), now.Add(time.Second))
	a.Merge(b.Snapshot(now.Add(time.Second)), now.Add(2*time.Second))
	if ok, until, _ := a.Available("m", now.Add(2*time.Second)); ok || !until.Equal(now.Add(600*time.Second)) {
		t.Fatalf("available %v until %v", ok, until)
	}
	if u, _, _ := a.Fullest("m", now.Add(2*time.Second)); u != 0.6 {
		t.Fatalf("utilization %v, want the newer 0.6", u)
	}
	// An older reading does not replace a newer one.
	var old Account
	old.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.1"), "m", now.Add(-time.Hour), 0.9)
	a.Merge(old.Snapshot(now), now.Add(2*time.Second))
	if u, _, _ := a.Fullest("m", now.Add(2*time.Second)); u != 0.6 {
		t.Fatalf("utilization %v after an older reading", u)
	}
}

// The account keeps what the latest answer said of it as a whole, shows it
// while its binding window lasts, and shares it as it shares the newer
// reading.
func TestTheAccountSummaryIsKeptShownAndShared(t *testing.T) {
	h := hdr(
		"anthropic-ratelimit-unified-status", "allowed",
		"anthropic-ratelimit-unified-reset", strconv.FormatInt(now.Add(time.Hour).Unix(), 10),
		"anthropic-ratelimit-unified-overage-status", "rejected",
		"anthropic-ratelimit-unified-overage-disabled-reason", "org_spend_cap_reached",
		"anthropic-ratelimit-unified-fallback-percentage", "0.25",
		"anthropic-ratelimit-unified-5h-utilization", "0.3",
	)
	r, ok := Parse(h, now)
	if !ok {
		t.Fatal("no reading")
	}
	var a Account
	a.Observe(r, "m", now, 0.9)
	s := a.Snapshot(now)
	want := Summary{Reset: now.Add(time.Hour).Truncate(time.Second), Overage: "rejected", OverageDisabledReason: "org_spend_cap_reached"}
	if got := s.Summary; !got.Reset.Equal(want.Reset) || got.Overage != want.Overage || got.OverageDisabledReason != want.OverageDisabledReason ||
		got.FallbackPercentage == nil || *got.FallbackPercentage != 0.25 {
		t.Fatalf("summary %+v", got)
	}
	// Past the reset, the summary no longer claims it.
	if got := a.Snapshot(now.Add(2 * time.Hour)).Summary; !got.Reset.IsZero() || got.Overage != "rejected" {
		t.Fatalf("summary after the reset %+v", got)
	}
	// Another instance learns it with the newer reading, not with an older one.
	var b Account
	b.Merge(s, now)
	if got := b.Snapshot(now).Summary; got.Overage != "rejected" || got.FallbackPercentage == nil || *got.FallbackPercentage != 0.25 {
		t.Fatalf("merged summary %+v", got)
	}
	var older Account
	older.Observe(Reading{Overage: "allowed"}, "m", now.Add(-time.Minute), 0.9)
	b.Merge(older.Snapshot(now), now)
	if got := b.Snapshot(now).Summary; got.Overage != "rejected" {
		t.Fatalf("an older reading replaced the summary: %+v", got)
	}
	// An instance that does not keep the summary shares snapshots without
	// one: its newer reading leaves the summary as it was.
	raw, err := json.Marshal(older.Snapshot(now))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "summary")
	raw, _ = json.Marshal(doc)
	var plain Snapshot
	if err := json.Unmarshal(raw, &plain); err != nil {
		t.Fatal(err)
	}
	plain.Observed = now.Add(time.Minute)
	b.Merge(plain, now.Add(time.Minute))
	if got := b.Snapshot(now.Add(time.Minute)).Summary; got.Overage != "rejected" {
		t.Fatalf("a snapshot without a summary cleared it: %+v", got)
	}
	// A later answer that says nothing of overage clears it.
	a.Observe(reading("anthropic-ratelimit-unified-5h-utilization", "0.4"), "m", now.Add(time.Second), 0.9)
	if got := a.Snapshot(now.Add(time.Second)).Summary; got.Overage != "" || got.FallbackPercentage != nil {
		t.Fatalf("summary after an answer without it %+v", got)
	}
}

func BenchmarkParse(b *testing.B) {
	h := hdr(
		"anthropic-ratelimit-unified-status", "allowed",
		"anthropic-ratelimit-unified-reset", "1790814600",
		"anthropic-ratelimit-unified-representative-claim", "five_hour",
		"anthropic-ratelimit-unified-5h-utilization", "0.42",
		"anthropic-ratelimit-unified-5h-reset", "1790814600",
		"anthropic-ratelimit-unified-5h-status", "allowed",
		"anthropic-ratelimit-unified-7d-utilization", "0.1",
		"anthropic-ratelimit-unified-7d-reset", "1791300000",
		"anthropic-ratelimit-unified-7d-status", "allowed",
		"Request-Id", "req_1", "Content-Type", "text/event-stream",
	)
	b.ReportAllocs()
	for b.Loop() {
		Parse(h, now)
	}
}
