package balancer

import (
	"testing"
	"time"
)

var testPolicy = HealthPolicy{Threshold: 2, Cooldown: time.Minute, ResetAfter: 5 * time.Minute}

func TestHealthThresholdMarksUnhealthy(t *testing.T) {
	useFakeClock(t)
	var h Health
	if n, tr := h.RecordFailure(testPolicy, "boom"); n != 1 || tr != NoTransition {
		t.Fatalf("first error: %d %v", n, tr)
	}
	if ok, _ := h.Available(testPolicy); !ok {
		t.Fatal("one error below the threshold must leave the provider available")
	}
	if n, tr := h.RecordFailure(testPolicy, "boom"); n != 2 || tr != BecameUnhealthy {
		t.Fatalf("second error: %d %v", n, tr)
	}
	if ok, at := h.Available(testPolicy); ok || at.Sub(now()) != time.Minute {
		t.Fatalf("available %v until %v", ok, at)
	}
	if s := h.Snapshot(testPolicy); s.State != "cooldown" || s.Errors != 2 || s.LastMessage != "boom" {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestHealthHalfOpenAllowsOneTrial(t *testing.T) {
	c := useFakeClock(t)
	var h Health
	h.RecordFailure(testPolicy, "x")
	h.RecordFailure(testPolicy, "x")
	if h.Acquire(testPolicy) {
		t.Fatal("acquired during cooldown")
	}
	c.advance(time.Minute)
	if s := h.Snapshot(testPolicy); s.State != "half_open" {
		t.Fatalf("state %s", s.State)
	}
	if !h.Acquire(testPolicy) {
		t.Fatal("trial refused after the cooldown")
	}
	if h.Acquire(testPolicy) {
		t.Fatal("a second concurrent trial was allowed")
	}
	// A failed trial restarts the full cooldown.
	c.advance(10 * time.Second)
	if _, tr := h.RecordFailure(testPolicy, "x"); tr != NoTransition {
		t.Fatalf("transition %v", tr)
	}
	if ok, at := h.Available(testPolicy); ok || at.Sub(now()) != time.Minute {
		t.Fatalf("after failed trial: %v %v", ok, at.Sub(now()))
	}
	// A successful trial heals.
	c.advance(time.Minute)
	if !h.Acquire(testPolicy) {
		t.Fatal("second trial refused")
	}
	if tr := h.RecordSuccess(); tr != BecameHealthy {
		t.Fatalf("transition %v", tr)
	}
	if s := h.Snapshot(testPolicy); s.State != "healthy" || s.Errors != 0 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestHealthReleaseFreesTheTrial(t *testing.T) {
	c := useFakeClock(t)
	var h Health
	h.RecordFailure(testPolicy, "x")
	h.RecordFailure(testPolicy, "x")
	c.advance(time.Minute)
	if !h.Acquire(testPolicy) {
		t.Fatal("trial refused")
	}
	h.Release()
	if !h.Acquire(testPolicy) {
		t.Fatal("trial not freed by Release")
	}
}

func TestHealthSuccessResetsAndCountDecays(t *testing.T) {
	c := useFakeClock(t)
	var h Health
	h.RecordFailure(testPolicy, "x")
	h.RecordSuccess()
	if n, _ := h.RecordFailure(testPolicy, "x"); n != 1 {
		t.Fatalf("count after success %d", n)
	}
	c.advance(5*time.Minute - time.Second)
	if s := h.Snapshot(testPolicy); s.Errors != 1 {
		t.Fatalf("decayed too early: %d", s.Errors)
	}
	c.advance(time.Second)
	if s := h.Snapshot(testPolicy); s.Errors != 0 {
		t.Fatalf("did not decay: %d", s.Errors)
	}
	if n, tr := h.RecordFailure(testPolicy, "x"); n != 1 || tr != NoTransition {
		t.Fatalf("after decay: %d %v", n, tr)
	}
}

func TestHealthResetByOperator(t *testing.T) {
	useFakeClock(t)
	var h Health
	h.RecordFailure(testPolicy, "x")
	h.RecordFailure(testPolicy, "x")
	if tr := h.Reset(); tr != BecameHealthy {
		t.Fatalf("transition %v", tr)
	}
	if ok, _ := h.Available(testPolicy); !ok {
		t.Fatal("still unavailable after reset")
	}
}
