package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The load mix, as fractions of the requests a worker starts.
const (
	streamShare = 0.6
	// concurrentDupShare of requests get an identical twin sent while the
	// first is in flight, lateDupShare one sent after it finished (a retry,
	// which replay answers when it is on).
	concurrentDupShare = 0.15
	lateDupShare       = 0.07
	// cancelShare of first requests are abandoned by their client, half after
	// a random delay, half after a random number of events.
	cancelShare = 0.1
	// sessionShare of requests belong to one of sessions Claude Code
	// sessions, which stickiness keeps on one provider; the others carry no
	// session and go where the strategy sends them.
	sessionShare = 0.5
	sessions     = 8
	// requestTimeout bounds every request: an answer that takes longer is a
	// hang.
	requestTimeout = 30 * time.Second
)

// tally counts outcomes and keeps the first violations for the report.
type tally struct {
	mu         sync.Mutex
	outcomes   map[string]int
	violations int
	examples   []string
	// sent counts requests by kind: stream, json, duplicate.
	sent map[string]int
	// resent counts requests sent again after a reload closed their
	// connection before any answer.
	resent int
}

func newTally() *tally { return &tally{outcomes: map[string]int{}, sent: map[string]int{}} }

func (t *tally) add(outcome string) {
	t.mu.Lock()
	t.outcomes[outcome]++
	t.mu.Unlock()
}

func (t *tally) count(kind string) {
	t.mu.Lock()
	t.sent[kind]++
	t.mu.Unlock()
}

func (t *tally) violate(format string, a ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.violations++
	if len(t.examples) < 20 {
		t.examples = append(t.examples, fmt.Sprintf(format, a...))
	}
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.outcomes {
		n += c
	}
	return n + t.violations
}

// lines returns the outcomes sorted by label, one "label: count" each.
func (t *tally) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := sortedKeys(t.outcomes)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%-40s %7d", k, t.outcomes[k])
	}
	return out
}

// generator sends the load.
type generator struct {
	url    string
	client *http.Client
	tally  *tally
	seed   uint64
	// reloads tells when the config was reloaded, nil when it is not.
	reloads *reloadWindow
}

// A reload closes the replaced server's listener and idle connections. A
// request that meets one of them during the reload, or up to reloadGrace
// after it, fails before it gets any answer (the connection is refused, reset
// or closed), and the client sends it again, at most maxResends times, as
// Claude Code's SDK does with connection errors. The replaced server also
// closes each connection it was still answering on once that answer ends,
// which can be long after the reload: a request sent on such a kept-alive
// connection finds it closed, so after any reload a connection closed without
// an answer is sent again too, on a fresh connection (the client lets go of
// its idle ones, since more of them may be closed); a panic, which would look
// the same, is found in Caddy's error log instead. At any other time such an
// error is a violation.
const (
	reloadGrace = time.Second
	maxResends  = 2
)

// reloadWindow tells whether a moment falls during or just after a reload.
type reloadWindow struct{ start, end atomic.Int64 }

func (w *reloadWindow) begin() { w.start.Store(time.Now().UnixNano()) }
func (w *reloadWindow) done()  { w.end.Store(time.Now().UnixNano()) }

// seen reports whether a reload has begun.
func (w *reloadWindow) seen() bool { return w != nil && w.start.Load() != 0 }

// unanswered reports an error of a request whose connection was closed or
// reset before any answer.
func unanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "server closed idle connection")
}

func (w *reloadWindow) near(t time.Time) bool {
	if w == nil {
		return false
	}
	s, e, n := w.start.Load(), w.end.Load(), t.UnixNano()
	return s != 0 && n >= s && (e < s || n-e < int64(reloadGrace))
}

// request is one request of the load and how its client behaves.
type request struct {
	nonce  string
	stream bool
	// session is the request's session, -1 for none.
	session int
	// cancelAfter abandons the request after this long; cancelEvents after
	// this many events of a stream. Zero means never.
	cancelAfter  time.Duration
	cancelEvents int
}

// run sends requests from one worker until ctx ends.
func (g *generator) run(ctx context.Context, worker int) {
	rng := rand.New(rand.NewPCG(g.seed, uint64(worker)))
	var twins sync.WaitGroup
	defer twins.Wait()
	for i := 0; ctx.Err() == nil; i++ {
		r := request{
			nonce:   fmt.Sprintf("w%02d-%06d", worker, i),
			stream:  rng.Float64() < streamShare,
			session: -1,
		}
		if rng.Float64() < sessionShare {
			r.session = rng.IntN(sessions)
		}
		if rng.Float64() < cancelShare {
			if rng.IntN(2) == 0 || !r.stream {
				r.cancelAfter = time.Duration(rng.IntN(60)+1) * time.Millisecond
			} else {
				r.cancelEvents = 1 + rng.IntN(deltas)
			}
		}
		// The twin never cancels: when the first client leaves, the shared
		// answer must still reach it.
		twin := r
		twin.stream, twin.cancelAfter, twin.cancelEvents = rng.Float64() < 0.5, 0, 0
		switch d := rng.Float64(); {
		case d < concurrentDupShare:
			delay := time.Duration(rng.IntN(30)) * time.Millisecond
			twins.Add(1)
			go func() {
				defer twins.Done()
				if pause(ctx, delay) {
					g.do(ctx, twin, "duplicate (concurrent)")
				}
			}()
			g.do(ctx, r, "")
		case d < concurrentDupShare+lateDupShare:
			g.do(ctx, r, "")
			if ctx.Err() == nil {
				g.do(ctx, twin, "duplicate (after the first)")
			}
		default:
			g.do(ctx, r, "")
		}
	}
}

// do sends one request, reads its answer and records the outcome. The end of
// the load (ctx) stops new requests only: one in flight runs to its end.
func (g *generator) do(ctx context.Context, r request, dup string) {
	mode := "json"
	if r.stream {
		mode = "stream"
	}
	if dup != "" {
		mode = dup
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	var abandoned atomic.Bool
	abandon := func() {
		abandoned.Store(true)
		cancel()
	}
	if r.cancelAfter > 0 {
		t := time.AfterFunc(r.cancelAfter, abandon)
		defer t.Stop()
	}
	var onEvent func(int)
	if r.cancelEvents > 0 {
		onEvent = func(n int) {
			if n == r.cancelEvents {
				abandon()
			}
		}
	}
	body := fmt.Appendf(nil, `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":%t,`, r.stream)
	if r.session >= 0 {
		body = fmt.Appendf(body, `"metadata":{"user_id":"user_%064x_account__session_00000000-0000-4000-8000-%012d"},`, r.session, r.session)
	}
	body = fmt.Appendf(body, `"messages":[{"role":"user","content":%q}]}`, r.nonce)
	g.tally.count(mode)
	var resp *http.Response
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(rctx, http.MethodPost, g.url, bytes.NewReader(body))
		if err != nil {
			g.tally.violate("%s: building the request: %v", r.nonce, err)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Anthropic-Version", "2023-06-01")
		resp, err = g.client.Do(req)
		if err == nil {
			break
		}
		switch {
		case abandoned.Load():
			g.tally.add(cancelled)
		case errors.Is(err, context.DeadlineExceeded):
			g.tally.violate("%s (%s): no answer within %v", r.nonce, mode, requestTimeout)
		case attempt < maxResends && (g.reloads.near(time.Now()) || g.reloads.seen() && unanswered(err)):
			if unanswered(err) {
				// Other kept-alive connections the replaced server closed
				// may wait in the pool: the next try takes a fresh one.
				g.client.CloseIdleConnections()
			}
			g.tally.mu.Lock()
			g.tally.resent++
			g.tally.mu.Unlock()
			continue
		default:
			g.tally.violate("%s (%s): %v", r.nonce, mode, err)
		}
		return
	}
	defer resp.Body.Close()
	outcome, err := check(resp, r.stream, answerText(r.nonce), onEvent)
	switch {
	case err == nil:
		g.tally.add(outcome)
	case abandoned.Load() && !errors.Is(err, errWrongAnswer):
		g.tally.add(cancelled)
	default:
		g.tally.violate("%s (%s, provider %s): %v", r.nonce, mode, resp.Header.Get("X-Claude-Balancer-Provider"), err)
	}
}

// describe is the request mix, for the report.
func (t *tally) describe() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := sortedKeys(t.sent)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, t.sent[k])
	}
	return strings.Join(parts, ", ")
}

func TestReloadWindowCoversAReloadAndItsGrace(t *testing.T) {
	var w reloadWindow
	t0 := time.Now()
	if w.near(t0) {
		t.Fatal("near before any reload")
	}
	w.start.Store(t0.UnixNano())
	for _, tt := range []struct {
		name string
		end  time.Duration // after the start; negative while the reload runs
		at   time.Duration // after the start
		want bool
	}{
		{"before the reload", -1, -time.Millisecond, false},
		{"during the reload", -1, 5 * time.Millisecond, true},
		{"just after it", 10 * time.Millisecond, 10*time.Millisecond + reloadGrace/2, true},
		{"long after it", 10 * time.Millisecond, 10*time.Millisecond + 2*reloadGrace, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.end < 0 {
				w.end.Store(t0.UnixNano() - 1)
			} else {
				w.end.Store(t0.Add(tt.end).UnixNano())
			}
			if got := w.near(t0.Add(tt.at)); got != tt.want {
				t.Fatalf("near = %v, want %v", got, tt.want)
			}
		})
	}
	var none *reloadWindow
	if none.near(t0) {
		t.Fatal("a nil window is near")
	}
}
