package dedup

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// stuckConn is the connection under a leader's writers: its first body write
// blocks, like a client that stopped reading, until a write deadline is set.
type stuckConn struct {
	*blockingWriter
	deadlines atomic.Int32
}

func (c *stuckConn) SetWriteDeadline(d time.Time) error {
	if !d.IsZero() && c.deadlines.Add(1) == 1 {
		close(c.release)
	}
	return nil
}

// idleWrapper stands for Caddy's idle timeout writer: it keeps deadline
// state of its own, unguarded, for the goroutine that writes through it.
type idleWrapper struct {
	http.ResponseWriter
	deadline time.Time
	outside  atomic.Int32
}

func (w *idleWrapper) Write(p []byte) (int, error) {
	_ = w.deadline // read on every write, as the wrapper resets it
	return w.ResponseWriter.Write(p)
}

func (w *idleWrapper) SetWriteDeadline(d time.Time) error {
	w.outside.Add(1)
	w.deadline = d
	return nil
}

func (w *idleWrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestJoinerBoundsAStuckLeaderOnItsConnection: a member that joins while
// the run is stuck writing to the leader bounds that write on the leader's
// connection, under every wrapper (whose state belongs to the writing
// goroutine; the race detector would see a joiner touch it), and then gets
// the whole answer.
func TestJoinerBoundsAStuckLeaderOnItsConnection(t *testing.T) {
	r, calls, run, events := streamRig(t, Options{})
	conn := &stuckConn{blockingWriter: newBlockingWriter()}
	leaderW := &idleWrapper{ResponseWriter: conn}
	leader := startClientWriter(r, keyN(7), true, run, leaderW)
	<-conn.blocked
	joiner := startClient(r, keyN(7), true, run)
	joiner.wait(t)
	leader.wait(t)
	if calls.count() != 1 || joiner.res.Role != Joined {
		t.Fatalf("runs %d, joiner %v", calls.count(), joiner.res.Role)
	}
	if got := joiner.w.Body.Bytes(); !bytes.Equal(assembled(t, got), assembled(t, bytes.Join(events, nil))) {
		t.Errorf("joiner's stream %q", got)
	}
	if conn.deadlines.Load() == 0 {
		t.Error("the stuck write was never bounded on the connection")
	}
	if n := leaderW.outside.Load(); n != 0 {
		t.Errorf("a deadline went through the wrapper %d times", n)
	}
}

// TestALeaderAloneAllocatesNothingPerBurst: while the leader alone reads
// the answer, from the run's goroutine, nobody reads the states the run
// would publish: a burst costs no state, nor a channel to wake a member with.
func TestALeaderAloneAllocatesNothingPerBurst(t *testing.T) {
	r := New(Options{})
	checkClean(t, r)
	delta := []byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n")
	const bursts = 500
	var perBurst float64
	run := func(ctx context.Context, out relay.Output) *relay.Failure {
		if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
			return nil
		}
		info := anthropic.EventInfo{Type: anthropic.EventContentBlockDelta}
		ev := relay.Event{Raw: delta, Info: info}
		for range 10 { // the arena's first blocks
			_ = out.Event(ev, false)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range bursts {
			if out.Event(ev, false) != nil {
				return nil
			}
		}
		runtime.ReadMemStats(&after)
		perBurst = float64(after.Mallocs-before.Mallocs) / bursts
		return nil
	}
	c := startClientWriter(r, prepare(t, lazyBody), true, run, newDiscardWriter(nil))
	c.wait(t)
	// Now and then an arena block; a state a burst would make it one, and
	// a channel as well two.
	if perBurst > 0.2 {
		t.Fatalf("%.2f allocations per burst with the leader alone", perBurst)
	}
}
