package dedup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
	"github.com/claude-balancer/caddy-claude-balancer/internal/intake"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

const streamFixture = "anthropic-stream-thinking-text-tool.sse"

var testKey = keyN(1)

// keyN returns a signed Ticket of its own for each n: the signature of a
// body that names model n.
func keyN(n int) Ticket {
	_, k, err := intake.Read(fmt.Appendf(nil, `{"model":"m%d"}`, n), intake.Options{Sign: true, Identity: "test"})
	if err != nil {
		panic(err)
	}
	return intake.TicketFor(k)
}

func assembled(t testing.TB, stream []byte) []byte {
	t.Helper()
	msg, err := anthropic.Accumulate(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestIdenticalConcurrentRequestsShareOneRun(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	whole := bytes.Join(events, nil)
	message := assembled(t, whole)
	tests := []struct {
		name         string
		leaderStream bool
		modes        []bool // stream flag of each joiner
	}{
		{"streaming leader, streaming joiners", true, []bool{true, true, true, true, true, true, true}},
		{"streaming leader, JSON joiners", true, []bool{false, false, false, false}},
		{"streaming leader, mixed joiners", true, []bool{true, false, true, false, true, false}},
		{"JSON leader, JSON joiners", false, []bool{false, false, false, false, false}},
		{"JSON leader, mixed joiners", false, []bool{true, false, true, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(Options{})
			checkClean(t, r)
			var calls countedCalls
			g := newGate()
			var run RunFunc
			if tt.leaderStream {
				run = streamRun(&calls, g, events)
			} else {
				run = jsonRun(&calls, g, http.StatusOK, message)
			}
			leader := startClient(r, testKey, tt.leaderStream, run)
			<-g.started
			var joiners []*client
			for _, stream := range tt.modes {
				joiners = append(joiners, startClient(r, testKey, stream, run))
			}
			eventually(t, "every joiner joined", func() bool { return r.Stats().Joins == uint64(len(tt.modes)) })
			if st := r.Stats(); st.Groups != 1 || st.Active != 1 {
				t.Errorf("in flight: %+v", st)
			}
			close(g.open)

			leader.wait(t)
			for _, j := range joiners {
				j.wait(t)
			}
			if calls.count() != 1 {
				t.Fatalf("run called %d times, want 1", calls.count())
			}
			if leader.res.Role != Leader {
				t.Errorf("leader role = %v", leader.res.Role)
			}
			var streams [][]byte
			all := append([]*client{leader}, joiners...)
			modes := append([]bool{tt.leaderStream}, tt.modes...)
			for i, c := range all {
				if i > 0 && c.res.Role != Joined {
					t.Errorf("client %d role = %v, want joined", i, c.res.Role)
				}
				if c.res.Err != nil || c.w.Code != http.StatusOK || c.res.Status != http.StatusOK {
					t.Fatalf("client %d: status %d, err %v", i, c.w.Code, c.res.Err)
				}
				if got := c.w.Header().Get("Request-Id"); got != "req_011CUpstream" {
					t.Errorf("client %d: request-id %q", i, got)
				}
				body := c.w.Body.Bytes()
				if int64(len(body)) != c.res.Bytes {
					t.Errorf("client %d: Result.Bytes %d, body %d", i, c.res.Bytes, len(body))
				}
				if modes[i] {
					if ct := c.w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
						t.Errorf("client %d: content type %q", i, ct)
					}
					streams = append(streams, body)
					if !bytes.Equal(assembled(t, body), message) {
						t.Errorf("client %d: stream assembles to another message", i)
					}
					continue
				}
				if ct := c.w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("client %d: content type %q", i, ct)
				}
				if !bytes.Equal(body, message) {
					t.Errorf("client %d: body\n got %s\nwant %s", i, body, message)
				}
			}
			for i, s := range streams {
				if !bytes.Equal(s, streams[0]) {
					t.Errorf("stream %d differs from stream 0", i)
				}
				if tt.leaderStream && !bytes.Equal(s, whole) {
					t.Errorf("stream %d is not byte-identical to the upstream stream", i)
				}
			}
			st := r.Stats()
			if st.Runs != 1 || st.Joins != uint64(len(tt.modes)) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestLateJoinerGetsHistoryThenFollowsLive(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	whole := bytes.Join(events, nil)
	r := New(Options{})
	checkClean(t, r)
	var calls countedCalls
	half := make(chan struct{})
	rest := make(chan struct{})
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		calls.add()
		if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
			return nil
		}
		for i, ev := range events {
			if i == len(events)/2 {
				close(half)
				<-rest
			}
			if err := writeEvent(out, ev); err != nil {
				return nil
			}
		}
		return nil
	}
	leader := startClient(r, testKey, true, run)
	<-half
	lateW := &countingWriter{ResponseRecorder: httptest.NewRecorder()}
	late := startClientWriter(r, testKey, true, run, lateW)
	lateJSON := startClient(r, testKey, false, run)
	eventually(t, "late joiners joined", func() bool { return r.Stats().Joins == 2 })
	// Everything written so far reaches the late joiner while the run
	// waits: the history, however the leader was reading it.
	history := int64(len(bytes.Join(events[:len(events)/2], nil)))
	eventually(t, "the late joiner got the history", func() bool { return lateW.n.Load() == history })
	close(rest)
	leader.wait(t)
	late.wait(t)
	lateJSON.wait(t)
	if calls.count() != 1 {
		t.Fatalf("run called %d times", calls.count())
	}
	for name, body := range map[string][]byte{"leader": leader.w.Body.Bytes(), "late": lateW.Body.Bytes()} {
		if !bytes.Equal(body, whole) {
			t.Errorf("%s stream is not byte-identical to the upstream stream:\n%s", name, body)
		}
	}
	if !bytes.Equal(lateJSON.w.Body.Bytes(), assembled(t, whole)) {
		t.Errorf("late JSON joiner got %s", lateJSON.w.Body.Bytes())
	}
}

func TestLeaderClientLeavingDoesNotStopJoiners(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	whole := bytes.Join(events, nil)
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			r := New(Options{})
			checkClean(t, r)
			var calls countedCalls
			mid := make(chan struct{})
			resume := make(chan struct{})
			runCtxErr := make(chan error, 1)
			run := func(ctx context.Context, out relay.Output) *relay.Failure {
				calls.add()
				if !committed {
					close(mid)
					<-resume
				}
				if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
					runCtxErr <- err
					return nil
				}
				for i, ev := range events {
					if committed && i == 3 {
						close(mid)
						<-resume
					}
					if err := writeEvent(out, ev); err != nil {
						runCtxErr <- err
						return nil
					}
				}
				runCtxErr <- ctx.Err()
				return nil
			}
			leader := startClient(r, testKey, true, run)
			<-mid
			joiner := startClient(r, testKey, true, run)
			eventually(t, "joiner joined", func() bool { return r.Stats().Joins == 1 })
			leader.cancel()
			// The run goes on in the leader's goroutine, which returns
			// when the run ends.
			close(resume)
			joiner.wait(t)
			leader.wait(t)
			if err := <-runCtxErr; err != nil {
				t.Fatalf("run was stopped: %v", err)
			}
			if !errors.Is(leader.res.Err, context.Canceled) {
				t.Errorf("leader err = %v, want context.Canceled", leader.res.Err)
			}
			if joiner.res.Err != nil || !bytes.Equal(joiner.w.Body.Bytes(), whole) {
				t.Errorf("joiner err %v, body:\n%s", joiner.res.Err, joiner.w.Body.Bytes())
			}
		})
	}
}

func TestRunIsCancelledWhenEveryClientLeaves(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed=%v", committed), func(t *testing.T) {
			r := New(Options{})
			checkClean(t, r)
			reached := make(chan struct{})
			writeErr := make(chan error, 1)
			run := func(ctx context.Context, out relay.Output) *relay.Failure {
				if committed {
					if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
						t.Errorf("start: %v", err)
					}
					_ = writeEvent(out, events[0])
				}
				close(reached)
				<-ctx.Done()
				if committed {
					writeErr <- writeEvent(out, events[1])
				} else {
					writeErr <- out.Start(http.StatusOK, streamHeader(), true)
				}
				return nil
			}
			a := startClient(r, testKey, true, run)
			b := startClient(r, testKey, false, run)
			<-reached
			eventually(t, "second client joined", func() bool { return r.Stats().Joins == 1 })
			a.cancel()
			eventually(t, "the leader left", func() bool { return groupMembers(r) == 1 })
			if r.Stats().Active != 1 {
				t.Fatal("run ended while a client still waited")
			}
			b.cancel()
			b.wait(t)
			a.wait(t)
			if err := <-writeErr; !errors.Is(err, ErrNoReaders) {
				t.Errorf("output after every client left: %v, want ErrNoReaders", err)
			}
			for _, c := range []*client{a, b} {
				if !errors.Is(c.res.Err, context.Canceled) {
					t.Errorf("client err = %v", c.res.Err)
				}
			}
		})
	}
}

func TestFailureBeforeCommitReachesEveryMember(t *testing.T) {
	r := New(Options{})
	checkClean(t, r)
	var calls countedCalls
	g := newGate()
	failure := relay.NewFailure(529, apierr.Overloaded, "every provider failed: anthropic: 529 overloaded")
	failure.Header = http.Header{"Retry-After": {"7"}}
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		calls.add()
		if err := g.pass(ctx); err != nil {
			return nil
		}
		return failure
	}
	clients := []*client{startClient(r, testKey, true, run)}
	<-g.started
	for _, stream := range []bool{true, false, true, false} {
		clients = append(clients, startClient(r, testKey, stream, run))
	}
	eventually(t, "all joined", func() bool { return r.Stats().Joins == 4 })
	close(g.open)
	for i, c := range clients {
		c.wait(t)
		if c.w.Code != 529 || c.res.Status != 529 || c.res.Failure != failure {
			t.Errorf("client %d: code %d, result %+v", i, c.w.Code, c.res)
		}
		if !bytes.Equal(c.w.Body.Bytes(), failure.Body) || c.w.Header().Get("Retry-After") != "7" {
			t.Errorf("client %d: body %s, header %v", i, c.w.Body.Bytes(), c.w.Header())
		}
	}
	if calls.count() != 1 {
		t.Errorf("run called %d times", calls.count())
	}
}

func TestStreamEndingInErrorFrame(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	// Commit on the first content block, then fail the way the API does.
	failing := append(append([][]byte{}, events[:4]...), apierr.Frame(apierr.Overloaded, "Overloaded"))
	whole := bytes.Join(failing, nil)
	r := New(Options{Replay: time.Minute, Clock: newFakeClock()})
	checkClean(t, r)
	var calls countedCalls
	g := newGate()
	run := streamRun(&calls, g, failing)
	s1 := startClient(r, testKey, true, run)
	<-g.started
	s2 := startClient(r, testKey, true, run)
	j := startClient(r, testKey, false, run)
	eventually(t, "joined", func() bool { return r.Stats().Joins == 2 })
	close(g.open)
	for _, c := range []*client{s1, s2} {
		c.wait(t)
		if !bytes.Equal(c.w.Body.Bytes(), whole) {
			t.Errorf("streaming member got:\n%s", c.w.Body.Bytes())
		}
	}
	j.wait(t)
	if j.w.Code != 529 || j.w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("JSON member: %d %v", j.w.Code, j.w.Header())
	}
	if typ, msg, ok := apierr.Parse(j.w.Body.Bytes()); !ok || typ != apierr.Overloaded || msg != "Overloaded" {
		t.Errorf("JSON member body %s", j.w.Body.Bytes())
	}
	if n := r.Len(); n != 0 {
		t.Errorf("a failed stream was kept for replay (%d groups)", n)
	}
}

func TestDifferentKeysAreNotCoalesced(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	r := New(Options{})
	checkClean(t, r)
	var calls countedCalls
	g := newGate()
	run := streamRun(&calls, g, events)
	a := startClient(r, keyN(1), true, run)
	b := startClient(r, keyN(2), true, run)
	eventually(t, "both running", func() bool { return calls.count() == 2 })
	close(g.open)
	a.wait(t)
	b.wait(t)
	if a.res.Role != Leader || b.res.Role != Leader || r.Stats().Joins != 0 {
		t.Errorf("roles %v %v, stats %+v", a.res.Role, b.res.Role, r.Stats())
	}
}

func TestFinishedAnswerIsNotReusedWithoutReplay(t *testing.T) {
	r, calls, run, _ := streamRig(t, Options{})
	for i := range 2 {
		c := startClient(r, testKey, true, run)
		c.wait(t)
		if c.res.Role != Leader {
			t.Errorf("request %d role %v", i, c.res.Role)
		}
	}
	if calls.count() != 2 {
		t.Errorf("run called %d times, want 2", calls.count())
	}
}

func TestReplayServesStoredAnswerUntilItExpires(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	whole := bytes.Join(events, nil)
	message := assembled(t, whole)
	tests := []struct {
		name   string
		run    func(*countedCalls) RunFunc
		stream bool
	}{
		{"stream answer, stream retry", func(c *countedCalls) RunFunc { return streamRun(c, nil, events) }, true},
		{"stream answer, JSON retry", func(c *countedCalls) RunFunc { return streamRun(c, nil, events) }, false},
		{"JSON answer, JSON retry", func(c *countedCalls) RunFunc { return jsonRun(c, nil, 200, message) }, false},
		{"JSON answer, stream retry", func(c *countedCalls) RunFunc { return jsonRun(c, nil, 200, message) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			r := New(Options{Replay: time.Minute, Clock: clock})
			checkClean(t, r)
			var calls countedCalls
			run := tt.run(&calls)
			first := startClient(r, testKey, true, run)
			first.wait(t)
			eventually(t, "run finished", func() bool { return r.Stats().Active == 0 })

			clock.Advance(time.Minute - time.Second)
			retry := startClient(r, testKey, tt.stream, run)
			retry.wait(t)
			if retry.res.Role != Replayed || calls.count() != 1 || r.Stats().ReplayHits != 1 {
				t.Fatalf("retry role %v, runs %d, stats %+v", retry.res.Role, calls.count(), r.Stats())
			}
			got := retry.w.Body.Bytes()
			if !tt.stream && !bytes.Equal(got, message) {
				t.Errorf("replayed JSON %s", got)
			}
			if tt.stream && !bytes.Equal(assembled(t, got), message) {
				t.Errorf("replayed stream %s", got)
			}
			if tt.stream && !bytes.Equal(first.w.Body.Bytes(), got) {
				t.Errorf("replayed stream differs from the original")
			}

			clock.Advance(time.Second)
			if n := r.Len(); n != 0 {
				t.Fatalf("%d groups after the replay window", n)
			}
			again := startClient(r, testKey, tt.stream, run)
			again.wait(t)
			if again.res.Role != Leader || calls.count() != 2 {
				t.Errorf("after expiry: role %v, runs %d", again.res.Role, calls.count())
			}
			clock.Advance(time.Minute)
		})
	}
}

func TestReplayKeepsABoundedTotalOfAnswers(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	size := int64(len(bytes.Join(events, nil)))
	clock := newFakeClock()
	// Room for two answers, not three.
	r := New(Options{Replay: time.Hour, MaxReplayBytes: 2*size + size/2, Clock: clock})
	var calls countedCalls
	run := streamRun(&calls, nil, events)
	keys := []Ticket{keyN(1), keyN(2), keyN(3)}
	for _, k := range keys {
		c := startClient(r, k, true, run)
		c.wait(t)
		eventually(t, "run finished", func() bool { return r.Stats().Active == 0 })
		clock.Advance(time.Second)
	}
	if n := r.Len(); n != 2 {
		t.Fatalf("%d answers kept, want 2", n)
	}
	// The newer two replay; the oldest left, and is called again.
	for _, i := range []int{1, 2, 0} {
		c := startClient(r, keys[i], true, run)
		c.wait(t)
		if want := map[bool]Role{true: Leader, false: Replayed}[i == 0]; c.res.Role != want {
			t.Errorf("key %d: role %v, want %v", i, c.res.Role, want)
		}
		eventually(t, "run finished", func() bool { return r.Stats().Active == 0 })
	}
	clock.Advance(2 * time.Hour)
}

func TestReplayKeepsOnlySuccessfulAnswers(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	tests := []struct {
		name string
		run  func(*countedCalls) RunFunc
	}{
		{"failure before commit", func(c *countedCalls) RunFunc {
			return func(context.Context, relay.Output) *relay.Failure {
				c.add()
				return relay.NewFailure(529, apierr.Overloaded, "Overloaded")
			}
		}},
		{"error status", func(c *countedCalls) RunFunc {
			return jsonRun(c, nil, 400, apierr.Body(apierr.InvalidRequest, "bad"))
		}},
		{"stream cut short", func(c *countedCalls) RunFunc { return streamRun(c, nil, events[:5]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(Options{Replay: time.Minute, Clock: newFakeClock()})
			checkClean(t, r)
			var calls countedCalls
			run := tt.run(&calls)
			for range 2 {
				startClient(r, testKey, false, run).wait(t)
				eventually(t, "run finished", func() bool { return r.Stats().Active == 0 })
			}
			if calls.count() != 2 || r.Stats().ReplayHits != 0 {
				t.Errorf("runs %d, stats %+v", calls.count(), r.Stats())
			}
		})
	}
}

func TestSlowMemberIsEndedWithoutStallingOthers(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	var many [][]byte
	for range 20 {
		many = append(many, events...)
	}
	whole := bytes.Join(many, nil)
	r := New(Options{MaxLag: 1024})
	checkClean(t, r)
	var calls countedCalls
	g := newGate()
	runDone := make(chan struct{})
	var fast []*member
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		defer close(runDone)
		calls.add()
		if err := g.pass(ctx); err != nil {
			return nil
		}
		if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
			return nil
		}
		for _, ev := range many {
			if err := writeEvent(out, ev); err != nil {
				return nil
			}
			// An upstream is far slower than a healthy local client: let
			// the healthy ones keep up, and only the stuck one fall behind.
			eventually(t, "healthy members keep up", func() bool { return out.(*group).caughtUp(fast) })
		}
		return nil
	}
	leader := startClient(r, testKey, true, run)
	<-g.started
	slowW := newBlockingWriter()
	slow := startClientWriter(r, testKey, true, run, slowW)
	eventually(t, "slow client joined", func() bool { return r.Stats().Joins == 1 })
	fastJSON := startClient(r, testKey, false, run)
	eventually(t, "JSON client joined", func() bool { return r.Stats().Joins == 2 })
	r.mu.Lock()
	grp := r.groups[testKey.Pre][0]
	r.mu.Unlock()
	grp.mu.Lock()
	fast = []*member{grp.members[0], grp.members[2]}
	grp.mu.Unlock()
	close(g.open)
	<-slowW.blocked

	// The run and the other members finish while the slow client's socket
	// is still stuck.
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the run was held up by a slow member")
	}
	leader.wait(t)
	fastJSON.wait(t)
	if slow.finished() {
		t.Fatal("slow member finished while its writer was blocked")
	}
	if !bytes.Equal(leader.w.Body.Bytes(), whole) {
		t.Errorf("healthy member got %d bytes, want %d", leader.w.Body.Len(), len(whole))
	}
	if fastJSON.w.Code != http.StatusOK {
		t.Errorf("healthy JSON member got %d %s", fastJSON.w.Code, fastJSON.w.Body.Bytes())
	}

	close(slowW.release)
	slow.wait(t)
	if !errors.Is(slow.res.Err, ErrTooSlow) {
		t.Errorf("slow member err = %v", slow.res.Err)
	}
	got := slowW.bytes()
	if !bytes.HasSuffix(got, tooSlowFrame) || !bytes.HasPrefix(whole, got[:len(got)-len(tooSlowFrame)]) {
		t.Errorf("slow member got:\n%s", got)
	}
	if typ, _, _ := apierr.Parse(bytes.TrimPrefix(tooSlowFrame, []byte("event: error\ndata: "))); typ != apierr.Overloaded {
		t.Errorf("frame type %q", typ)
	}
	if st := r.Stats(); st.SlowEnded != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestGroupPastMaxBufferTakesNoJoinersAndReleasesSentChunks(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	var many [][]byte
	for range 40 {
		many = append(many, events[1:len(events)-1]...)
	}
	many = append(append([][]byte{events[0]}, many...), events[len(events)-1])
	whole := bytes.Join(many, nil)
	const maxBuffer, maxLag = 8 << 10, 16 << 10
	r := New(Options{MaxBuffer: maxBuffer, MaxLag: maxLag})
	checkClean(t, r)
	var calls countedCalls
	pastBuffer := make(chan *group, 1)
	finish := make(chan struct{})
	reader := &countingWriter{ResponseRecorder: httptest.NewRecorder()}
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		calls.add()
		g := out.(*group)
		if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
			return nil
		}
		var written int64
		signalled := false
		for _, ev := range many {
			if err := writeEvent(out, ev); err != nil {
				return nil
			}
			written += int64(len(ev))
			// Keep the member within MaxLag, as a real upstream, far slower
			// than a local reader, would.
			eventually(t, "member keeps up", func() bool { return reader.n.Load() >= written-maxLag/2 })
			if written > maxBuffer && !signalled {
				signalled = true
				pastBuffer <- g
				<-finish
			}
		}
		return nil
	}
	first := startClientWriter(r, testKey, true, run, reader)
	g := <-pastBuffer
	if r.Len() != 0 {
		t.Error("a full group still takes joiners")
	}
	second := startClient(r, testKey, true, streamRun(&calls, nil, events))
	second.wait(t)
	if second.res.Role != Leader || calls.count() != 2 {
		t.Errorf("request after the group filled: role %v, runs %d", second.res.Role, calls.count())
	}
	close(finish)
	first.wait(t)
	if !bytes.Equal(reader.Body.Bytes(), whole) || first.res.Err != nil {
		t.Errorf("member of the full group got %d bytes, want %d (err %v)", reader.Body.Len(), len(whole), first.res.Err)
	}
	g.mu.Lock()
	peak := g.peak
	g.mu.Unlock()
	if limit := int64(maxBuffer + maxLag + maxLag/8 + 1024); peak > limit || len(whole) < 2*int(limit) {
		t.Errorf("peak retained %d bytes of %d, limit %d", peak, len(whole), limit)
	}
}

func TestJoinerStopsWaitingForSilentLeaderAndLeadsAfresh(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	whole := bytes.Join(events, nil)
	clock := newFakeClock()
	r := New(Options{Wait: time.Minute, Clock: clock})
	checkClean(t, r)
	silentCtx := make(chan error, 1)
	started := make(chan struct{})
	silent := func(ctx context.Context, out relay.Output) *relay.Failure {
		close(started)
		<-ctx.Done()
		silentCtx <- ctx.Err()
		return nil
	}
	var calls countedCalls
	fresh := streamRun(&calls, nil, events)

	leader := startClient(r, testKey, true, silent)
	<-started
	joiner := startClient(r, testKey, true, fresh)
	eventually(t, "joiner waiting", func() bool { return r.Stats().Joins == 1 && clock.Pending() == 1 })
	clock.Advance(time.Minute - time.Nanosecond)
	if joiner.finished() {
		t.Fatal("joiner gave up before Wait")
	}
	clock.Advance(time.Nanosecond)
	joiner.wait(t)
	if joiner.res.Role != Leader || !joiner.res.WaitExpired || calls.count() != 1 {
		t.Errorf("joiner result %+v, fresh runs %d", joiner.res, calls.count())
	}
	if !bytes.Equal(joiner.w.Body.Bytes(), whole) {
		t.Errorf("joiner body %s", joiner.w.Body.Bytes())
	}
	if st := r.Stats(); st.WaitExpired != 1 || st.Runs != 2 {
		t.Errorf("stats %+v", st)
	}
	if leader.finished() {
		t.Error("the silent leader's own client was ended")
	}
	leader.cancel()
	leader.wait(t)
	if err := <-silentCtx; !errors.Is(err, context.Canceled) {
		t.Errorf("silent run ctx err %v", err)
	}
}

func TestOffRunsEachRequestDirectly(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	r := New(Options{Off: true})
	checkClean(t, r)
	var calls countedCalls
	g := newGate()
	run := streamRun(&calls, g, events)
	a := startClient(r, testKey, true, run)
	b := startClient(r, testKey, true, run)
	eventually(t, "both ran", func() bool { return calls.count() == 2 })
	close(g.open)
	a.wait(t)
	b.wait(t)
	for _, c := range []*client{a, b} {
		if c.res.Role != Direct || !bytes.Equal(c.w.Body.Bytes(), bytes.Join(events, nil)) {
			t.Errorf("role %v, body %d bytes", c.res.Role, c.w.Body.Len())
		}
	}

	failing := startClient(r, testKey, false, func(context.Context, relay.Output) *relay.Failure {
		return relay.NewFailure(503, apierr.Overloaded, "no provider")
	})
	failing.wait(t)
	if failing.w.Code != 503 || failing.res.Status != 503 {
		t.Errorf("failure: %d %+v", failing.w.Code, failing.res)
	}
}

func TestSetOptionsAppliesToNewRequests(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	r := New(Options{})
	checkClean(t, r)
	var calls countedCalls
	r.SetOptions(Options{Off: true})
	c := startClient(r, testKey, true, streamRun(&calls, nil, events))
	c.wait(t)
	if c.res.Role != Direct {
		t.Errorf("role %v after turning de-duplication off", c.res.Role)
	}
	r.SetOptions(Options{})
	c = startClient(r, testKey, true, streamRun(&calls, nil, events))
	c.wait(t)
	if c.res.Role != Leader {
		t.Errorf("role %v after turning de-duplication on", c.res.Role)
	}
}

func TestOffRunUsesTheRequestContext(t *testing.T) {
	r := New(Options{Off: true})
	type ctxKey struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/v1/messages", nil)
	cancel()
	var seen context.Context
	r.Serve(newDiscardWriter(nil), req, testKey, true, func(c context.Context, out relay.Output) *relay.Failure {
		seen = c
		return nil
	})
	if seen.Err() == nil || seen.Value(ctxKey{}) != "v" {
		t.Errorf("run context is not the request's")
	}
}

func TestRunContextKeepsRequestValuesButNotItsCancellation(t *testing.T) {
	r := New(Options{})
	checkClean(t, r)
	type ctxKey struct{}
	got := make(chan context.Context, 1)
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/v1/messages", nil)
	r.Serve(newDiscardWriter(nil), req, testKey, false, func(c context.Context, out relay.Output) *relay.Failure {
		got <- c
		return relay.NewFailure(500, apierr.API, "x")
	})
	c := <-got
	if c.Value(ctxKey{}) != "v" {
		t.Error("run context lost the request's values")
	}
	eventually(t, "run context cancelled after the run", func() bool { return c.Err() != nil })
}

func TestRunPanicBecomesAnErrorForEveryMember(t *testing.T) {
	r := New(Options{})
	checkClean(t, r)
	g := newGate()
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		_ = g.pass(ctx)
		panic("boom")
	}
	a := startClient(r, testKey, true, run)
	<-g.started
	b := startClient(r, testKey, false, run)
	eventually(t, "joined", func() bool { return r.Stats().Joins == 1 })
	close(g.open)
	for _, c := range []*client{a, b} {
		c.wait(t)
		if c.w.Code != 500 || c.res.Err == nil || !strings.Contains(c.res.Err.Error(), "boom") {
			t.Errorf("code %d, err %v", c.w.Code, c.res.Err)
		}
	}
	if r.Stats().Panics != 1 {
		t.Errorf("stats %+v", r.Stats())
	}
}

func TestRunEndingWithoutResponseIsAnError(t *testing.T) {
	r := New(Options{})
	checkClean(t, r)
	c := startClient(r, testKey, true, func(context.Context, relay.Output) *relay.Failure { return nil })
	c.wait(t)
	if c.w.Code != http.StatusBadGateway {
		t.Errorf("code %d", c.w.Code)
	}
}

func TestFailureAfterCommitEndsTheStreamWithAnErrorFrame(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	r := New(Options{})
	checkClean(t, r)
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		_ = out.Start(http.StatusOK, streamHeader(), true)
		for _, ev := range events[:4] {
			_ = writeEvent(out, ev)
		}
		return relay.NewFailure(502, apierr.API, "upstream reset")
	}
	c := startClient(r, testKey, true, run)
	c.wait(t)
	want := append(bytes.Join(events[:4], nil), apierr.Frame(apierr.API, "upstream reset")...)
	if !bytes.Equal(c.w.Body.Bytes(), want) {
		t.Errorf("body:\n%s", c.w.Body.Bytes())
	}
}

func TestFailureAfterTheStreamEndedChangesNothing(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	for _, tail := range [][]byte{events[len(events)-1], apierr.Frame(apierr.Overloaded, "Overloaded")} {
		r := New(Options{})
		checkClean(t, r)
		stream := append(append([][]byte{}, events[:len(events)-1]...), tail)
		run := func(ctx context.Context, out relay.Output) *relay.Failure {
			_ = out.Start(http.StatusOK, streamHeader(), true)
			for _, ev := range stream {
				_ = writeEvent(out, ev)
			}
			return relay.NewFailure(502, apierr.API, "late failure")
		}
		c := startClient(r, testKey, true, run)
		c.wait(t)
		if want := bytes.Join(stream, nil); !bytes.Equal(c.w.Body.Bytes(), want) {
			t.Errorf("body:\n%s", c.w.Body.Bytes())
		}
	}
}

func TestStreamingMemberOfJSONErrorAnswerGetsTheJSON(t *testing.T) {
	r := New(Options{})
	checkClean(t, r)
	body := apierr.Body(apierr.InvalidRequest, "prompt is too long")
	var calls countedCalls
	c := startClient(r, testKey, true, jsonRun(&calls, nil, 400, body))
	c.wait(t)
	if c.w.Code != 400 || !bytes.Equal(c.w.Body.Bytes(), body) || c.w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%d %v %s", c.w.Code, c.w.Header(), c.w.Body.Bytes())
	}
}

func TestEachEventSplitsRawEvents(t *testing.T) {
	raw := []byte("event: a\ndata: {\"x\":1}\n\n: comment\n\ndata: one\r\ndata: two\r\n\r\nevent: b\n\nevent: c\ndata: last")
	type ev struct{ name, data string }
	var got []ev
	_ = eachEvent(raw, func(name, data []byte) error {
		got = append(got, ev{string(name), string(data)})
		return nil
	})
	want := []ev{{"a", `{"x":1}`}, {"", "one\ntwo"}, {"b", ""}, {"c", "last"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
	stop := errors.New("stop")
	if err := eachEvent(raw, func([]byte, []byte) error { return stop }); err != stop {
		t.Errorf("err %v", err)
	}
}

func TestEveryMemberGetsWhatTheRunKept(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	r := New(Options{Replay: time.Minute})
	g := newGate()
	var calls countedCalls
	inner := streamRun(&calls, g, events)
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		f := inner(ctx, out)
		out.(Keeper).Keep("the usage")
		return f
	}
	leader := startClient(r, testKey, true, run)
	<-g.started
	joiner := startClient(r, testKey, false, run)
	eventually(t, "joined", func() bool { return r.Stats().Joins == 1 })
	close(g.open)
	leader.wait(t)
	joiner.wait(t)
	replay := startClient(r, testKey, true, run)
	replay.wait(t)
	for name, c := range map[string]*client{"leader": leader, "joiner": joiner, "replayed": replay} {
		if c.res.Kept != "the usage" {
			t.Errorf("%s: kept %v", name, c.res.Kept)
		}
	}
	direct := New(Options{Off: true})
	d := startClient(direct, testKey, true, run)
	d.wait(t)
	if d.res.Kept != "the usage" || d.res.Role != Direct {
		t.Errorf("direct: kept %v role %v", d.res.Kept, d.res.Role)
	}
}

// TestWaitingStreamKeepsASmallCopy: a stream that waits after its opening
// events (message_start, content_block_start, ping) keeps them in one block
// sized to them, not in a kilobyte or more: an open stream's memory is
// mostly that wait.
func TestWaitingStreamKeepsASmallCopy(t *testing.T) {
	r := New(Options{})
	g := newGroup(r, testKey, context.Background(), r.opts.Load())
	defer g.cancel()
	g.lead()
	if err := g.Start(http.StatusOK, http.Header{}, true); err != nil {
		t.Fatal(err)
	}
	start := sse.Encode("message_start", []byte(`{"type":"message_start","message":{"id":"msg_01XbenchMockMessageId000000","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":1204,"cache_read_input_tokens":36017,"cache_creation":{"ephemeral_5m_input_tokens":1204,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}`))
	block := sse.Encode("content_block_start", []byte(`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`))
	ping := sse.Encode("ping", []byte(`{"type": "ping"}`))
	types := []anthropic.EventType{anthropic.EventMessageStart, anthropic.EventContentBlockStart, anthropic.EventPing}
	for i, ev := range []sse.Event{start, block, ping} {
		if err := g.Event(relay.Event{Raw: ev.Raw, Info: anthropic.EventInfo{Type: types[i]}}, i < 2); err != nil {
			t.Fatal(err)
		}
	}
	held := len(start.Raw) + len(block.Raw) + len(ping.Raw)
	if len(g.arena) != held || cap(g.arena) >= 1<<10 {
		t.Fatalf("the opening %d bytes are kept in %d of a %d-byte block", held, len(g.arena), cap(g.arena))
	}
}

// longStream writes a stream of n text deltas, each naming tag, to g as the
// relay does, and returns its bytes.
func longStream(t *testing.T, g *group, tag string, n int) []byte {
	t.Helper()
	var all []byte
	write := func(name, data string, typ anthropic.EventType) {
		ev := sse.Encode(name, []byte(data))
		all = append(all, ev.Raw...)
		if err := g.Event(relay.Event{Raw: ev.Raw, Info: anthropic.EventInfo{Type: typ}}, false); err != nil {
			t.Fatal(err)
		}
	}
	write("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":1,"output_tokens":1}}}`, anthropic.EventMessageStart)
	for i := range n {
		write("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s %d"}}`, tag, i), anthropic.EventContentBlockDelta)
	}
	write("message_stop", `{"type":"message_stop"}`, anthropic.EventMessageStop)
	return all
}

// chunkBytes joins the chunks of a state.
func chunkBytes(s *state) []byte {
	var b []byte
	for _, c := range s.chunks {
		b = append(b, c.data...)
	}
	return b
}

// TestArenaGoesBackWhenTheLastMemberLeaves holds the arena's blocks to the
// group's last reader: a member still sending a finished answer reads it
// whole, and only then do its blocks go back to the pool (which poisons
// them here, so that a late read would show).
func TestArenaGoesBackWhenTheLastMemberLeaves(t *testing.T) {
	bufpool.SetPoison(true)
	t.Cleanup(func() { bufpool.SetPoison(false) })
	r := New(Options{})
	g := newGroup(r, testKey, context.Background(), r.opts.Load())
	leader := g.lead()
	if err := g.Start(http.StatusOK, streamHeader(), true); err != nil {
		t.Fatal(err)
	}
	want := longStream(t, g, "kept", 3000)
	joiner, _ := g.join(time.Now(), nil)
	if joiner == nil {
		t.Fatal("a running group refused a member")
	}
	g.finish(nil, nil)
	s := g.state.Load()
	if len(g.pooled) < 2 {
		t.Fatalf("%d pooled blocks for a %d-byte answer", len(g.pooled), len(want))
	}
	g.leave(leader, 0)
	if !bytes.Equal(chunkBytes(s), want) || g.recycled {
		t.Fatal("the answer changed while a member was still sending it")
	}
	g.leave(joiner, 0)
	if !g.recycled || g.pooled != nil {
		t.Fatal("the blocks were not given back when the last member left")
	}
	if bytes.Equal(chunkBytes(s), want) {
		t.Fatal("the blocks given back still hold the answer: they were not the pool's")
	}
	if m, _ := g.join(time.Now(), nil); m != nil {
		t.Fatal("a finished group without replay took a member")
	}
}

// TestArenaOfAReplayableOrOverfullGroupIsNotPooled: an answer kept for
// replay is read by members that come later, and a group that outgrew
// MaxBuffer drops its chunks as they are sent; neither lends its blocks
// back.
func TestArenaOfAReplayableOrOverfullGroupIsNotPooled(t *testing.T) {
	t.Run("replay", func(t *testing.T) {
		r := New(Options{Replay: time.Minute})
		g := newGroup(r, testKey, context.Background(), r.opts.Load())
		m := g.lead()
		if err := g.Start(http.StatusOK, streamHeader(), true); err != nil {
			t.Fatal(err)
		}
		want := longStream(t, g, "replayed", 3000)
		g.finish(nil, nil)
		g.leave(m, 0)
		if g.recycled || !bytes.Equal(chunkBytes(g.state.Load()), want) {
			t.Fatal("a replayable answer went back to the pool")
		}
	})
	t.Run("outgrew MaxBuffer", func(t *testing.T) {
		r := New(Options{MaxBuffer: 40 << 10})
		g := newGroup(r, testKey, context.Background(), r.opts.Load())
		m := g.lead()
		if err := g.Start(http.StatusOK, streamHeader(), true); err != nil {
			t.Fatal(err)
		}
		longStream(t, g, "long", 3000)
		if !g.full || g.pooled != nil {
			t.Fatalf("full %v, %d pooled blocks kept", g.full, len(g.pooled))
		}
		g.finish(nil, nil)
		g.leave(m, 0)
	})
}

// TestLongStreamsNeverMix runs long streams of distinct answers at once,
// each with twins joining at different points, and the pool poisoned: every
// client gets its own answer, byte for byte, while finished groups' blocks
// go back and are lent again.
func TestLongStreamsNeverMix(t *testing.T) {
	bufpool.SetPoison(true)
	t.Cleanup(func() { bufpool.SetPoison(false) })
	r := New(Options{})
	checkClean(t, r)
	const keys, rounds, twins = 4, 6, 3
	var wg sync.WaitGroup
	errs := make(chan string, keys*rounds*(twins+1))
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range rounds {
				tag := fmt.Sprintf("key%d-round%d", k, round)
				events := [][]byte{sse.Encode("message_start", []byte(`{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":1,"output_tokens":1}}}`)).Raw}
				for i := range 2000 {
					events = append(events, sse.Encode("content_block_delta", fmt.Appendf(nil, `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s %d"}}`, tag, i)).Raw)
				}
				events = append(events, sse.Encode("message_stop", []byte(`{"type":"message_stop"}`)).Raw)
				want := bytes.Join(events, nil)
				g := newGate()
				run := streamRun(&countedCalls{}, g, events)
				key := keyN(100 + k*rounds + round)
				clients := []*client{startClient(r, key, true, run)}
				<-g.started
				for range twins {
					clients = append(clients, startClient(r, key, true, run))
				}
				eventually(t, "the twins to join", func() bool { return membersOf(r, key) == twins+1 })
				close(g.open)
				for i, c := range clients {
					c.wait(t)
					if got := c.w.Body.Bytes(); !bytes.Equal(got, want) {
						errs <- fmt.Sprintf("%s client %d: %d bytes, want %d; first difference at %d", tag, i, len(got), len(want), firstDiff(got, want))
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// membersOf returns the members of the group key leads, or -1.
func membersOf(r *Registry, key Ticket) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.groups[key.Pre] {
		g.mu.Lock()
		n := len(g.members)
		g.mu.Unlock()
		return n
	}
	return -1
}

// TestJSONAnswerGoesBackToThePool: a JSON answer, small or large, is kept
// in a buffer lent by the pool, given back (poisoned here) when its last
// member has left.
func TestJSONAnswerGoesBackToThePool(t *testing.T) {
	bufpool.SetPoison(true)
	t.Cleanup(func() { bufpool.SetPoison(false) })
	for _, size := range []int{3 << 10, 20 << 10, 300 << 10} {
		r := New(Options{})
		g := newGroup(r, testKey, context.Background(), r.opts.Load())
		m := g.lead()
		if err := g.Start(http.StatusOK, jsonHeader(), false); err != nil {
			t.Fatal(err)
		}
		body := []byte(`{"type":"message","content":[{"type":"text","text":"` + strings.Repeat("x", size) + `"}]}`)
		if err := g.Body(body); err != nil {
			t.Fatal(err)
		}
		g.finish(nil, nil)
		s := g.state.Load()
		if got := g.jsonBody(s); !bytes.Equal(got, body) || len(g.pooled) != 1 {
			t.Fatalf("%d bytes: the answer is kept in %d pooled buffers", size, len(g.pooled))
		}
		g.leave(m, 0)
		if !g.recycled || bytes.Equal(chunkBytes(s), body) {
			t.Fatalf("%d bytes: the answer did not go back to the pool", size)
		}
	}
}

// callLog is a ResponseWriter that records what is done to it, in order.
type callLog struct {
	mu     sync.Mutex
	header http.Header
	ops    []string
}

func (l *callLog) Header() http.Header { return l.header }
func (l *callLog) WriteHeader(int)     { l.add("header") }
func (l *callLog) Write(p []byte) (int, error) {
	l.add("write")
	return len(p), nil
}
func (l *callLog) Flush() { l.add("flush") }
func (l *callLog) add(op string) {
	l.mu.Lock()
	l.ops = append(l.ops, op)
	l.mu.Unlock()
}

// firstFlushCarriesEvents reports whether the writer's first flush came
// after a write: the headers left with events, not alone.
func (l *callLog) firstFlushCarriesEvents() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, op := range l.ops {
		switch op {
		case "write":
			return true
		case "flush":
			return false
		}
	}
	return false
}

// TestStreamHeadersGoWithTheFirstEvents: a stream's status and headers are
// not flushed alone, for the leader nor for a client that joins after the
// commit: they reach the client with the first events, in one write.
func TestStreamHeadersGoWithTheFirstEvents(t *testing.T) {
	events := fixtureEvents(t, streamFixture)
	r := New(Options{})
	checkClean(t, r)
	committed, rest := make(chan struct{}), make(chan struct{})
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
			return nil
		}
		for i, ev := range events {
			if err := writeEvent(out, ev); err != nil {
				return nil
			}
			if i == 2 {
				close(committed)
				<-rest
			}
		}
		return nil
	}
	leaderW, lateW := &callLog{header: http.Header{}}, &callLog{header: http.Header{}}
	leader := startClientWriter(r, testKey, true, run, leaderW)
	<-committed
	late := startClientWriter(r, testKey, true, run, lateW)
	eventually(t, "the late client joined", func() bool { return r.Stats().Joins == 1 })
	close(rest)
	leader.wait(t)
	late.wait(t)
	for name, l := range map[string]*callLog{"leader": leaderW, "late": lateW} {
		if !l.firstFlushCarriesEvents() {
			t.Errorf("%s: the headers were flushed before any event: %v", name, l.ops)
		}
	}
}
