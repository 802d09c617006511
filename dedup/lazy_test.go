package dedup

import (
	"strings"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/intake"
)

const lazyBody = `{"model":"m","max_tokens":100,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":"hello"}]}`

// prepare returns a Ticket as the handler makes it, for client "c".
func prepare(t *testing.T, body string) Ticket {
	t.Helper()
	_, tk, err := intake.Prepare([]byte(body), intake.Options{Ignore: DefaultIgnore, Identity: "c"})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// pair sends a, then (once a's run has started) b, holds both runs until
// ready holds, and waits for both clients.
func pair(t *testing.T, a, b Ticket, ready func(*Registry) bool) (calls *countedCalls, ca, cb *client, r *Registry) {
	t.Helper()
	r = New(Options{})
	checkClean(t, r)
	g := newGate()
	calls = &countedCalls{}
	run := streamRun(calls, g, fixtureEvents(t, streamFixture))
	ca = startClient(r, a, true, run)
	<-g.started
	cb = startClient(r, b, false, run)
	eventually(t, "both requests in", func() bool { return ready(r) })
	close(g.open)
	ca.wait(t)
	cb.wait(t)
	return calls, ca, cb, r
}

func bothRunning(r *Registry) bool { return r.Stats().Active == 2 }

// TestDistinctRequestsAreNeverSigned: requests in flight together whose
// Pres differ each lead their own group, and neither body is signed.
func TestDistinctRequestsAreNeverSigned(t *testing.T) {
	a := prepare(t, lazyBody)
	b := prepare(t, strings.Replace(lazyBody, "hello", "hello again", 1))
	calls, _, _, r := pair(t, a, b, bothRunning)
	if calls.count() != 2 || r.Stats().Joins != 0 {
		t.Fatalf("runs %d, joins %d", calls.count(), r.Stats().Joins)
	}
	if a.Signed() || b.Signed() {
		t.Error("a request with no identical twin in flight was signed")
	}
}

// TestIdenticalPreparedRequestsShareOneRun: an identical request (its
// max_tokens differs, which the signature ignores) joins the group of the
// one in flight; the leader's body is signed when the second one arrives
// (TestDistinctRequestsAreNeverSigned: not before).
func TestIdenticalPreparedRequestsShareOneRun(t *testing.T) {
	a := prepare(t, lazyBody)
	b := prepare(t, strings.Replace(lazyBody, `"max_tokens":100`, `"max_tokens":50`, 1))
	calls, _, cb, _ := pair(t, a, b, func(r *Registry) bool { return r.Stats().Joins == 1 })
	if calls.count() != 1 || cb.res.Role != Joined || !a.Signed() || !b.Signed() {
		t.Fatalf("runs %d, role %v, signed %v %v", calls.count(), cb.res.Role, a.Signed(), b.Signed())
	}
}

// TestSamePreOtherKeyRunsAlone: requests that differ only outside the
// digest (the system prompt) share a Pre; their Keys tell them apart.
func TestSamePreOtherKeyRunsAlone(t *testing.T) {
	a := prepare(t, lazyBody)
	b := prepare(t, strings.Replace(lazyBody, "be brief", "be thorough", 1))
	if a.Pre != b.Pre {
		t.Fatal("the system prompt changed the Pre")
	}
	calls, _, _, r := pair(t, a, b, bothRunning)
	if calls.count() != 2 || r.Stats().Joins != 0 || !a.Signed() || !b.Signed() {
		t.Fatalf("runs %d, joins %d, signed %v %v", calls.count(), r.Stats().Joins, a.Signed(), b.Signed())
	}
}

// TestFinishedUnsignedGroupIsGone: once a leader's Serve returns, its
// Ticket is dropped and its body may be reused; an identical request that
// comes later runs on its own (no replay), and never reads the old body.
func TestFinishedUnsignedGroupIsGone(t *testing.T) {
	r, calls, run, _ := streamRig(t, Options{})
	first := prepare(t, lazyBody)
	startClient(r, first, true, run).wait(t)
	if _, ok := first.Key(); ok {
		t.Fatal("the leader's Ticket was not dropped")
	}
	second := startClient(r, prepare(t, lazyBody), true, run)
	second.wait(t)
	if calls.count() != 2 || second.res.Role != Leader {
		t.Fatalf("runs %d, role %v", calls.count(), second.res.Role)
	}
}

// TestReplaySignsTheFinishedGroup: with replay on, a finished group is
// signed before its leader lets go of the body, and an identical request
// within the window gets the stored answer.
func TestReplaySignsTheFinishedGroup(t *testing.T) {
	clock := newFakeClock()
	r, calls, run, _ := streamRig(t, Options{Replay: time.Minute, Clock: clock})
	first := prepare(t, lazyBody)
	startClient(r, first, true, run).wait(t)
	if !first.Signed() {
		t.Fatal("the group kept for replay is unsigned")
	}
	retry := startClient(r, prepare(t, lazyBody), true, run)
	retry.wait(t)
	if calls.count() != 1 || retry.res.Role != Replayed {
		t.Fatalf("runs %d, role %v", calls.count(), retry.res.Role)
	}
	clock.Advance(time.Minute)
}
