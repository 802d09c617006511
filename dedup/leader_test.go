package dedup

import (
	"bytes"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
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
