package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"
)

var capacityFlag = flag.Bool("capacity", false, "run TestCapacity (same as CB_BENCH=1)")

// capacitySettings bound TestCapacity.
type capacitySettings struct {
	// streams is how many idle streams each target holds at once.
	streams int
	// burst is streams × events sent back to back; paced the same with gap
	// between events, as a model streams tokens.
	burstStreams, burstEvents int
	pacedStreams, pacedEvents int
	pacedGap                  time.Duration
	// cpuRounds is how many times each CPU run is repeated; a burst round
	// lasts a fraction of a second, so bursts run burstRoundsPer times as
	// many rounds, for a median that a few disturbed rounds do not move.
	cpuRounds int
}

const burstRoundsPer = 10

func (s capacitySettings) rounds(cadence string) int {
	if cadence == "burst" {
		return burstRoundsPer * s.cpuRounds
	}
	return s.cpuRounds
}

func capacityFromEnv() (capacitySettings, error) {
	s := capacitySettings{streams: 5000, burstStreams: 8, burstEvents: 20000, pacedStreams: 50, pacedEvents: 1000, pacedGap: 2 * time.Millisecond, cpuRounds: 5}
	if v := os.Getenv("CB_CAPACITY_STREAMS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100_000 {
			return s, fmt.Errorf("CB_CAPACITY_STREAMS=%q: want 1 to 100000", v)
		}
		s.streams = n
	}
	if v := os.Getenv("CB_CAPACITY_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 20 {
			return s, fmt.Errorf("CB_CAPACITY_ROUNDS=%q: want 1 to 20", v)
		}
		s.cpuRounds = n
	}
	return s, nil
}

// Request bodies for the idle streams: a small one, and Claude Code's real
// request (about 49 KB), whose bytes a proxy may keep while the stream lasts.
const (
	bodySmall      = "small"
	bodyClaudeCode = "claude_code"
)

// TestCapacity holds many concurrent idle streams through each target and
// reports the proxy's memory and goroutines per stream, then relays long
// streams and reports the proxy's CPU time per event. The clients and the
// mock upstream run in a helper process, so every number is the Caddy
// process's own. It runs only when asked (CB_BENCH=1 or -capacity): it opens
// 5,000 streams per target and body (CB_CAPACITY_STREAMS), about a minute in
// all.
func TestCapacity(t *testing.T) {
	if !*capacityFlag && os.Getenv("CB_BENCH") != "1" {
		t.Skip("set CB_BENCH=1 or pass -capacity to run the capacity test")
	}
	set, err := capacityFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("CB_CAPACITY_PROFILE") != "" {
		// Every allocation, so that the profiles of two targets compare.
		runtime.MemProfileRate = 1
	}
	limit, err := raiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	// This process holds two descriptors per stream (the client's
	// connection and the upstream one), and so does the helper.
	n := set.streams
	if feasible := int(limit-256) / 2; n > feasible {
		t.Logf("the open file limit (%d) allows %d streams, not %d", limit, feasible, n)
		n = feasible
	}

	p, sites := startCapacitySites(t, targets)

	var rows []capacityRow
	for _, body := range []string{bodySmall, bodyClaudeCode} {
		for _, target := range targets {
			row, err := holdStreams(p, target, sites[target], body, n)
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, row)
		}
	}
	// CPU per event: rounds that rotate the targets, so that the machine's
	// noise falls on all of them; the table takes the median round.
	cpuRows := map[string][]cpuRow{}
	for _, c := range []struct {
		cadence         string
		streams, events int
		gap             time.Duration
	}{
		{"burst", set.burstStreams, set.burstEvents, 0},
		{"paced", set.pacedStreams, set.pacedEvents, set.pacedGap},
	} {
		for round := range set.rounds(c.cadence) {
			k := round % len(targets)
			for _, target := range append(targets[k:len(targets):len(targets)], targets[:k]...) {
				row, err := relayEvents(p, target, sites[target], c.cadence, c.streams, c.events, c.gap)
				if err != nil {
					t.Fatal(err)
				}
				cpuRows[c.cadence] = append(cpuRows[c.cadence], row)
			}
		}
	}
	fmt.Printf("\n%s\n%s\n%s\n", capacityTable(rows, n), cpuTable(cpuRows, set), capacityGoals(rows, cpuRows))
}

// startCapacitySites starts the helper process with its mock and loads a
// site per target in front of it, with an idle timeout that streams held
// open do not trip; the benchmark config comes back when the test ends.
func startCapacitySites(t *testing.T, targets []string) (*peer, map[string]string) {
	t.Helper()
	p := startPeer(t)
	mock, err := p.call("mock")
	if err != nil {
		t.Fatal(err)
	}
	upstreams := map[string]string{}
	for _, target := range targets {
		upstreams[target] = mock[0]
	}
	return p, loadSitesForTest(t, targets, upstreams, "timeouts {\n\t\t\t\tidle 10m\n\t\t\t}")
}

// writeProfile saves a runtime profile: "heap", the live heap, to see what
// the held streams keep, or "goroutine" as text, to see how deep their
// goroutines wait (a goroutine's stack is as large as its deepest call so
// far, rounded up to a power of two).
func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("%s profile: %w", name, err)
	}
	debug := 0
	if name == "goroutine" {
		debug = 1
	}
	if err := pprof.Lookup(name).WriteTo(f, debug); err != nil {
		f.Close()
		return fmt.Errorf("%s profile: %w", name, err)
	}
	return f.Close()
}

// footprint is the process's memory and goroutines at one moment.
type footprint struct {
	heap, stack, rss uint64
	goroutines       int
}

func measureFootprint() footprint {
	// Two collections empty the sync.Pool victim caches, which would
	// otherwise carry the previous target's pooled buffers into this
	// target's baseline; FreeOSMemory collects once more and returns the
	// free pages, so the resident set is comparable too.
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return footprint{heap: ms.HeapInuse, stack: ms.StackInuse, rss: rss(), goroutines: runtime.NumGoroutine()}
}

// rss reads the resident set size on Linux; elsewhere it is 0.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// capacityRow is the cost of one target holding n idle streams.
type capacityRow struct {
	target, body          string
	base, held            footprint
	n                     int
	open                  time.Duration
	bodyBytes             int
	heapPer, stackPer     float64
	rssPer, goroutinesPer float64
}

// holdStreams has the helper open n streams through a target, each read up
// to its first content event, measures, and lets them go.
func holdStreams(p *peer, target, base, body string, n int) (capacityRow, error) {
	row := capacityRow{target: target, body: body, n: n}
	row.base = measureFootprint()
	t0 := time.Now()
	out, err := p.call("hold", base+"/v1/messages?hold=1", strconv.Itoa(n), body)
	if err != nil {
		return row, fmt.Errorf("%s, %s body: %w", target, body, err)
	}
	row.open = time.Since(t0)
	row.bodyBytes, _ = strconv.Atoi(out[0])
	row.held = measureFootprint()
	if dir := os.Getenv("CB_CAPACITY_PROFILE"); dir != "" {
		if err := writeProfile("heap", filepath.Join(dir, fmt.Sprintf("heap-%s-%s.pprof", target, body))); err != nil {
			return row, err
		}
		if err := writeProfile("goroutine", filepath.Join(dir, fmt.Sprintf("goroutines-%s-%s.txt", target, body))); err != nil {
			return row, err
		}
	}
	if _, err := p.call("release"); err != nil {
		return row, fmt.Errorf("%s: %w", target, err)
	}
	// Every stream's goroutines and buffers must go with it.
	deadline := time.Now().Add(time.Minute)
	for runtime.NumGoroutine() > row.base.goroutines+5 {
		if time.Now().After(deadline) {
			return row, fmt.Errorf("%s: %d goroutines a minute after the streams closed, %d before", target, runtime.NumGoroutine(), row.base.goroutines)
		}
		time.Sleep(100 * time.Millisecond)
	}
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	row.heapPer, row.stackPer, row.rssPer = per(row.base.heap, row.held.heap), per(row.base.stack, row.held.stack), per(row.base.rss, row.held.rss)
	row.goroutinesPer = float64(row.held.goroutines-row.base.goroutines) / float64(n)
	return row, nil
}

// cpuRow is the CPU time a target spent relaying a number of events.
type cpuRow struct {
	target, cadence string
	events          int
	cpu             time.Duration
	elapsed         time.Duration
	// gcs and faults are the collections and the page faults (minor and
	// major: memory first touched) in the process while it relayed; they
	// show what a target's allocations cost beyond its own work.
	gcs, faults int64
}

func relayEvents(p *peer, target, base, cadence string, streams, events int, gap time.Duration) (cpuRow, error) {
	row := cpuRow{target: target, cadence: cadence}
	u := fmt.Sprintf("%s/v1/messages?events=%d&gap=%d", base, events, gap.Microseconds())
	// A warm-up opens the connections and fills the pools: as many events as
	// the round, back to back, so that what the round asks of a buffer pool
	// is there, as on a server that relays streams all day, and the round
	// measures relaying them rather than a pool's first fill.
	if _, err := p.call("relay", fmt.Sprintf("%s/v1/messages?events=%d&gap=0", base, events), strconv.Itoa(streams)); err != nil {
		return row, fmt.Errorf("%s %s: %w", target, cadence, err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gc0, faults0 := ms.NumGC, pageFaults()
	cpu0, t0 := processCPU(), time.Now()
	out, err := p.call("relay", u, strconv.Itoa(streams))
	if err != nil {
		return row, fmt.Errorf("%s %s: %w", target, cadence, err)
	}
	row.cpu, row.elapsed = processCPU()-cpu0, time.Since(t0)
	row.faults = pageFaults() - faults0
	runtime.ReadMemStats(&ms)
	row.gcs = int64(ms.NumGC - gc0)
	row.events, _ = strconv.Atoi(out[0])
	if row.events != streams*events {
		return row, fmt.Errorf("%s %s: %d events relayed, want %d", target, cadence, row.events, streams*events)
	}
	return row, nil
}

// memoryGoal is the most an idle stream may cost with the defaults.
const memoryGoal = 64 << 10

func capacityTable(rows []capacityRow, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Memory per idle stream: %d streams per target, each read up to its first content event; this process runs Caddy only.\n", n)
	fmt.Fprintf(&b, "Per stream: heap in use, goroutine stacks, their sum (total), resident set, goroutines. "+
		"Memory ratio = target total ÷ reverse_proxy total with the same body; ≤ 1.00 means no more memory than reverse_proxy.\n\n")
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(w, "| "+strings.Join(cols, "\t| ")+"\t|") }
	row("target", "body", "heap KiB", "stack KiB", "total KiB", "memory ratio vs reverse_proxy", "RSS KiB", "goroutines", "open s")
	row("---", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:")
	rp := map[string]float64{}
	for _, r := range rows {
		if r.target == targetReverseProxy {
			rp[r.body] = r.heapPer + r.stackPer
		}
	}
	for _, r := range rows {
		total := r.heapPer + r.stackPer
		row(r.target, fmt.Sprintf("%s (%s)", r.body, kib(r.bodyBytes)), f1(r.heapPer/1024), f1(r.stackPer/1024), f1(total/1024),
			fmt.Sprintf("%.2f", safeDiv(total, rp[r.body])), f1(r.rssPer/1024), fmt.Sprintf("%.2f", r.goroutinesPer), f1(r.open.Seconds()))
	}
	w.Flush()
	return b.String()
}

func f1(x float64) string { return fmt.Sprintf("%.1f", x) }

func kib(n int) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/1024)
}

// cpuTable has one row per cadence and target: the median of its rounds'
// µs per event, and the median of the per-round ratios against
// reverse_proxy with their range.
func cpuTable(rows map[string][]cpuRow, set capacitySettings) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU per relayed event (this process: Caddy only), rounds rotating the targets. burst: %d rounds of %d streams × %d events back to back; "+
		"paced: %d rounds of %d streams × %d events, %v apart.\n", set.rounds("burst"), set.burstStreams, set.burstEvents,
		set.rounds("paced"), set.pacedStreams, set.pacedEvents, set.pacedGap)
	b.WriteString("CPU ratio = target µs/event ÷ reverse_proxy µs/event in the same round, median [min–max] over rounds; ≤ 1.00 means no more CPU than reverse_proxy.\n" +
		"Collections (besides the one forced before each round) and page faults, medians over rounds: the cost of what a target allocates, paid partly outside its own code.\n\n")
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(w, "| "+strings.Join(cols, "\t| ")+"\t|") }
	row("target", "cadence", "events per round", "µs/event", "CPU ratio vs reverse_proxy", "collections per round", "page faults per 1k events", "wall s")
	row("---", "---", "--:", "--:", "--:", "--:", "--:", "--:")
	for _, cadence := range []string{"burst", "paced"} {
		for _, target := range targets {
			per, ratios, wall, events := cpuOf(rows[cadence], target)
			ratio := "1.00"
			if target != targetReverseProxy {
				ratio = fmt.Sprintf("%.2f [%.2f–%.2f]", median(ratios), slices.Min(ratios), slices.Max(ratios))
			}
			gcs, faults := churnOf(rows[cadence], target)
			row(target, cadence, strconv.Itoa(events), fmt.Sprintf("%.2f", median(per)), ratio, f1(median(gcs)), f1(median(faults)), f1(median(wall)))
		}
	}
	w.Flush()
	return b.String()
}

// cpuOf gathers a target's rounds of one cadence: µs per event, the ratio to
// reverse_proxy's run of the same round, and the wall time. Rows come round
// by round, every target once per round.
func cpuOf(rows []cpuRow, target string) (per, ratios, wall []float64, events int) {
	var rp []float64
	for _, r := range rows {
		if r.target == targetReverseProxy {
			rp = append(rp, perEvent(r))
		}
	}
	for _, r := range rows {
		if r.target != target {
			continue
		}
		i := len(per)
		per = append(per, perEvent(r))
		wall = append(wall, r.elapsed.Seconds())
		if i < len(rp) {
			ratios = append(ratios, safeDiv(perEvent(r), rp[i]))
		}
		events = r.events
	}
	return per, ratios, wall, events
}

// churnOf gathers a target's rounds of one cadence: the collections in
// each, and its page faults per thousand events.
func churnOf(rows []cpuRow, target string) (gcs, faults []float64) {
	for _, r := range rows {
		if r.target == target {
			gcs = append(gcs, float64(r.gcs))
			faults = append(faults, float64(r.faults)*1000/float64(max(r.events, 1)))
		}
	}
	return gcs, faults
}

// capacityGoals states whether the defaults hold an idle stream in less than
// 64 KiB and whether both balancer configurations relay a burst for no more
// CPU per event than reverse_proxy.
func capacityGoals(rows []capacityRow, cpuRows map[string][]cpuRow) string {
	var b strings.Builder
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	b.WriteString("Goals:\n")
	for _, r := range rows {
		if r.target != targetBalancer {
			continue
		}
		total := r.heapPer + r.stackPer
		fmt.Fprintf(&b, "  memory per idle stream with the defaults < 64 KiB, %s body: %.1f KiB (%s)\n", r.body, total/1024, verdict(total < memoryGoal))
	}
	for _, target := range []string{targetBalancerNoDedup, targetBalancer} {
		_, ratios, _, _ := cpuOf(cpuRows["burst"], target)
		fmt.Fprintf(&b, "  CPU per event in a burst ≤ reverse_proxy's, %s: %.2f× (%s)\n", target, median(ratios), verdict(median(ratios) <= 1))
	}
	return b.String()
}

func perEvent(r cpuRow) float64 {
	return float64(r.cpu) / float64(time.Microsecond) / float64(max(r.events, 1))
}

// heldStream is one stream the helper holds open.
type heldStream struct {
	cancel context.CancelFunc
	body   io.Closer
}

// body returns request i's body: distinct for every request, so that no two
// share an upstream call.
func (st *peerState) body(kind string, i int) []byte {
	if kind == bodyClaudeCode {
		return append(fmt.Appendf(nil, `{"x_capacity_stream":%d,`, i), st.fixture[1:]...)
	}
	return fmt.Appendf(nil, `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"stream %d"}]}`, i)
}

func (st *peerState) hold(u string, n int, kind string) (string, error) {
	if kind != bodySmall && kind != bodyClaudeCode {
		return "", fmt.Errorf("unknown body %q", kind)
	}
	var (
		next    atomic.Int64
		mu      sync.Mutex
		wg      sync.WaitGroup
		errOnce sync.Once
		failure error
	)
	for range 64 {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
				ctx, cancel := context.WithCancel(context.Background())
				body, err := st.open(ctx, u, st.body(kind, i))
				if err != nil {
					cancel()
					errOnce.Do(func() { failure = fmt.Errorf("stream %d: %w", i, err) })
					return
				}
				mu.Lock()
				st.held = append(st.held, heldStream{cancel: cancel, body: body})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failure != nil {
		return "", failure
	}
	return strconv.Itoa(len(st.body(kind, n))), nil
}

// open sends a streaming request and reads it up to the end of its first
// content event, leaving the stream open.
func (st *peerState) open(ctx context.Context, u string, body []byte) (io.Closer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := st.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
	}
	br := bufio.NewReaderSize(resp.Body, 512)
	seen := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("reading the first events: %w", err)
		}
		if line == "event: content_block_start\n" {
			seen = true
		} else if seen && line == "\n" {
			return resp.Body, nil
		}
	}
}

func (st *peerState) release() error {
	for _, h := range st.held {
		h.cancel()
		h.body.Close()
	}
	st.held = nil
	st.client.CloseIdleConnections()
	deadline := time.Now().Add(time.Minute)
	for st.active.Load() > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d upstream streams still open a minute after their clients left", st.active.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// relay runs n streams to their end at once and returns the number of
// content events the clients read.
func (st *peerState) relay(u string, n int) (string, error) {
	var (
		total   atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		failure error
	)
	for i := range n {
		wg.Go(func() {
			k, err := st.readAll(u, st.body(bodySmall, i))
			total.Add(int64(k))
			if err != nil {
				errOnce.Do(func() { failure = err })
			}
		})
	}
	wg.Wait()
	if failure != nil {
		return "", failure
	}
	return strconv.FormatInt(total.Load(), 10), nil
}

func (st *peerState) readAll(u string, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := st.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	deltas, stopped := 0, false
	for sc.Scan() {
		switch sc.Text() {
		case "event: content_block_delta":
			deltas++
		case "event: message_stop":
			stopped = true
		}
	}
	if err := sc.Err(); err != nil {
		return deltas, err
	}
	if !stopped {
		return deltas, errors.New("stream ended without message_stop")
	}
	return deltas, nil
}

// serveMock streams message_start and content_block_start, then either holds
// the stream until the client goes (?hold=1) or sends ?events= text deltas
// ?gap= microseconds apart and ends the message.
func (st *peerState) serveMock(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	st.active.Add(1)
	defer st.active.Add(-1)
	q := r.URL.Query()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	events := mockStream()
	for _, ev := range events[:2] {
		_, _ = w.Write(ev)
	}
	if rc.Flush() != nil {
		return
	}
	if q.Get("hold") != "" {
		<-r.Context().Done()
		return
	}
	n, _ := strconv.Atoi(q.Get("events"))
	gap, _ := strconv.Atoi(q.Get("gap"))
	delta := events[3]
	var tick <-chan time.Time
	if gap > 0 {
		tk := time.NewTicker(time.Duration(gap) * time.Microsecond)
		defer tk.Stop()
		tick = tk.C
	}
	for range n {
		if tick != nil {
			select {
			case <-tick:
			case <-r.Context().Done():
				return
			}
		}
		if _, err := w.Write(delta); err != nil || rc.Flush() != nil {
			return
		}
	}
	for _, ev := range events[len(events)-3:] {
		_, _ = w.Write(ev)
	}
	_ = rc.Flush()
}
