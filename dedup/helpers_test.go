package dedup

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-balancer/caddy-claude-balancer/internal/anthropic"
	"github.com/claude-balancer/caddy-claude-balancer/internal/clock"
	"github.com/claude-balancer/caddy-claude-balancer/internal/relay"
	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// eventually polls cond until it holds or a deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkClean makes the test fail unless, once it is over, no group is left in
// r, no run is active and no goroutine it started is still running.
func checkClean(t *testing.T, r *Registry) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		eventually(t, "no group left", func() bool { return r.Len() == 0 && r.Stats().Active == 0 })
		eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base })
	})
}

type fakeClock = clock.Fake

func newFakeClock() *fakeClock { return clock.NewFake(time.Unix(1_800_000_000, 0)) }

// streamRig is a registry checked clean after the test, with a run that
// answers the stream fixture at once and counts its calls.
func streamRig(t *testing.T, opts Options) (r *Registry, calls *countedCalls, run RunFunc, events [][]byte) {
	t.Helper()
	r = New(opts)
	checkClean(t, r)
	events = fixtureEvents(t, streamFixture)
	calls = &countedCalls{}
	return r, calls, streamRun(calls, nil, events), events
}

// client is one simulated HTTP client calling Serve in its own goroutine.
type client struct {
	w      *httptest.ResponseRecorder
	res    Result
	cancel context.CancelFunc
	done   chan struct{}
}

func startClient(r *Registry, key Ticket, stream bool, run RunFunc) *client {
	return startClientWriter(r, key, stream, run, nil)
}

// startClientWriter is startClient writing through w when it is not nil (the
// recorder then stays empty).
func startClientWriter(r *Registry, key Ticket, stream bool, run RunFunc, w http.ResponseWriter) *client {
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/messages", nil)
	c := &client{w: httptest.NewRecorder(), cancel: cancel, done: make(chan struct{})}
	if w == nil {
		w = c.w
	}
	go func() {
		defer close(c.done)
		defer cancel()
		c.res = r.Serve(w, req, key, stream, run)
	}()
	return c
}

func (c *client) wait(t testing.TB) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not finish")
	}
}

func (c *client) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// fixtureEvents returns the events of a recorded stream, each as its bytes.
func fixtureEvents(t testing.TB, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	rd := sse.NewReader(bytes.NewReader(b))
	var evs [][]byte
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			return evs
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			t.Fatal(err)
		}
		evs = append(evs, ev.Raw)
		if err != nil {
			return evs
		}
	}
}

func streamHeader() http.Header {
	return http.Header{
		"Content-Type":               {"text/event-stream; charset=utf-8"},
		"Request-Id":                 {"req_011CUpstream"},
		"X-Claude-Balancer-Provider": {"anthropic"},
	}
}

func jsonHeader() http.Header {
	return http.Header{
		"Content-Type":               {"application/json"},
		"Request-Id":                 {"req_011CUpstream"},
		"X-Claude-Balancer-Provider": {"anthropic"},
	}
}

// gate holds a run back until the test opens it, and tells the test when the
// run started.
type gate struct {
	started chan struct{}
	open    chan struct{}
	once    sync.Once
}

func newGate() *gate { return &gate{started: make(chan struct{}), open: make(chan struct{})} }

// pass is called by the run: it reports the start and waits for the gate.
func (g *gate) pass(ctx context.Context) error {
	g.once.Do(func() { close(g.started) })
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// streamRun returns an attempt loop that commits to a 200 event stream and
// writes events, after the gate (if any) opens.
func streamRun(calls *countedCalls, g *gate, events [][]byte) RunFunc {
	return func(ctx context.Context, out relay.Output) *relay.Failure {
		calls.add()
		if g != nil {
			if err := g.pass(ctx); err != nil {
				return relay.NewFailure(499, "api_error", "cancelled")
			}
		}
		if err := out.Start(http.StatusOK, streamHeader(), true); err != nil {
			return nil
		}
		for _, ev := range events {
			if err := writeEvent(out, ev); err != nil {
				return nil
			}
		}
		return nil
	}
}

// jsonRun returns an attempt loop that commits to a JSON body.
func jsonRun(calls *countedCalls, g *gate, status int, body []byte) RunFunc {
	return func(ctx context.Context, out relay.Output) *relay.Failure {
		calls.add()
		if g != nil {
			if err := g.pass(ctx); err != nil {
				return relay.NewFailure(499, "api_error", "cancelled")
			}
		}
		if err := out.Start(status, jsonHeader(), false); err != nil {
			return nil
		}
		_ = out.Body(body)
		return nil
	}
}

type countedCalls struct {
	mu sync.Mutex
	n  int
}

func (c *countedCalls) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *countedCalls) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// blockingWriter is a ResponseWriter whose body writes block until release is
// closed, like a client that stopped reading.
type blockingWriter struct {
	header  http.Header
	release chan struct{}
	mu      sync.Mutex
	body    bytes.Buffer
	status  int
	blocked chan struct{}
	once    sync.Once
}

func newBlockingWriter() *blockingWriter {
	return &blockingWriter{header: http.Header{}, release: make(chan struct{}), blocked: make(chan struct{})}
}

func (b *blockingWriter) Header() http.Header { return b.header }

func (b *blockingWriter) WriteHeader(status int) { b.status = status }

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.blocked) })
	<-b.release
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.body.Write(p)
}

func (b *blockingWriter) Flush() {}

func (b *blockingWriter) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.body.Bytes())
}

// countingWriter is a recorder that also counts body bytes, readable while
// it is being written.
type countingWriter struct {
	*httptest.ResponseRecorder
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseRecorder.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// caughtUp reports whether every member in ms has taken all of g's chunks.
func (g *group) caughtUp(ms []*member) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	end := g.base + int64(len(g.chunks))
	for _, m := range ms {
		if m.pos.Load() < end {
			return false
		}
	}
	return true
}

// writeEvent delivers one raw event the way the relay does, with what it
// learns reading it.
func writeEvent(out relay.Output, raw []byte) error {
	rd := sse.NewReader(bytes.NewReader(raw))
	defer rd.Release()
	ev, _ := rd.Next()
	info, _ := anthropic.Inspect(ev.Name, ev.Data)
	return out.Event(relay.Event{Raw: raw, Data: ev.Data, Info: info}, false)
}

// groupMembers returns the members of the registry's only group, or -1.
func groupMembers(r *Registry) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, gs := range r.groups {
		g := gs[0]
		g.mu.Lock()
		n := len(g.members)
		g.mu.Unlock()
		return n
	}
	return -1
}
