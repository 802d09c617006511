package quota

import (
	"slices"
	"sync"
	"time"
)

// Bounds on what an account keeps.
const (
	// maxWindows bounds the windows an account keeps.
	maxWindows = 16
	// maxModels bounds the models a model window remembers.
	maxModels = 32
	// MaxCooldown bounds a cooldown: a rejected 7-day window may need
	// close to eight days, a later time is a misreading.
	MaxCooldown = 8 * 24 * time.Hour
)

// Account is what answers said about one account's quota: its latest window
// readings, and the cooldowns of windows it rejected. It lives in state
// shared across config reloads (and, through Caddy storage, across
// instances), so it holds timestamps only.
type Account struct {
	mu sync.Mutex
	// observed is when the latest reading was taken.
	observed       time.Time
	status         string
	representative string
	// summary is the rest of the latest reading's account-level headers.
	summary Summary
	// windows are few (two account-wide, a model window or two): a slice
	// is read faster than a map.
	windows []*windowState
	// until is the account-wide cooldown's end, since when it began, and
	// why says what caused it.
	until, since time.Time
	why          string
	// cleared is when an operator last cleared the cooldowns: cooldowns
	// other instances learned before it are not taken back.
	cleared time.Time
	// changed counts changes worth sharing; shared is the count last
	// shared (see Changed).
	changed, shared uint64
	// transition marks a change other instances should learn at once.
	transition bool
}

type windowState struct {
	Window
	// models are the models whose answers carried a model window.
	models []string
	// until is the end of a model window's cooldown after it rejected, since
	// when it began.
	until, since time.Time
	// near is set once the window reached the near-limit share.
	near bool
}

// Event is a change of a window worth telling operators about.
type Event struct {
	// Kind is EventNearLimit, EventRejected or EventReset.
	Kind        string
	Window      string
	Utilization float64
	Until       time.Time
}

// Event kinds.
const (
	EventNearLimit = "quota_near_limit"
	EventRejected  = "quota_rejected"
	EventReset     = "quota_reset"
)

// window returns the state of the window named name, or nil. The caller
// holds a.mu.
func (a *Account) window(name string) *windowState {
	for _, w := range a.windows {
		if w.Name == name {
			return w
		}
	}
	return nil
}

// windowOrNew returns the state of the window name, added (and reported so)
// when the account does not track it yet; nil when it already tracks
// maxWindows others.
func (a *Account) windowOrNew(name string) (ws *windowState, added bool) {
	if ws = a.window(name); ws != nil {
		return ws, false
	}
	if len(a.windows) >= maxWindows {
		return nil, false
	}
	ws = &windowState{}
	a.windows = append(a.windows, ws)
	return ws, true
}

// applies reports whether a window holds for a model.
func (w *windowState) applies(model string) bool {
	return AccountWide(w.Name) || slices.Contains(w.models, model)
}

// expireLocked drops windows whose reset has passed, reporting them.
func (a *Account) expireLocked(now time.Time, events []Event) []Event {
	kept := a.windows[:0]
	for _, w := range a.windows {
		if !w.Reset.IsZero() && !w.Reset.After(now) && !w.until.After(now) {
			if w.near || w.Status == Rejected || w.Status == AllowedWarning || !w.until.IsZero() {
				events = append(events, Event{Kind: EventReset, Window: w.Name})
			}
			a.changed++
			a.transition = true
			continue
		}
		kept = append(kept, w)
	}
	clear(a.windows[len(kept):])
	a.windows = kept
	if !a.until.IsZero() && !a.until.After(now) {
		a.until, a.why = time.Time{}, ""
		events = append(events, Event{Kind: EventReset, Window: "account"})
		a.changed++
		a.transition = true
	}
	return events
}

// Observe folds a reading an answer for model carried into the account. It
// returns the transitions: a window crossing near (from below), a window
// that reset.
func (a *Account) Observe(r Reading, model string, now time.Time, near float64) []Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	events := a.expireLocked(now, nil)
	a.observed = now
	a.status, a.representative = r.Status, r.Representative
	a.summary = r.summary()
	for _, w := range r.Windows {
		ws, added := a.windowOrNew(w.Name)
		if ws == nil {
			continue
		}
		a.transition = a.transition || added
		before := ws.Window
		if before.HasUtil && w.HasUtil && near > 0 && before.Utilization < near && w.Utilization >= near {
			events = append(events, Event{Kind: EventNearLimit, Window: w.Name, Utilization: w.Utilization})
			a.transition = true
		} else if !before.HasUtil && w.HasUtil && near > 0 && w.Utilization >= near {
			events = append(events, Event{Kind: EventNearLimit, Window: w.Name, Utilization: w.Utilization})
			a.transition = true
		}
		if before.Status != w.Status {
			a.transition = true
		}
		ws.Window = w
		if w.HasUtil && near > 0 && w.Utilization >= near {
			ws.near = true
		}
		if !AccountWide(w.Name) && model != "" && !slices.Contains(ws.models, model) && len(ws.models) < maxModels {
			ws.models = append(ws.models, model)
			a.transition = true
		}
	}
	a.changed++
	return events
}

// Rejection is the scope a 429 cooled down.
type Rejection struct {
	// Window is the rejected window ("" when the answer named none).
	Window string
	// AccountWide is set when every model of the account cools down.
	AccountWide bool
	// Until is the end of the cooldown.
	Until time.Time
}

// Reject records a quota answer (429) for model: the account cools down
// until the later of the rejected window's reset and retryAt, for every model
// when the rejected window is account-wide or the answer names none, for the
// window's models (model at least) when only a model window rejected. hasRead
// says whether the answer carried unified headers. It returns the scope, or a
// zero Until when the answer gives no time to come back.
func (a *Account) Reject(r Reading, hasRead bool, model string, retryAt, now time.Time) Rejection {
	a.mu.Lock()
	defer a.mu.Unlock()
	var rej Rejection
	rejected := r.Rejected()
	var modelWindows []string
	accountWide := len(rejected) == 0
	until := retryAt
	for _, name := range rejected {
		if AccountWide(name) {
			accountWide = true
		} else {
			modelWindows = append(modelWindows, name)
		}
	}
	for _, w := range r.Windows {
		if w.Status == Rejected && (accountWide == AccountWide(w.Name) || !accountWide) && w.Reset.After(until) {
			until = w.Reset
		}
	}
	if accountWide && len(rejected) == 0 && hasRead && r.Reset.After(until) {
		until = r.Reset
	}
	if until.After(now.Add(MaxCooldown)) {
		until = now.Add(MaxCooldown)
	}
	if !until.After(now) {
		return rej
	}
	rej.Until = until
	a.changed++
	a.transition = true
	if accountWide {
		rej.AccountWide = true
		if len(rejected) > 0 {
			rej.Window = rejected[0]
			for _, name := range rejected {
				if AccountWide(name) {
					rej.Window = name
					break
				}
			}
		} else if r.Representative != "" {
			rej.Window = r.Representative
		}
		if until.After(a.until) {
			a.until, a.since, a.why = until, now, rej.Window
		}
		return rej
	}
	rej.Window = modelWindows[0]
	for _, name := range modelWindows {
		ws := a.window(name)
		if ws == nil {
			if len(a.windows) >= maxWindows {
				continue
			}
			ws = &windowState{Window: Window{Name: name, Status: Rejected}}
			a.windows = append(a.windows, ws)
		}
		if model != "" && !slices.Contains(ws.models, model) && len(ws.models) < maxModels {
			ws.models = append(ws.models, model)
		}
		if until.After(ws.until) {
			ws.until, ws.since = until, now
		}
	}
	return rej
}

// Available reports whether the account may be asked for model now; when not,
// until says when it may again.
func (a *Account) Available(model string, now time.Time) (ok bool, until time.Time, quota bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.until.After(now) {
		return false, a.until, true
	}
	for _, w := range a.windows {
		if w.until.After(now) && w.applies(model) && (until.IsZero() || w.until.Before(until)) {
			until = w.until
		}
	}
	if !until.IsZero() {
		return false, until, true
	}
	return true, time.Time{}, false
}

// Fullest returns the highest utilization among the windows that apply to
// model, and that window's name; known is false without any reading.
func (a *Account) Fullest(model string, now time.Time) (util float64, window string, known bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.windows {
		if !w.HasUtil || !w.applies(model) || (!w.Reset.IsZero() && !w.Reset.After(now)) {
			continue
		}
		if !known || w.Utilization > util {
			util, window, known = w.Utilization, w.Name, true
		}
	}
	return util, window, known
}

// Summary is what the latest answer said of the account as a whole, beyond
// its status and binding window: when that window resets, and its
// pay-as-you-go overage and fallback.
type Summary struct {
	Reset                 time.Time `json:"reset"`
	Overage               string    `json:"overage_status,omitempty"`
	OverageDisabledReason string    `json:"overage_disabled_reason,omitempty"`
	Fallback              string    `json:"fallback,omitempty"`
	// FallbackPercentage is nil when the answer did not say.
	FallbackPercentage *float64 `json:"fallback_percentage,omitempty"`
}

func (r Reading) summary() Summary {
	s := Summary{Reset: r.Reset, Overage: r.Overage, OverageDisabledReason: r.OverageDisabled, Fallback: r.Fallback}
	if r.HasFallbackPercentage {
		f := r.FallbackPercentage
		s.FallbackPercentage = &f
	}
	return s
}

// Snapshot is an account's state, for status pages and for sharing.
type Snapshot struct {
	Observed       time.Time `json:"observed"`
	Status         string    `json:"status,omitempty"`
	Representative string    `json:"representative,omitempty"`
	// Summary is nil in a snapshot shared by an instance that does not
	// keep it: the reading it came with then leaves the summary as it was.
	Summary *Summary         `json:"summary,omitempty"`
	Until   time.Time        `json:"until"`
	Since   time.Time        `json:"since"`
	Why     string           `json:"why,omitempty"`
	Windows []WindowSnapshot `json:"windows"`
}

// WindowSnapshot is one window of a Snapshot.
type WindowSnapshot struct {
	Window
	HasUtilization bool      `json:"has_utilization,omitempty"`
	Models         []string  `json:"models,omitempty"`
	Until          time.Time `json:"until"`
	Since          time.Time `json:"since"`
}

// Snapshot returns the account's live state at now.
func (a *Account) Snapshot(now time.Time) Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	// (Its FallbackPercentage is shared: nothing writes through it.)
	sum := a.summary
	if !sum.Reset.IsZero() && !sum.Reset.After(now) {
		// The binding window reset since.
		sum.Reset = time.Time{}
	}
	s := Snapshot{Observed: a.observed, Status: a.status, Representative: a.representative, Summary: &sum}
	if a.until.After(now) {
		s.Until, s.Since, s.Why = a.until, a.since, a.why
	}
	for _, w := range a.windows {
		if !w.Reset.IsZero() && !w.Reset.After(now) && !w.until.After(now) {
			continue
		}
		ws := WindowSnapshot{Window: w.Window, HasUtilization: w.HasUtil, Models: slices.Clone(w.models)}
		if w.until.After(now) {
			ws.Until, ws.Since = w.until, w.since
		}
		s.Windows = append(s.Windows, ws)
	}
	slices.SortFunc(s.Windows, func(x, y WindowSnapshot) int {
		switch {
		case x.Name < y.Name:
			return -1
		case x.Name > y.Name:
			return 1
		}
		return 0
	})
	return s
}

// Known reports whether the account has any reading or cooldown.
func (a *Account) Known() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.observed.IsZero() || !a.until.IsZero() || len(a.windows) > 0
}

// Changed reports whether the account changed since it was last shared, and
// whether the change is a transition other instances should learn at once;
// it marks the account as shared.
func (a *Account) Changed() (changed, transition bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed, transition = a.changed != a.shared, a.transition
	a.shared, a.transition = a.changed, false
	return changed, transition
}

// Merge folds what another instance learned about the same account into
// this one: the later of each cooldown, the newer reading of each window,
// the union of a model window's models.
func (a *Account) Merge(s Snapshot, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.Until.After(a.until) && s.Until.After(now) && s.Since.After(a.cleared) {
		a.until, a.since, a.why = s.Until, s.Since, s.Why
		if a.until.After(now.Add(MaxCooldown)) {
			a.until = now.Add(MaxCooldown)
		}
	}
	newer := s.Observed.After(a.observed)
	if newer {
		a.observed, a.status, a.representative = s.Observed, s.Status, s.Representative
		if s.Summary != nil {
			a.summary = *s.Summary
		}
	}
	for _, w := range s.Windows {
		if !w.Reset.IsZero() && !w.Reset.After(now) && !w.Until.After(now) {
			continue
		}
		ws, _ := a.windowOrNew(w.Name)
		if ws == nil {
			continue
		}
		if newer || ws.Name == "" {
			ws.Window = w.Window
			ws.HasUtil = w.HasUtilization
		}
		if w.Until.After(ws.until) && w.Since.After(a.cleared) {
			ws.until, ws.since = w.Until, w.Since
			if ws.until.After(now.Add(MaxCooldown)) {
				ws.until = now.Add(MaxCooldown)
			}
		}
		for _, m := range w.Models {
			if !slices.Contains(ws.models, m) && len(ws.models) < maxModels {
				ws.models = append(ws.models, m)
			}
		}
	}
}

// ClearCooldowns ends every cooldown (an operator's reset) that began
// before now, here and as other instances report it; readings stay.
func (a *Account) ClearCooldowns(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cleared = now
	a.until, a.why = time.Time{}, ""
	for _, w := range a.windows {
		w.until = time.Time{}
	}
	a.changed++
	a.transition = true
}
