package dedup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/apierr"
	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
)

// arenaBlock is the size of the blocks small chunks are copied into, so that
// a stream of thousands of events makes a few allocations, not thousands.
// Blocks after the first, and chunks too large for a block, come from the
// buffer pool and go back to it when the group is over and its last member
// has left (recycleLocked): answers then cost the collector nothing.
const arenaBlock = 32 << 10

// firstBlockRoom is what a group's first arena block holds beyond the event
// that opens it.
const firstBlockRoom = 256

// group is one upstream answer shared by its members. The run is its only
// writer (through Start and Write); members read published states
// without taking the lock, so fan-out costs the writer one allocation per
// chunk, and a channel close when members wait, whatever their number; a
// leader reading alone costs it none.
type group struct {
	reg *Registry
	// ticket is the leader's: the group is found by its Pre, and matched
	// by its Key, made when a request with the same Pre first needs it.
	ticket Ticket
	opts   *Options
	ctx    context.Context
	cancel context.CancelFunc

	// state is the latest published view; see state.
	state atomic.Pointer[state]

	// Set once by Start, before committed is published; read only after.
	status int
	header http.Header
	stream bool

	mu       sync.Mutex
	members  []*member
	chunks   []chunk
	base     int64 // absolute index of chunks[0]
	baseOff  int64 // byte offset at which chunks[0] starts
	total    int64 // bytes written
	nextScan int64 // total at which members are next checked for lag
	peak     int64 // most bytes retained at once
	arena    []byte
	// pooled are the arena blocks lent by the buffer pool, given back by
	// recycleLocked; a group that outgrew MaxBuffer lets go of them instead.
	pooled   [][]byte
	recycled bool
	// lastAt is where the last chunk starts in arena, or -1 when it is not
	// there; pubEnd is the absolute index just past the last chunk of the
	// latest published state. Events of one burst go into one chunk: an
	// event extends the last chunk while no state has shown it.
	lastAt    int
	pubEnd    int64
	full      bool // outgrew MaxBuffer: no new members, no replay
	abandoned bool // every member left before the run ended
	sawStop   bool
	sawError  bool

	// Set by finish before the group is offered for replay; read only after.
	replayUntil time.Time

	// leader is the leading client while the run serves it (see leader.go).
	leader *pump
	// solo is set while the leader alone reads the answer, written to by
	// the run's own goroutine: the states the run publishes then carry its
	// flags, not each burst's chunks, which the leader takes from the group
	// (published, through soloView, the run goroutine's alone). A member
	// that joins, or the leader's move to a goroutine of its own, ends it
	// and publishes every chunk first (endSoloLocked).
	solo     bool
	soloView state

	// The leader's member and pump, and room for the members slice's
	// first element, live in the group: a group and its leader are one
	// allocation, not four.
	leaderMember member
	leaderPump   pump
	firstMembers [1]*member

	// kept is what the run kept (Keep); members read it once done. It
	// holds a *balancer.Result-like pointer, stored without a box.
	kept atomic.Value

	bodyOnce  sync.Once
	body      []byte
	synthOnce sync.Once
	synth     [][]byte
	synthErr  error
}

// state is an immutable snapshot of a group. Chunks before len(chunks) never
// change, so members read them without the lock; a new state is published for
// every change, and the previous state's notify channel, if a member asked for
// one (changed), is closed to wake the members waiting on it. While the leader
// alone reads the answer (solo), only changes of the flags are published, and
// nobody waits on them.
type state struct {
	chunks []chunk
	base   int64
	// notify is made by changed and closed when the next state is
	// published; both under the group's lock.
	notify    chan struct{}
	committed bool
	done      bool
	failure   *relay.Failure
	runErr    error
}

type chunk struct {
	data []byte
	end  int64 // byte offset just after this chunk
}

// member is one client of a group.
type member struct {
	// pos is the absolute index of the next chunk the member will send.
	pos atomic.Int64
	// joinPos is where the group stood when the member joined: what came
	// before is history, and reading it slowly is not lagging.
	joinPos int64
	dropped atomic.Bool
}

func newGroup(r *Registry, t Ticket, reqCtx context.Context, opts *Options) *group {
	// The upstream call must outlive the leading client (other members may
	// still read it) and a configuration reload, so it keeps only the
	// request's values and is cancelled by the group itself.
	ctx, cancel := context.WithCancel(context.WithoutCancel(reqCtx))
	g := &group{reg: r, ticket: t, opts: opts, ctx: ctx, cancel: cancel, nextScan: opts.MaxLag / 8}
	g.members = g.firstMembers[:0]
	g.state.Store(&state{})
	return g
}

// lead adds the group's first member, its leader.
func (g *group) lead() *member {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := &g.leaderMember
	g.members = append(g.members, m)
	return m
}

// join adds a member if the group can still take one. It is called with the
// registry's lock held.
func (g *group) join(now time.Time, avoid *group) (*member, Role) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.abandoned || g.full {
		return nil, 0
	}
	s := g.state.Load()
	role := Joined
	switch {
	case s.done:
		if g.replayUntil.IsZero() || !now.Before(g.replayUntil) {
			return nil, 0
		}
		role = Replayed
	case g == avoid && !s.committed:
		return nil, 0
	}
	m := &member{joinPos: g.base + int64(len(g.chunks))}
	g.members = append(g.members, m)
	g.endSoloLocked()
	return m, role
}

// endSoloLocked makes the states carry every chunk again, from a state
// published now with those written so far. The caller holds g.mu.
func (g *group) endSoloLocked() {
	if !g.solo {
		return
	}
	g.solo = false
	old := g.state.Load()
	if old.base == g.base && len(old.chunks) == len(g.chunks) {
		return
	}
	s := *old
	s.chunks, s.base, s.notify = g.chunks, g.base, nil
	g.pubEnd = g.base + int64(len(g.chunks))
	g.state.Store(&s)
	// Nobody waited on a state while the leader read alone.
	wakeUp(old.notify)
}

// leave removes m; the last member to leave a running group cancels it.
func (g *group) leave(m *member, delivered int64) {
	g.reg.fanOut.Add(uint64(delivered))
	g.mu.Lock()
	for i, x := range g.members {
		if x == m {
			last := len(g.members) - 1
			g.members[i] = g.members[last]
			g.members[last] = nil
			g.members = g.members[:last]
			break
		}
	}
	done := g.state.Load().done
	abandon := len(g.members) == 0 && !done && !g.abandoned
	if abandon {
		g.abandoned = true
	}
	if done {
		g.recycleLocked()
	}
	g.mu.Unlock()
	if abandon {
		g.cancel()
		g.reg.unmap(g)
	}
}

// run calls the attempt loop and publishes its end.
func (g *group) run(fn RunFunc) {
	var (
		f    *relay.Failure
		perr error
	)
	func() {
		// A panic of the attempt loop ends the group with an error for
		// every member, not just the leader's connection.
		defer func() {
			if v := recover(); v != nil {
				g.reg.panics.Add(1)
				perr = fmt.Errorf("dedup: attempt loop panicked: %v\n%s", v, debug.Stack())
				f = relay.NewFailure(http.StatusInternalServerError, apierr.API, "internal error")
			}
		}()
		f = fn(g.ctx, g)
	}()
	g.finish(f, perr)
}

func (g *group) finish(f *relay.Failure, perr error) {
	g.mu.Lock()
	old := g.state.Load()
	s := *old
	switch {
	case !s.committed:
		if f == nil {
			f = relay.NewFailure(http.StatusBadGateway, apierr.API, "the upstream call ended without a response")
		}
		s.failure = f
	case f == nil:
	case g.stream:
		// A failure after commit can only end the stream, the way the API
		// does, and every member sees the same frame; a stream that already
		// ended keeps its end.
		if !g.sawStop && !g.sawError {
			typ, msg, ok := apierr.Parse(f.Body)
			if !ok || typ == "" {
				typ, msg = apierr.TypeForStatus(f.Status), f.Message()
			}
			g.appendLocked(apierr.Frame(typ, msg), anthropic.EventError)
		}
	case g.total == 0:
		s.failure = f
	}
	s.done = true
	s.runErr = perr
	s.chunks, s.base = g.chunks, g.base
	g.pubEnd = g.base + int64(len(g.chunks))
	replayable := g.opts.Replay > 0 && s.committed && s.failure == nil && perr == nil &&
		g.status >= 200 && g.status < 300 && !g.full && !g.abandoned &&
		g.total > 0 && g.total <= g.opts.MaxBuffer && (!g.stream || (g.sawStop && !g.sawError))
	if replayable {
		g.replayUntil = g.reg.clock.Now().Add(g.opts.Replay)
	}
	s.notify = nil
	g.state.Store(&s)
	g.recycleLocked()
	wake := old.notify
	g.mu.Unlock()
	wakeUp(wake)
	g.cancel()
	g.reg.finished(g, replayable)
	g.reg.active.Add(-1)
}

// Keep implements Keeper. A run keeps one value, of one type, or none.
func (g *group) Keep(v any) {
	if v != nil {
		g.kept.Store(v)
	}
}

// keptValue returns what the run kept, or nil.
func (g *group) keptValue() any { return g.kept.Load() }

// Start implements relay.Output.
func (g *group) Start(status int, header http.Header, stream bool) error {
	g.mu.Lock()
	old := g.state.Load()
	switch {
	case len(g.members) == 0 || g.abandoned:
		g.mu.Unlock()
		return ErrNoReaders
	case old.committed || old.done:
		g.mu.Unlock()
		return errors.New("dedup: response started twice")
	}
	// The header is the output's from now on (relay.Output).
	g.status, g.header, g.stream = status, header, stream
	if g.header == nil {
		g.header = http.Header{}
	}
	s := *old
	s.committed = true
	s.notify = nil
	g.state.Store(&s)
	wake := old.notify
	g.mu.Unlock()
	wakeUp(wake)
	if stream {
		// The stream's headers go to the leader at once, as the API sends
		// them.
		g.published()
	}
	return nil
}

// Body implements relay.Output: a whole JSON answer. p is copied.
func (g *group) Body(p []byte) error {
	return g.write(p, anthropic.EventUnknown, false)
}

// Event implements relay.Output. The event's bytes are copied; what the relay
// learned of it says whether the stream ended. Members are woken once per
// burst: an event with more behind it waits for the last one.
func (g *group) Event(ev relay.Event, more bool) error {
	return g.write(ev.Raw, ev.Info.Type, more)
}

func (g *group) write(p []byte, typ anthropic.EventType, more bool) error {
	g.mu.Lock()
	old := g.state.Load()
	switch {
	case len(g.members) == 0 || g.abandoned:
		g.mu.Unlock()
		return ErrNoReaders
	case !old.committed || old.done:
		g.mu.Unlock()
		return errors.New("dedup: write outside a started response")
	}
	g.appendLocked(p, typ)
	unmap := false
	if g.stream {
		if !g.full && g.total > g.opts.MaxBuffer {
			// The chunks every member has sent go from now on (scanLocked),
			// and their blocks with them, to the collector.
			g.full, unmap = true, true
			g.pooled = nil
		}
		if g.total >= g.nextScan {
			g.scanLocked()
		}
	}
	if more && !unmap {
		g.mu.Unlock()
		return nil
	}
	if g.solo && !unmap {
		// The leader alone reads: it takes the chunks from the group, and
		// no state need show them.
		g.mu.Unlock()
		g.published()
		return nil
	}
	s := &state{chunks: g.chunks, base: g.base, committed: true}
	g.pubEnd = g.base + int64(len(g.chunks))
	g.state.Store(s)
	wake := old.notify
	g.mu.Unlock()
	wakeUp(wake)
	if unmap {
		g.reg.unmap(g)
	}
	g.published()
	return nil
}

func (g *group) appendLocked(p []byte, typ anthropic.EventType) {
	g.total += int64(len(p))
	switch n := len(g.chunks); {
	case n > 0 && g.lastAt >= 0 && g.base+int64(n) > g.pubEnd && len(p) <= cap(g.arena)-len(g.arena):
		// The last chunk is unpublished and ends where the arena does:
		// this event joins it.
		g.arena = append(g.arena, p...)
		g.chunks[n-1] = chunk{data: g.arena[g.lastAt:len(g.arena):len(g.arena)], end: g.total}
	case len(p) > arenaBlock/4:
		b := append(g.lend(len(p)), p...)
		g.chunks = append(g.chunks, chunk{data: b[:len(p):len(p)], end: g.total})
		g.lastAt = -1
	default:
		if cap(g.arena)-len(g.arena) < len(p) {
			// Blocks grow from small, so that a short answer, or a stream
			// that waits after its first events, does not hold a full
			// block: the first holds this event and room for the few
			// small ones that come with it (a stream's content_block_start
			// and ping after its message_start), made to measure; the
			// next are lent by the pool, each twice the last. A JSON
			// answer comes whole: its block is lent from the start.
			if g.arena == nil && g.stream {
				g.arena = make([]byte, 0, len(p)+firstBlockRoom)
			} else {
				g.arena = g.lend(min(max(2*cap(g.arena), len(p)), arenaBlock))
			}
		}
		start := len(g.arena)
		g.arena = append(g.arena, p...)
		g.chunks = append(g.chunks, chunk{data: g.arena[start:len(g.arena):len(g.arena)], end: g.total})
		g.lastAt = start
	}
	g.peak = max(g.peak, g.total-g.baseOff)
	switch typ {
	case anthropic.EventMessageStop:
		g.sawStop = true
	case anthropic.EventError:
		g.sawError = true
	}
}

// lend returns an empty buffer for at least n bytes, lent by the pool while
// the group can give it back (see recycleLocked).
func (g *group) lend(n int) []byte {
	if g.full {
		return make([]byte, 0, n)
	}
	b := bufpool.Get(n)
	g.pooled = append(g.pooled, b)
	return b
}

// recycleLocked gives the arena's pooled blocks back once nothing can read
// them again: the run is over, every member has left, and the answer is not
// kept for replay (a replayed group's blocks go to the collector when it
// expires). Nobody joins such a group (join), so its chunks are unread from
// here on.
func (g *group) recycleLocked() {
	if g.recycled || len(g.members) > 0 || !g.replayUntil.IsZero() || !g.state.Load().done {
		return
	}
	g.recycled = true
	for _, b := range g.pooled {
		bufpool.Put(b)
	}
	g.pooled, g.arena, g.lastAt = nil, nil, -1
}

// scanLocked ends members that fell more than MaxLag behind and, once the
// group is full, lets go of the chunks every remaining member has sent. It
// runs every MaxLag/8 bytes, so its cost per chunk stays small.
func (g *group) scanLocked() {
	end := g.base + int64(len(g.chunks))
	low := end
	for _, m := range g.members {
		if m.dropped.Load() {
			continue
		}
		pos := m.pos.Load()
		if g.total-g.offsetAt(max(pos, m.joinPos)) > g.opts.MaxLag {
			// The member notices when it next wakes, which this write's
			// notification guarantees.
			m.dropped.Store(true)
			continue
		}
		low = min(low, pos)
	}
	if g.full && low > g.base {
		n := low - g.base
		g.baseOff = g.chunks[n-1].end
		// A fresh slice: states already published keep the old one intact.
		rest := make([]chunk, int64(len(g.chunks))-n, int64(len(g.chunks))-n+64)
		copy(rest, g.chunks[n:])
		g.chunks, g.base = rest, low
	}
	g.nextScan = g.total + max(g.opts.MaxLag/8, 1)
}

// changed returns a channel that is closed once a state newer than s is
// published (at once when one is).
func (g *group) changed(s *state) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state.Load() != s {
		return closedChan
	}
	if s.notify == nil {
		s.notify = make(chan struct{})
	}
	return s.notify
}

// closedChan is a closed channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wakeUp closes the notify channel of a state just replaced, if a member
// asked for one.
func wakeUp(notify chan struct{}) {
	if notify != nil {
		close(notify)
	}
}

// offsetAt returns the byte offset at which chunk idx starts.
func (g *group) offsetAt(idx int64) int64 {
	if idx <= g.base {
		return g.baseOff
	}
	return g.chunks[idx-g.base-1].end
}

// jsonBody returns the whole body of a finished JSON group.
func (g *group) jsonBody(s *state) []byte {
	g.bodyOnce.Do(func() {
		if len(s.chunks) == 1 {
			g.body = s.chunks[0].data
			return
		}
		for _, c := range s.chunks {
			g.body = append(g.body, c.data...)
		}
	})
	return g.body
}

// synthesized returns the event stream of a finished JSON group's message.
func (g *group) synthesized(s *state) ([][]byte, error) {
	g.synthOnce.Do(func() { g.synth, g.synthErr = anthropic.Synthesize(g.jsonBody(s)) })
	return g.synth, g.synthErr
}

// Interface guards
var (
	_ relay.Output = (*group)(nil)
	_ Keeper       = (*group)(nil)
)
