// Package dedup shares one upstream call among identical in-flight Messages
// API requests. Requests are found by their Ticket's Pre and matched by Key,
// made when two Pres meet (see Registry.enter), so that a JSON request
// without a twin in flight is never signed (the handler signs a stream at
// intake, since its body goes back to the pool at the commit point, and a
// group kept for replay is signed when it finishes). The first request with
// a given Key leads: its attempt loop
// runs once, in the leader's goroutine, writing the committed response into a
// group, and straight on to the leader's client while nobody else reads it
// (leader.go). Once another client joins, every client, the leader's own
// included, is a member that reads the group and writes to its own
// connection in its own mode (event stream or JSON) from its own goroutine,
// so a slow or departed client never holds up the others or the upstream
// read. Events arrive with what the relay learned of
// them (internal/relay), so the group's write path never parses one (a
// member that wants JSON from a stream reads the events again to build
// it); members are woken once
// per burst. The answer's bytes live in blocks lent by internal/bufpool,
// given back when the group is over and its last member has left. With Options.Off every request runs its own loop straight into
// its client: the handler always goes through a Registry, which knows "off".
// See README.md for the policy.
package dedup

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/clock"
	"github.com/claude-balancer/caddy-claude-balancer/internal/intake"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// Defaults for Options.
const (
	// DefaultWait bounds how long a joiner waits for a leader that has not
	// committed to a response.
	DefaultWait = 3 * time.Minute
	// DefaultMaxBuffer is the number of response bytes a group keeps for
	// clients that join late.
	DefaultMaxBuffer = 16 << 20
	// DefaultMaxLag is how far, in bytes, a member may fall behind the
	// upstream before it is ended as too slow.
	DefaultMaxLag = 4 << 20
	// DefaultMaxReplayBytes bounds the bytes of all the answers kept for
	// replay together; past it the oldest are let go first.
	DefaultMaxReplayBytes = 64 << 20
)

// Options configures a Registry. The zero value turns de-duplication on with
// the defaults above and no replay.
type Options struct {
	// Off turns de-duplication off: Serve runs every request's attempt loop
	// straight into its own client.
	Off bool
	// Wait bounds how long a joiner waits for a leader that has produced no
	// output yet; after that it stops waiting and leads a fresh attempt of its
	// own. Zero or less means DefaultWait.
	Wait time.Duration
	// Replay keeps a finished, successful answer this long, so that an
	// identical request arriving after it finished (a client's retry) gets the
	// stored answer instead of a new upstream call. Zero turns replay off.
	Replay time.Duration
	// MaxBuffer is how many response bytes a group keeps so that late joiners
	// can get the answer from its first byte. A streamed answer that grows
	// past it accepts no new members (an identical request then starts a fresh
	// group), drops the bytes every member has sent, and is not kept for
	// replay. Zero or less means DefaultMaxBuffer.
	MaxBuffer int64
	// MaxLag is how many bytes a member may have left unsent, counted from
	// the moment it joined, before it is ended with an "event: error" frame
	// as too slow. Zero or less means DefaultMaxLag.
	MaxLag int64
	// MaxReplayBytes bounds the bytes of all the answers kept for replay
	// together; the oldest leave first. Zero or less means
	// DefaultMaxReplayBytes.
	MaxReplayBytes int64
	// Clock is the time source; nil means the system clock. It is read once,
	// by New.
	Clock clock.Clock
}

func (o Options) normalized() *Options {
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Replay < 0 {
		o.Replay = 0
	}
	if o.MaxBuffer <= 0 {
		o.MaxBuffer = DefaultMaxBuffer
	}
	if o.MaxLag <= 0 {
		o.MaxLag = DefaultMaxLag
	}
	if o.MaxReplayBytes <= 0 {
		o.MaxReplayBytes = DefaultMaxReplayBytes
	}
	return &o
}

// RunFunc is a request's attempt loop. It runs at most once per group, in
// the leading request's goroutine, and may outlive the leading client (while
// other members still read): its handler does not return before it ends. It writes the committed response into out, or returns the
// failure decided before commit. ctx carries the leading request's values but
// not its cancellation; it is cancelled when the last member leaves.
type RunFunc func(ctx context.Context, out relay.Output) *relay.Failure

// Role is how a request took part in its group.
type Role int

// Roles.
const (
	// Direct: de-duplication was off; the request ran on its own.
	Direct Role = iota
	// Leader: the request's own attempt loop produced the answer.
	Leader
	// Joined: the request shared the answer of an identical one in flight.
	Joined
	// Replayed: the request got the stored answer of an identical one that
	// had finished within the Replay window.
	Replayed
)

func (r Role) String() string {
	switch r {
	case Direct:
		return "direct"
	case Leader:
		return "leader"
	case Joined:
		return "joined"
	case Replayed:
		return "replayed"
	}
	return "unknown"
}

// Result describes what one request got.
type Result struct {
	// Role is how the request took part.
	Role Role
	// WaitExpired reports that the request first joined a leader that stayed
	// silent for Options.Wait, and then led a fresh attempt of its own.
	WaitExpired bool
	// Status is the status sent to the client; 0 when nothing was sent.
	Status int
	// Bytes counts the body bytes sent to the client.
	Bytes int64
	// Header is the header the answer was committed with (shared; read only).
	// It is nil when the group failed before commit.
	Header http.Header
	// Failure is the error response the attempt loop decided before commit,
	// which this client got too.
	Failure *relay.Failure
	// Err says why this client's response ended early: its request context
	// ended, a write failed, ErrTooSlow, or the attempt loop panicked.
	Err error
	// Kept is what the attempt loop kept with its answer (see Keeper), once
	// the run ended; nil before.
	Kept any
}

// Keeper is implemented by a group's Output: an attempt loop keeps a value
// with its answer (what it learned: the usage, the provider), which every
// member's Result carries once the run ended, so that each client is
// accounted as if it had been served alone.
type Keeper interface {
	Keep(v any)
}

// ErrTooSlow ends a member that fell more than Options.MaxLag bytes behind.
var ErrTooSlow = errors.New("dedup: client too slow")

// ErrNoReaders is returned by the group's Output once every member has left:
// the attempt loop should stop and cancel its upstream call.
var ErrNoReaders = errors.New("dedup: no client reads the response any more")

// Stats are counters for metrics. Counts only grow; Active and Groups are
// gauges.
type Stats struct {
	// Runs counts attempt loops started (groups led).
	Runs uint64
	// Joins counts requests that joined a group in flight instead of calling
	// upstream.
	Joins uint64
	// ReplayHits counts requests answered from a finished group's stored
	// answer.
	ReplayHits uint64
	// FanOut counts chunks (stream events, or whole JSON bodies) delivered to
	// members, the leader's client included.
	FanOut uint64
	// SlowEnded counts members ended for falling too far behind.
	SlowEnded uint64
	// WaitExpired counts joiners that gave up on a silent leader.
	WaitExpired uint64
	// Panics counts attempt loops that panicked.
	Panics uint64
	// Active is the number of attempt loops running.
	Active int
	// Groups is the number of groups requests can join or replay (see Len).
	Groups int
}

// Registry holds the groups of in-flight requests. It is safe for concurrent
// use, and meant to live across configuration reloads.
type Registry struct {
	clock clock.Clock
	opts  atomic.Pointer[Options]

	mu sync.Mutex
	// groups holds the groups requests can join or replay, by their
	// leaders' Pre; nearly always one per Pre.
	groups map[intake.Pre][]*group
	// replay holds finished groups kept for replay, in the order they expire;
	// replayBytes is the size of their answers.
	replay      []*group
	replayBytes int64
	armed       bool

	runs, joins, replays, fanOut, slow, waitExpired, panics atomic.Uint64
	active                                                  atomic.Int64
}

// New returns a Registry configured by opts.
func New(opts Options) *Registry {
	r := &Registry{clock: opts.Clock, groups: make(map[intake.Pre][]*group)}
	if r.clock == nil {
		r.clock = clock.System
	}
	r.opts.Store(opts.normalized())
	return r
}

// SetOptions replaces the options for requests that arrive from now on;
// groups already formed keep theirs. The Clock is not replaced.
func (r *Registry) SetOptions(opts Options) { r.opts.Store(opts.normalized()) }

// Len returns the number of groups requests can join or replay: those in
// flight and those kept for replay. A group leaves when it finishes, when its
// replay window ends, when all its clients left, or when it outgrew
// MaxBuffer.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(r.clock.Now())
	n := 0
	for _, gs := range r.groups {
		n += len(gs)
	}
	return n
}

// Stats returns the counters.
func (r *Registry) Stats() Stats {
	return Stats{
		Runs:        r.runs.Load(),
		Joins:       r.joins.Load(),
		ReplayHits:  r.replays.Load(),
		FanOut:      r.fanOut.Load(),
		SlowEnded:   r.slow.Load(),
		WaitExpired: r.waitExpired.Load(),
		Panics:      r.panics.Load(),
		Active:      int(r.active.Load()),
		Groups:      r.Len(),
	}
}

// Serve answers one request whose place in de-duplication is t. stream
// tells whether the client asked for an event stream. If an identical request
// is in flight (or finished within the Replay window) the client gets its
// answer, in its own mode; otherwise run is called, once, and its answer goes
// to this client and to every identical request that joins before it ends.
// Serve returns when this client's response is complete or the client is
// gone, and once run has returned: a group's run goes in its leader's
// goroutine. Before it returns, Serve drops t (see Ticket.Drop), so the
// caller may reuse the body t was prepared from.
//
// With Options.Off, Serve calls run in the calling goroutine with the
// request's own context, writing straight to w.
func (r *Registry) Serve(w http.ResponseWriter, req *http.Request, t Ticket, stream bool, run RunFunc) Result {
	defer t.Drop()
	opts := r.opts.Load()
	if opts.Off {
		return serveDirect(w, req, run)
	}
	var avoid *group
	expired := false
	for {
		g, m, role := r.enter(t, req, avoid, opts)
		switch role {
		case Leader:
			r.runs.Add(1)
			r.active.Add(1)
			res := g.leadInline(w, req, m, stream, run)
			res.WaitExpired = expired
			return res
		case Joined:
			g.joined()
		}
		res, gaveUp := g.serve(w, req, m, stream, role)
		if !gaveUp {
			res.WaitExpired = expired
			return res
		}
		r.waitExpired.Add(1)
		expired = true
		avoid = g
	}
}

func serveDirect(w http.ResponseWriter, req *http.Request, run RunFunc) Result {
	out := &directOutput{ClientOutput: relay.NewClientOutput(w)}
	f := run(req.Context(), out)
	res := Result{Role: Direct, Status: out.Status, Bytes: out.Bytes, Failure: f, Kept: out.kept}
	if out.Started {
		res.Header = w.Header()
	} else if f != nil {
		f.WriteTo(w)
		res.Status, res.Bytes = f.Status, int64(len(f.Body))
	}
	return res
}

// directOutput is a client's own output, keeping what the run kept.
type directOutput struct {
	*relay.ClientOutput
	kept any
}

func (d *directOutput) Keep(v any) { d.kept = v }

// enter joins the group of an identical request, or forms a new one led by
// this request. A group the request already waited on in vain (avoid) is
// replaced if it is still silent.
//
// Groups are found by Pre and matched by Key. A request whose Pre meets no
// group leads a new one unsigned, in the common case the only work
// de-duplication does. Otherwise it signs its own body outside the lock, and
// the groups it meets are signed (once each, from their leaders' bodies,
// which their leaders keep until their runs end) when compared.
func (r *Registry) enter(t Ticket, req *http.Request, avoid *group, opts *Options) (*group, *member, Role) {
	r.mu.Lock()
	r.sweepLocked(r.clock.Now())
	if len(r.groups[t.Pre]) == 0 {
		defer r.mu.Unlock()
		return r.leadLocked(t, req, opts, nil)
	}
	r.mu.Unlock()
	key, signed := t.Key()
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock.Now()
	r.sweepLocked(now)
	var refused *group
	if signed {
		for _, g := range r.groups[t.Pre] {
			if k, ok := g.ticket.Key(); !ok || k != key {
				continue
			}
			if m, role := g.join(now, avoid); m != nil {
				if role == Replayed {
					r.replays.Add(1)
				} else {
					r.joins.Add(1)
				}
				return g, m, role
			}
			refused = g
		}
	}
	return r.leadLocked(t, req, opts, refused)
}

// leadLocked forms a group led by this request. An identical group that
// refused it (replaced) is no longer found: later identical requests join
// the new one.
func (r *Registry) leadLocked(t Ticket, req *http.Request, opts *Options, replaced *group) (*group, *member, Role) {
	if replaced != nil {
		r.unmapLocked(replaced)
	}
	g := newGroup(r, t, req.Context(), opts)
	r.groups[t.Pre] = append(r.groups[t.Pre], g)
	return g, g.lead(), Leader
}

// unmap removes g from the groups requests can join, if it is still there.
func (r *Registry) unmap(g *group) {
	r.mu.Lock()
	r.unmapLocked(g)
	r.mu.Unlock()
}

// unmapLocked removes g from the groups requests can join, if it is there.
func (r *Registry) unmapLocked(g *group) {
	gs := r.groups[g.ticket.Pre]
	switch i := slices.Index(gs, g); {
	case i < 0:
	case len(gs) == 1:
		delete(r.groups, g.ticket.Pre)
	default:
		r.groups[g.ticket.Pre] = slices.Delete(gs, i, i+1)
	}
}

// signed signs t if it is not yet, and reports whether it has a Key.
func signed(t Ticket) bool {
	_, ok := t.Key()
	return ok
}

// mappedLocked reports whether requests can still find g.
func (r *Registry) mappedLocked(g *group) bool {
	return slices.Contains(r.groups[g.ticket.Pre], g)
}

// finished records the end of g's run: it stays joinable for its replay
// window, or leaves now. A group kept for replay is signed now, while its
// leader still holds the body.
func (r *Registry) finished(g *group, replayable bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !replayable || !r.mappedLocked(g) || !signed(g.ticket) {
		r.unmapLocked(g)
		return
	}
	r.replay = append(r.replay, g)
	r.replayBytes += g.total
	// Over the budget, the answers kept longest leave first; they would
	// expire first anyway.
	for limit := r.opts.Load().MaxReplayBytes; r.replayBytes > limit && len(r.replay) > 0; {
		r.dropReplayLocked()
	}
	if !r.armed && len(r.replay) > 0 {
		r.armed = true
		r.clock.AfterFunc(g.replayUntil.Sub(r.clock.Now()), r.sweep)
	}
}

// sweep drops expired replay entries and re-arms itself for the next one.
func (r *Registry) sweep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock.Now()
	r.sweepLocked(now)
	r.armed = false
	if len(r.replay) > 0 {
		r.armed = true
		r.clock.AfterFunc(r.replay[0].replayUntil.Sub(now), r.sweep)
	}
}

func (r *Registry) sweepLocked(now time.Time) {
	for len(r.replay) > 0 && !now.Before(r.replay[0].replayUntil) {
		r.dropReplayLocked()
	}
}

// dropReplayLocked lets go of the oldest answer kept for replay.
func (r *Registry) dropReplayLocked() {
	g := r.replay[0]
	r.unmapLocked(g)
	r.replayBytes -= g.total
	r.replay[0] = nil
	r.replay = r.replay[1:]
	if len(r.replay) == 0 {
		r.replay = nil
	}
}
