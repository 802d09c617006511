package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/claude-balancer/caddy-claude-balancer"
)

var (
	soakFlag     = flag.Bool("soak", false, "run TestSoak (same as CB_SOAK=1)")
	durationFlag = flag.Duration("soak.duration", 2*time.Minute, "how long TestSoak sends load")
	shortFlag    = flag.Bool("soak.short", false, "send load for "+shortDuration.String()+" instead of -soak.duration (the CI form)")
	workersFlag  = flag.Int("soak.workers", 16, "concurrent clients")
	faultsFlag   = flag.Float64("soak.faults", 0.3, "fraction of the flaky provider's answers that fail")
	reloadFlag   = flag.Duration("soak.reload", 3*time.Second, "interval between config reloads")
	seedFlag     = flag.Uint64("soak.seed", 1, "seed of the request mix and the faults")
	settleFlag   = flag.Duration("soak.settle", 30*time.Second, "longest wait, after the load, for goroutines, heap and dedup groups to come back")
)

const shortDuration = 20 * time.Second

// Leak tolerances: after the load, with every connection closed, the process
// must come back within these bounds of where it started.
const (
	goroutineSlack = 10
	heapSlack      = 4 << 20
)

// started is set once Caddy runs, so TestMain stops only what was started.
var started bool

func TestMain(m *testing.M) {
	// Keep Caddy's autosave and data out of the user's directories.
	dir, err := os.MkdirTemp("", "claude-balancer-soak-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	code := m.Run()
	if started {
		if err := caddy.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping caddy:", err)
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestSoak runs the load for -soak.duration against three providers (one
// failing -soak.faults of its answers in assorted ways) while the config is
// reloaded every -soak.reload, then checks every answer and that nothing was
// left behind.
func TestSoak(t *testing.T) {
	if !*soakFlag && os.Getenv("CB_SOAK") != "1" {
		t.Skip("set CB_SOAK=1 or pass -soak to run the soak test")
	}
	d := *durationFlag
	if *shortFlag {
		d = shortDuration
	}
	if d <= 0 || *workersFlag < 1 || *workersFlag > 256 || *faultsFlag < 0 || *faultsFlag > 1 || *reloadFlag < 100*time.Millisecond || *settleFlag <= 0 {
		t.Fatalf("bad flags: duration %v, workers %d, faults %v, reload %v", d, *workersFlag, *faultsFlag, *reloadFlag)
	}
	s := newSoak(t, *faultsFlag, *seedFlag)

	// Warm up, so that the baseline includes what the first requests set up
	// once (pools, metrics series, compiled templates).
	warm := &generator{url: s.base + "/v1/messages", client: s.client, tally: newTally(), seed: *seedFlag + 1000}
	for i, stream := range []bool{true, false, true, false} {
		warm.do(context.Background(), request{nonce: fmt.Sprintf("warm-%d", i), stream: stream, session: -1}, "")
	}
	if warm.tally.violations > 0 {
		t.Fatalf("warm-up failed: %v", warm.tally.examples)
	}
	base := s.settle(0)
	before := s.counters()

	tally := newTally()
	rl := &reloads{}
	gen := &generator{url: s.base + "/v1/messages", client: s.client, tally: tally, seed: *seedFlag, reloads: &rl.window}
	ctx, stop := context.WithTimeout(context.Background(), d)
	defer stop()
	var bg sync.WaitGroup
	peak := &peaks{}
	bg.Add(2)
	go func() { defer bg.Done(); s.reloadEvery(ctx, *reloadFlag, rl) }()
	go func() { defer bg.Done(); peak.sample(ctx, 500*time.Millisecond) }()
	began := time.Now()
	var workers sync.WaitGroup
	for w := range *workersFlag {
		workers.Add(1)
		go func() { defer workers.Done(); gen.run(ctx, w) }()
	}
	workers.Wait()
	loadTime := time.Since(began)
	stop()
	bg.Wait()

	after := s.counters()
	settleStart := time.Now()
	end, settled := s.settleBack(rl.last, base)
	settleTime := time.Since(settleStart)

	t.Logf("soak: %v of load, %d workers, seed %d, flaky provider failing %.0f%% of its answers",
		loadTime.Round(time.Second), *workersFlag, *seedFlag, 100**faultsFlag)
	t.Logf("requests: %d (%.0f/s): %s", tally.total(), float64(tally.total())/loadTime.Seconds(), tally.describe())
	for _, l := range tally.lines() {
		t.Logf("  %s", l)
	}
	t.Logf("  %-40s %7d", "violations", tally.violations)
	for _, p := range s.providers {
		var parts []string
		for f := range numFaults {
			if n := p.served[f].Load(); n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", f, n))
			}
		}
		if n := p.limited.Load(); n > 0 {
			parts = append(parts, fmt.Sprintf("429 for a full window %d", n))
		}
		t.Logf("provider %-7s answered: %s", p.name, strings.Join(parts, ", "))
	}
	failovers := after.diff(before, "claude_balancer_failovers_total")
	t.Logf("failovers: %d", sum(failovers))
	for _, k := range sortedKeys(failovers) {
		t.Logf("  %-50s %6d", k, failovers[k])
	}
	t.Logf("dedup: %d upstream runs, %d joins, %d replay hits, %d slow clients ended",
		after.dedup.Runs-before.dedup.Runs, after.dedup.Joins-before.dedup.Joins,
		after.dedup.ReplayHits-before.dedup.ReplayHits, after.dedup.SlowEnded-before.dedup.SlowEnded)
	t.Logf("reloads: %d, %v on average, %v at most; %d requests sent again after a reload closed their connection unanswered",
		rl.count, rl.mean().Round(time.Millisecond), rl.max.Round(time.Millisecond), tally.resent)
	t.Logf("goroutines: %d before, %d at peak, %d after (slack %d; %v after the load)",
		base.goroutines, peak.goroutines, end.goroutines, goroutineSlack, settleTime.Round(time.Millisecond))
	t.Logf("heap in use: %s before, %s at peak, %s after (slack %s)", mib(base.heap), mib(peak.heap), mib(end.heap), mib(heapSlack))

	for _, e := range tally.examples {
		t.Errorf("violation: %s", e)
	}
	if tally.violations > len(tally.examples) {
		t.Errorf("... and %d more violations", tally.violations-len(tally.examples))
	}
	for _, err := range rl.errs {
		t.Errorf("reload: %v", err)
	}
	// A panic in a handler reaches the client as a connection closed
	// without an answer, which a reload can explain too: the log tells.
	if logged, err := os.ReadFile(s.errorLog); err == nil {
		for _, line := range strings.Split(string(logged), "\n") {
			if strings.Contains(strings.ToLower(line), "panic") {
				t.Errorf("Caddy logged a panic: %.2000s", line)
			}
		}
	}
	for _, p := range s.providers {
		if n := p.rejected.Load(); n > 0 {
			t.Errorf("provider %s got %d requests that were not the client's (wrong key, path or body)", p.name, n)
		}
	}
	if !settled {
		var open []string
		for _, p := range s.providers {
			open = append(open, fmt.Sprintf("%s %d", p.name, p.conns.Load()))
		}
		t.Errorf("no return to baseline within %v: %d goroutines (baseline %d), heap %s (baseline %s), dedup %d in flight / %d groups, "+
			"%v requests in flight, connections still open to the providers: %s",
			*settleFlag, end.goroutines, base.goroutines, mib(end.heap), mib(base.heap), end.dedup.InFlight, end.dedup.Groups,
			end.inFlight, strings.Join(open, ", "))
		s.client.CloseIdleConnections()
		t.Logf("goroutines by where they wait and who started them:\n%s", goroutineSummary())
	}
	// The mix must have exercised what it is for; with no faults asked,
	// failovers are not expected.
	if tally.outcomes[okStream] == 0 || tally.outcomes[okJSON] == 0 || tally.outcomes[cancelled] == 0 {
		t.Errorf("the load lacks a kind of outcome: %v", tally.lines())
	}
	if *faultsFlag > 0 && sum(failovers) == 0 {
		t.Errorf("no failover with a failing provider")
	}
	if after.dedup.Joins == before.dedup.Joins {
		t.Errorf("no duplicate joined a request in flight")
	}
	if rl.count == 0 && d > *reloadFlag {
		t.Errorf("no reload happened")
	}
}

// soak is the running setup: Caddy and the mock providers.
type soak struct {
	t         *testing.T
	providers []*mockProvider
	site      int
	metrics   int
	base      string
	client    *http.Client
	// pools counts settles: each uses new upstream connection settings, so
	// the providers' connection pools of the load (warm, idle, and shared
	// by every config with the same settings) are closed before measuring.
	pools atomic.Int32
	// errorLog is where Caddy writes its errors: a handler's panic, which
	// net/http answers by closing the connection, is found there.
	errorLog string
}

func newSoak(t *testing.T, faults float64, seed uint64) *soak {
	s := &soak{t: t, errorLog: filepath.Join(t.TempDir(), "caddy-errors.log")}
	for i, spec := range []providerSpec{
		{name: "flaky", faultRate: faults},
		// Two subscription accounts whose windows fill and reset: each
		// approaches its limit, is steered away from, hits it now and then,
		// cools down until the reset and comes back.
		{name: "steady", quotaStep: 0.01, quotaWindow: 2 * time.Second},
		{name: "backup", firstByte: 20 * time.Millisecond, quotaStep: 0.02, quotaWindow: 3 * time.Second},
	} {
		p := newMockProvider(spec, seed+uint64(i))
		t.Cleanup(p.srv.Close)
		s.providers = append(s.providers, p)
	}
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	s.site, s.metrics = ports[0], ports[1]
	s.base = fmt.Sprintf("http://127.0.0.1:%d", s.site)
	s.client = &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
	}}
	t.Cleanup(s.client.CloseIdleConnections)
	if err := s.load(0, false); err != nil {
		t.Fatal(err)
	}
	started = true
	return s
}

var strategies = []string{"priority", "round_robin", "least_latency", "random", "headroom"}

// caddyfile returns config variant n: the strategy turns at every reload and
// replay of finished answers is on in every other round of strategies.
func (s *soak) caddyfile(n int) string {
	dedup := ""
	if (n/len(strategies))%2 == 1 {
		dedup = "dedup {\n\t\t\treplay 2s\n\t\t}"
	}
	var providers strings.Builder
	for _, p := range s.providers {
		fmt.Fprintf(&providers, `
		provider %s {
			base_url %s
			api_key %s
			timeouts {
				connect %dms
				first_byte 10s
				idle 10s
			}
		}`, p.name, p.srv.URL, p.key(), 10000+s.pools.Load())
	}
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	skip_install_trust
	log {
		output file %q
		level ERROR
	}
}

http://:%d {
	bind 127.0.0.1
	claude_balancer {
		name soak
		strategy %s
		sticky 1m
		health {
			threshold 3
			cooldown 2s
			reset_after 10s
		}
		%s
		%s
		route claude-* {
			to flaky
			to steady
			to backup
		}
	}
}

http://:%d {
	bind 127.0.0.1
	metrics
}
`, s.errorLog, s.site, strategies[n%len(strategies)], dedup, providers.String(), s.metrics)
}

// load adapts and loads config variant n; force reloads an unchanged config.
func (s *soak) load(n int, force bool) error {
	// Formatting first keeps the adapter from warning about indentation.
	cfg := caddyfile.Format([]byte(s.caddyfile(n)))
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(cfg, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return fmt.Errorf("adapting config %d: %w", n, err)
	}
	if len(warnings) > 0 {
		return fmt.Errorf("adapting config %d: %v", n, warnings)
	}
	if err := caddy.Load(adapted, force); err != nil {
		return fmt.Errorf("loading config %d: %w", n, err)
	}
	return nil
}

// reloads records the reloads made during the load.
type reloads struct {
	window reloadWindow
	count  int
	last   int
	total  time.Duration
	max    time.Duration
	errs   []error
}

func (r *reloads) mean() time.Duration {
	if r.count == 0 {
		return 0
	}
	return r.total / time.Duration(r.count)
}

// reloadEvery loads the next config variant every interval until ctx ends.
func (s *soak) reloadEvery(ctx context.Context, every time.Duration, r *reloads) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		start := time.Now()
		r.window.begin()
		err := s.load(r.last+1, false)
		r.window.done()
		if err != nil {
			r.errs = append(r.errs, err)
			continue
		}
		d := time.Since(start)
		r.last++
		r.count++
		r.total += d
		r.max = max(r.max, d)
	}
}

// usage is the process's footprint at one moment, and the balancer's view of
// requests still in flight.
type usage struct {
	goroutines int
	heap       uint64
	dedup      dedupStatus
	inFlight   float64
}

func measure() usage {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{goroutines: runtime.NumGoroutine(), heap: ms.HeapInuse}
}

// peaks samples goroutines and heap while the load runs.
type peaks struct {
	goroutines int
	heap       uint64
}

func (p *peaks) sample(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		p.heap = max(p.heap, ms.HeapInuse)
		p.goroutines = max(p.goroutines, runtime.NumGoroutine())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// settle reloads config variant n with new connection settings (closing
// the idle upstream connections of the config it replaces), closes the client's idle connections and measures
// once the goroutine count holds still.
func (s *soak) settle(n int) usage {
	s.t.Helper()
	s.pools.Add(1)
	if err := s.load(n, true); err != nil {
		s.t.Fatal(err)
	}
	s.client.CloseIdleConnections()
	prev := measure()
	deadline := time.Now().Add(*settleFlag)
	for {
		u := measure()
		if u.goroutines == prev.goroutines || time.Now().After(deadline) {
			return u
		}
		prev = u
		time.Sleep(100 * time.Millisecond)
	}
}

// settleBack settles and polls until goroutines and heap are back within
// slack of base and the balancer has no request or dedup group left. It
// returns the last measurement and whether it got there in time.
func (s *soak) settleBack(n int, base usage) (usage, bool) {
	s.t.Helper()
	u := s.settle(n)
	deadline := time.Now().Add(*settleFlag)
	for {
		c := s.counters()
		u.dedup, u.inFlight = c.dedup, c.series["claude_balancer_requests_in_flight"]
		if u.goroutines <= base.goroutines+goroutineSlack && u.heap <= base.heap+heapSlack &&
			u.dedup.InFlight == 0 && u.dedup.Groups == 0 && u.inFlight == 0 {
			return u, true
		}
		if time.Now().After(deadline) {
			return u, false
		}
		time.Sleep(200 * time.Millisecond)
		s.client.CloseIdleConnections()
		g := measure()
		u.goroutines, u.heap = g.goroutines, g.heap
	}
}

// dedupStatus is the dedup part of /providers.
type dedupStatus struct {
	Runs       uint64 `json:"runs"`
	Joins      uint64 `json:"joins"`
	ReplayHits uint64 `json:"replay_hits"`
	SlowEnded  uint64 `json:"slow_ended"`
	InFlight   int    `json:"in_flight"`
	Groups     int    `json:"groups"`
}

// counters are the balancer's metrics and dedup state at one moment.
type counters struct {
	// series maps a metric series of balancer "soak", written as in the
	// exposition without the balancer label, to its value.
	series map[string]float64
	dedup  dedupStatus
}

func (c counters) diff(before counters, metric string) map[string]int {
	out := map[string]int{}
	for k, v := range c.series {
		if strings.HasPrefix(k, metric+"{") {
			if d := int(v - before.series[k]); d > 0 {
				out[strings.TrimPrefix(k, metric)] = d
			}
		}
	}
	return out
}

var soakLabel = regexp.MustCompile(`balancer="soak",?`)

func (s *soak) counters() counters {
	s.t.Helper()
	c := counters{series: map[string]float64{}}
	resp, err := s.client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.metrics))
	if err != nil {
		s.t.Fatalf("scraping metrics: %v", err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || !strings.HasPrefix(line, "claude_balancer_") || !soakLabel.MatchString(line[:i]) {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		key := strings.Replace(soakLabel.ReplaceAllString(line[:i], ""), "{}", "", 1)
		c.series[key] = v
	}
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, s.base+"/providers", nil)
	req.Header.Set("Accept", "application/json")
	resp, err = s.client.Do(req)
	if err != nil {
		s.t.Fatalf("reading /providers: %v", err)
	}
	defer resp.Body.Close()
	var st struct {
		Dedup dedupStatus `json:"dedup"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("decoding /providers: %v", err)
	}
	c.dedup = st.Dedup
	return c
}

// goroutineSummary counts the live goroutines by their innermost function
// and the function that started them, most common first.
func goroutineSummary() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	counts := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(g, "\n")
		if len(lines) < 2 {
			continue
		}
		top, created := strings.TrimSpace(lines[1]), ""
		for _, l := range lines {
			if strings.HasPrefix(l, "created by ") {
				created = strings.TrimPrefix(l, "created by ")
			}
		}
		top = top[:max(0, strings.LastIndexByte(top, '('))]
		if i := strings.Index(created, " in goroutine"); i >= 0 {
			created = created[:i]
		}
		counts[top+"  <- "+created]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%5d  %s\n", counts[k], k)
	}
	return b.String()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortedKeys(m map[string]int) []string { return slices.Sorted(maps.Keys(m)) }

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// freePorts reserves n distinct loopback ports and releases them for Caddy.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
