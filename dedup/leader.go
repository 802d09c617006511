package dedup

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// A group's run goes in its leader's goroutine, and while the leader is the
// group's only member, the run writes the leader's answer itself, each burst
// as it publishes it: no goroutine of its own, no hand-over per burst. The
// first joiner moves the leader to a goroutine of its own (async), which
// goes on from where the run left off, so that a slow leading client never
// holds the others back.

// pump sends the group's answer to its leader.
type pump struct {
	g      *group
	w      http.ResponseWriter
	rc     http.ResponseController
	m      *member
	ctx    context.Context
	stream bool

	// mu is held while the run writes to the leader. Once async is set, the
	// leader's own goroutine owns everything below and the run writes no
	// more.
	mu        sync.Mutex
	async     bool
	started   bool // the stream's status and headers are sent
	ended     bool // the leader's answer is over (or its client gone)
	left      bool // the leader has left the group
	pos       int64
	delivered int64
	res       Result
	// done is closed when the async goroutine has served the leader.
	done chan struct{}
	// stalled is the leader's connection once a joiner bounded a write
	// under way (see joined); lifted is set when the async goroutine has
	// lifted that bound, after which none is set. Both under stallMu.
	stallMu sync.Mutex
	stalled *http.ResponseController
	lifted  bool
}

// leadInline runs the group's attempt loop in the calling goroutine and
// serves the leader's client from it.
func (g *group) leadInline(w http.ResponseWriter, req *http.Request, m *member, stream bool, fn RunFunc) Result {
	p := &g.leaderPump
	p.g, p.w, p.m, p.ctx, p.stream, p.res = g, w, m, req.Context(), stream, Result{Role: Leader}
	p.rc = *http.NewResponseController(w)
	g.mu.Lock()
	g.leader, g.solo = p, true
	g.mu.Unlock()
	// A client that leaves while the run waits on the provider leaves the
	// group, which cancels the run when nobody else reads it.
	stop := context.AfterFunc(p.ctx, p.clientGone)
	g.run(fn)
	stop()
	p.mu.Lock()
	if p.async {
		p.mu.Unlock()
		<-p.done
	} else {
		p.stepLocked(nil)
		p.leaveLocked()
		p.mu.Unlock()
	}
	res := p.res
	if g.state.Load().done {
		res.Kept = g.keptValue()
	}
	return res
}

// published is called by the run after each state it publishes, and after
// each burst while the leader reads alone, without the group's lock.
func (g *group) published() {
	g.mu.Lock()
	p := g.leader
	var view *state
	if g.solo {
		// The states do not carry every chunk (see write): the leader
		// takes them from the group, and they are shown from now on.
		view = &g.soloView
		view.chunks, view.base = g.chunks, g.base
		g.pubEnd = g.base + int64(len(g.chunks))
	}
	g.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	p.stepLocked(view)
	p.mu.Unlock()
}

// stepLocked writes what the leader has not got yet: the chunks of view when
// it is not nil, else of the latest state. The caller holds p.mu.
func (p *pump) stepLocked(view *state) {
	if p.async || p.ended {
		return
	}
	g := p.g
	s := g.state.Load()
	switch {
	case !s.committed && !s.done:
		return
	case !s.committed:
		g.sendFailure(p.w, s, &p.res)
		p.delivered = 1
		p.ended = true
		return
	case g.stream != p.stream:
		// The answer comes in the other mode: the leader's goroutine
		// converts it, as it does for joiners.
		p.goAsyncLocked()
		return
	case !g.stream:
		if s.done {
			p.res.Header = g.header
			p.delivered = g.sendDone(p.w, s, &p.res)
			p.ended = true
		}
		return
	}
	if p.m.dropped.Load() {
		// The leader fell MaxLag behind: only a burst larger than that can
		// do it while the run writes to it.
		g.reg.slow.Add(1)
		n, _ := p.w.Write(tooSlowFrame)
		p.res.Bytes += int64(n)
		_ = flush(&p.rc)
		p.res.Err = ErrTooSlow
		p.ended = true
		p.leaveLocked()
		return
	}
	if !p.started {
		p.started = true
		p.res.Header = g.header
		g.startStream(p.w, &p.res)
	}
	chunks, base := s.chunks, s.base
	if view != nil {
		chunks, base = view.chunks, view.base
	}
	if end := base + int64(len(chunks)); p.pos < end {
		for _, c := range chunks[p.pos-base:] {
			n, err := p.w.Write(c.data)
			p.res.Bytes += int64(n)
			if err != nil {
				p.res.Err = err
				p.ended = true
				p.leaveLocked()
				return
			}
			p.delivered++
		}
		p.pos = end
		p.m.pos.Store(end)
		if err := flush(&p.rc); err != nil {
			p.res.Err = err
			p.ended = true
			p.leaveLocked()
			return
		}
	}
	if s.done {
		p.res.Err = s.runErr
		p.ended = true
	}
}

// leaveLocked takes the leader out of the group, once. The caller holds
// p.mu, and not the group's lock.
func (p *pump) leaveLocked() {
	if !p.left {
		p.left = true
		p.g.leave(p.m, p.delivered)
	}
}

// clientGone ends the leader whose client left before its answer did.
func (p *pump) clientGone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.async || p.ended {
		return
	}
	p.res.Err = p.ctx.Err()
	p.ended = true
	p.leaveLocked()
}

// leaderStall bounds a write to the leader that was under way when a member
// joined: the others do not wait longer on a leading client that stopped
// reading.
const leaderStall = 10 * time.Second

// joined is called when a member joins a running group: its leader moves to
// a goroutine of its own. The joiner never waits on the leader's client.
func (g *group) joined() {
	g.mu.Lock()
	p := g.leader
	g.mu.Unlock()
	if p == nil {
		return
	}
	if !p.mu.TryLock() {
		// The run is writing to the leader right now. The bound goes on the
		// connection under every wrapper: a wrapper's own deadline state
		// (Caddy's idle timeout writer) belongs to the goroutine writing.
		p.stallMu.Lock()
		if !p.lifted {
			if p.stalled == nil {
				p.stalled = connController(p.w)
			}
			_ = p.stalled.SetWriteDeadline(time.Now().Add(leaderStall))
		}
		p.stallMu.Unlock()
		go func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.goAsyncLocked()
		}()
		return
	}
	defer p.mu.Unlock()
	p.goAsyncLocked()
}

// connController returns a ResponseController for the innermost writer
// under w, whose deadlines any goroutine may set.
func connController(w http.ResponseWriter) *http.ResponseController {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return http.NewResponseController(w)
		}
		w = u.Unwrap()
	}
}

// goAsyncLocked starts the leader's goroutine, which goes on from where the
// run left off. The caller holds p.mu, and not the group's lock.
func (p *pump) goAsyncLocked() {
	if p.async {
		return
	}
	p.async = true
	p.done = make(chan struct{})
	// From now on the leader reads the states, as members do.
	p.g.mu.Lock()
	p.g.endSoloLocked()
	p.g.mu.Unlock()
	if p.ended {
		p.leaveLocked()
		close(p.done)
		return
	}
	go func() {
		defer close(p.done)
		g, res := p.g, &p.res
		// A bound set while the run was writing is lifted, and none is set
		// after this.
		p.stallMu.Lock()
		p.lifted = true
		if p.stalled != nil {
			_ = p.stalled.SetWriteDeadline(time.Time{})
		}
		p.stallMu.Unlock()
		var delivered int64
		defer func() {
			p.delivered += delivered
			p.left = true
			g.leave(p.m, p.delivered)
		}()
		s, _, err := g.awaitCommit(p.ctx, Leader)
		switch {
		case err != nil:
			res.Err = err
			return
		case !s.committed:
			g.sendFailure(p.w, s, res)
			delivered = 1
			return
		}
		res.Header = g.header
		switch {
		case g.stream && p.stream:
			delivered = g.streamFrom(p.ctx, p.w, &p.rc, p.m, p.started, p.pos, res)
		case g.stream:
			delivered = g.sendAssembled(p.ctx, p.w, p.m, res)
		case p.stream:
			delivered = g.sendSynthesized(p.ctx, p.w, res)
		default:
			delivered = g.sendBody(p.ctx, p.w, res)
		}
	}()
}
