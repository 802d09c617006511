// Package quota reads what Claude subscription accounts say about their
// quota windows on every answer (the anthropic-ratelimit-unified-* headers)
// and keeps, per account, the latest reading and the cooldowns of rejected
// windows: the whole account for an account-wide window, the window's models
// for a model window.
package quota

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Window statuses as the upstream sends them.
const (
	Allowed        = "allowed"
	AllowedWarning = "allowed_warning"
	Rejected       = "rejected"
)

// AccountWide reports whether a window applies to every model of the
// account (5h, 7d). Any other window (7d_oi, 7d_sonnet, ...) applies to the
// models whose answers carry it.
func AccountWide(name string) bool { return name == "5h" || name == "7d" }

// Window is one quota window in an answer.
type Window struct {
	// Name is the window as the headers name it: 5h, 7d, 7d_oi, ...
	Name string `json:"name"`
	// Utilization is the fraction used; it may exceed 1. Valid when HasUtil.
	Utilization float64 `json:"utilization"`
	HasUtil     bool    `json:"-"`
	// Status is allowed, allowed_warning or rejected ("" when not sent).
	Status string `json:"status,omitempty"`
	// Reset is when the window resets (zero when not sent).
	Reset time.Time `json:"reset"`
}

// Reading is what one answer said about its account's quota.
type Reading struct {
	// Status is the account's summary status.
	Status string
	// Reset is when the binding window resets.
	Reset time.Time
	// Representative is the window that binds the account now (mapped from
	// representative-claim: five_hour is 5h, seven_day is 7d,
	// seven_day_<x> is 7d_<x>).
	Representative string
	// Overage is the overage status, OverageDisabled why it is off.
	Overage, OverageDisabled string
	// Fallback is the fallback header as sent ("available", ...), and
	// FallbackPercentage the share of requests it applies to (valid when
	// HasFallbackPercentage).
	Fallback              string
	FallbackPercentage    float64
	HasFallbackPercentage bool
	// Windows are the windows the answer named, sorted by name.
	Windows []Window
}

// Rejected returns the windows the reading says are rejected.
func (r Reading) Rejected() []string {
	var out []string
	for _, w := range r.Windows {
		if w.Status == Rejected {
			out = append(out, w.Name)
		}
	}
	return out
}

// headerPrefix is the canonical form of the unified headers' prefix.
const headerPrefix = "Anthropic-Ratelimit-Unified-"

// Parse reads the unified quota headers of an answer (keys in canonical form,
// as http.Header holds them), field by field: a
// value that does not parse is left out and never discards its neighbours;
// unknown windows are kept; a window whose reset has passed is dropped. ok is
// false when the answer carries none.
func Parse(h http.Header, now time.Time) (r Reading, ok bool) {
	var buf [8]Window
	windows := buf[:0]
	win := func(name string) *Window {
		for i := range windows {
			if windows[i].Name == name {
				return &windows[i]
			}
		}
		if len(windows) >= maxWindows {
			return nil
		}
		windows = append(windows, Window{Name: name})
		return &windows[len(windows)-1]
	}
	for k, vs := range h {
		if len(k) <= len(headerPrefix) || !strings.HasPrefix(k, headerPrefix) || len(vs) == 0 {
			continue
		}
		ok = true
		// Header keys arrive in canonical form: Status, 5h-Utilization.
		rest, v := k[len(headerPrefix):], strings.TrimSpace(vs[0])
		switch rest {
		case "Status":
			r.Status = status(v)
			continue
		case "Reset":
			r.Reset = epoch(v)
			continue
		case "Representative-Claim":
			r.Representative = claimWindow(v)
			continue
		case "Overage-Status":
			r.Overage = strings.ToLower(v)
			continue
		case "Overage-Disabled-Reason":
			r.OverageDisabled = v
			continue
		case "Fallback":
			r.Fallback = strings.ToLower(v)
			continue
		case "Fallback-Percentage":
			if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && !math.IsInf(f, 0) && !math.IsNaN(f) {
				r.FallbackPercentage, r.HasFallbackPercentage = f, true
			}
			continue
		}
		i := strings.LastIndexByte(rest, '-')
		if i <= 0 {
			continue
		}
		name, field := lower(rest[:i]), rest[i+1:]
		if !validWindow(name) {
			continue
		}
		switch field {
		case "Utilization":
			if u, err := strconv.ParseFloat(v, 64); err == nil && u >= 0 && !math.IsInf(u, 0) && !math.IsNaN(u) {
				if w := win(name); w != nil {
					w.Utilization, w.HasUtil = u, true
				}
			}
		case "Reset":
			if t := epoch(v); !t.IsZero() {
				if w := win(name); w != nil {
					w.Reset = t
				}
			}
		case "Status":
			if st := status(v); st != "" {
				if w := win(name); w != nil {
					w.Status = st
				}
			}
		}
	}
	for _, w := range windows {
		if !w.Reset.IsZero() && !w.Reset.After(now) {
			continue
		}
		if !w.HasUtil && w.Status == "" {
			continue
		}
		if r.Windows == nil {
			r.Windows = make([]Window, 0, len(windows))
		}
		r.Windows = append(r.Windows, w)
	}
	slices.SortFunc(r.Windows, func(a, b Window) int { return strings.Compare(a.Name, b.Name) })
	return r, ok
}

// lower returns s in lower case, allocating only when it has upper case.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// validWindow keeps window names to what the headers use: short, lower
// case letters, digits and underscores.
func validWindow(name string) bool {
	if len(name) == 0 || len(name) > 32 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func status(v string) string {
	switch v {
	case Allowed, AllowedWarning, Rejected:
		return v
	}
	for _, s := range [...]string{Allowed, AllowedWarning, Rejected} {
		if strings.EqualFold(v, s) {
			return s
		}
	}
	return ""
}

// epoch reads a reset time: epoch seconds, or RFC 3339.
func epoch(v string) time.Time {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 && n < 1<<40 {
		return time.Unix(n, 0)
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f < 1<<40 {
		return time.Unix(0, int64(f*1e9))
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t
	}
	return time.Time{}
}

// claimWindow maps a representative claim to its window's name.
func claimWindow(claim string) string {
	claim = strings.ToLower(claim)
	switch {
	case claim == "five_hour":
		return "5h"
	case claim == "seven_day":
		return "7d"
	case strings.HasPrefix(claim, "seven_day_"):
		return "7d_" + claim[len("seven_day_"):]
	case strings.HasPrefix(claim, "five_hour_"):
		return "5h_" + claim[len("five_hour_"):]
	}
	if validWindow(claim) {
		return claim
	}
	return ""
}
