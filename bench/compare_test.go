package bench

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

var compareFlag = flag.Bool("compare", false, "run TestCompareProxies (same as CB_BENCH=1)")

// compareSettings bound TestCompareProxies in count and time.
type compareSettings struct {
	rounds   int
	requests int
	perRun   time.Duration
	conc     int
}

// compareWarmRequests is how many requests each worker sends through each
// target before the rounds of a mode.
const compareWarmRequests = 64

// busyMachine is the share of the machine's CPU time that other processes
// may take during the median run before the table warns.
const busyMachine = 0.25

// minRounds is the fewest rounds whose median the goal may be read from.
const minRounds = 5

// settingsFromEnv reads CB_BENCH_ROUNDS, CB_BENCH_REQUESTS,
// CB_BENCH_SECONDS and CB_BENCH_CONCURRENCY, falling back to defaults that
// keep the whole test around two minutes.
func settingsFromEnv() (compareSettings, error) {
	s := compareSettings{rounds: 7, requests: 20000, perRun: 1500 * time.Millisecond, conc: 16}
	for _, v := range []struct {
		name     string
		min, max int
		into     *int
	}{
		{"CB_BENCH_ROUNDS", 1, 50, &s.rounds},
		{"CB_BENCH_REQUESTS", 1, 1_000_000, &s.requests},
		{"CB_BENCH_CONCURRENCY", 1, 512, &s.conc},
	} {
		if str := os.Getenv(v.name); str != "" {
			n, err := strconv.Atoi(str)
			if err != nil || n < v.min || n > v.max {
				return s, fmt.Errorf("%s=%q: want %d to %d", v.name, str, v.min, v.max)
			}
			*v.into = n
		}
	}
	if v := os.Getenv("CB_BENCH_SECONDS"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0.05 || f > 60 {
			return s, fmt.Errorf("CB_BENCH_SECONDS=%q: want a number of seconds from 0.05 to 60", v)
		}
		s.perRun = time.Duration(f * float64(time.Second))
	}
	return s, nil
}

// modeResult is one mode's rounds: every target's stats, round by round.
type modeResult struct {
	mode   string
	rounds map[string][]stats
}

// TestCompareProxies runs every target side by side in front of identical
// mocks, in rounds that rotate which target goes first, and prints one
// Markdown table: per mode and target, the median of the per-round ratios
// against reverse_proxy, the medians of the absolute numbers, Caddy's CPU
// time per request and the upstream connections opened while measuring.
//
// Caddy runs in this process and nothing else does: the load client and the
// mocks run in a helper process (the test binary again), so this process's
// CPU time over a run is what Caddy spent serving it. It runs only when asked
// (CB_BENCH=1 or -compare) because it takes about two minutes and its
// numbers depend on the machine.
func TestCompareProxies(t *testing.T) {
	if !*compareFlag && os.Getenv("CB_BENCH") != "1" {
		t.Skip("set CB_BENCH=1 or pass -compare to run the proxy comparison")
	}
	set, err := settingsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	fx, err := loadFixture()
	if err != nil {
		t.Fatal(err)
	}
	p := startPeer(t)
	addrs, err := p.call(append([]string{"mocks"}, compareTargets...)...)
	if err != nil {
		t.Fatal(err)
	}
	upstreams := map[string]string{}
	for i, target := range compareTargets {
		upstreams[target] = addrs[i]
	}
	base := loadSitesForTest(t, compareTargets, upstreams, "")

	var results []modeResult
	// others is, per measured run, the share of the machine's CPU time that
	// neither this process nor the helper used: how loaded the machine was.
	var others []float64
	for _, mode := range modes {
		res := modeResult{mode: mode, rounds: map[string][]stats{}}
		for _, target := range compareTargets {
			// Warm-up at twice the concurrency: every pool then holds more
			// connections than c concurrent requests can need (a pool
			// dials when a request finds every connection busy, even if
			// one is about to come back), so that a connection opened
			// while measuring is one a proxy threw away.
			if _, err := p.call("drive", target, base[target], mode, strconv.Itoa(compareWarmRequests*set.conc), strconv.Itoa(2*set.conc), "0"); err != nil {
				t.Fatal(err)
			}
		}
		for round := range set.rounds {
			k := round % len(compareTargets)
			for _, target := range append(compareTargets[k:len(compareTargets):len(compareTargets)], compareTargets[:k]...) {
				// Start every run from a collected heap, so that a run
				// does not pay for the garbage of the one before.
				runtime.GC()
				busy0, total0, machineOK := machineCPU()
				cpu0 := processCPU()
				out, err := p.call("drive", target, base[target], mode, strconv.Itoa(set.requests), strconv.Itoa(set.conc),
					strconv.FormatInt(set.perRun.Milliseconds(), 10))
				cpu := processCPU() - cpu0
				busy1, total1, _ := machineCPU()
				if err != nil {
					t.Fatal(err)
				}
				st, _, err := decodeRun(out)
				if err != nil {
					t.Fatal(err)
				}
				st.cpuPerReq = float64(cpu.Microseconds()) / float64(max(st.requests, 1))
				res.rounds[target] = append(res.rounds[target], st)
				if machineOK && total1 > total0 {
					others = append(others, max(0, float64(busy1-busy0-cpu-st.peerCPU)/float64(total1-total0)))
				}
			}
		}
		results = append(results, res)
	}
	var head strings.Builder
	fmt.Fprintf(&head, "Caddy %s in one process (pid %d) with one site per target; the client and the mocks in a helper process.\n",
		caddyVersion(), os.Getpid())
	fmt.Fprintf(&head, "Body: Claude Code's request cut to %d bytes (json) / %d bytes (stream) by dropping %d tools (%s), "+
		"distinct per request; one client key for all.\n",
		fx.body[modeJSON].size(), fx.body[modeStream].size(), len(fx.dropped), strings.Join(fx.dropped, ", "))
	fmt.Fprintf(&head, "c=%d; %d rounds rotating the targets; each run is %d requests or %v, whichever ends first; GOMAXPROCS=%d.\n",
		set.conc, set.rounds, set.requests, set.perRun, runtime.GOMAXPROCS(0))
	if len(others) > 0 {
		fmt.Fprintf(&head, "Other processes used %.0f%% of the machine's CPU time during the median run, %.0f%% at most (read the ranges with that in mind).\n",
			100*median(others), 100*slices.Max(others))
		if median(others) > busyMachine {
			fmt.Fprintf(&head, "WARNING: the machine was busy: throughput and latency ratios are unreliable in this run; the CPU columns hold better.\n")
		}
	}
	if set.rounds < minRounds {
		fmt.Fprintf(&head, "Only %d rounds: read the goal from at least %d.\n", set.rounds, minRounds)
	}
	fmt.Printf("\n%s\n%s\n%s\n", head.String(), compareTable(results), goalLines(results))
}

// caddyVersion is the version of Caddy the module requires: the one this
// test binary runs (test binaries carry no dependency versions).
func caddyVersion() string {
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		return "(unknown version)"
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require"))
		if len(f) >= 2 && f[0] == "github.com/caddyserver/caddy/v2" {
			return f[1]
		}
	}
	return "(unknown version)"
}

// compareTable renders one row per mode and target. A row's ratios compare
// it with the reverse_proxy run of the same round and are the median of the
// per-round ratios with their range across rounds: the runs of a round
// shared the machine's state, so their ratio is less noisy than a ratio of
// separate medians. The absolute columns are medians across rounds; the
// connection and request columns are totals over the measured runs.
func compareTable(results []modeResult) string {
	var sb strings.Builder
	sb.WriteString("Ratios vs reverse_proxy, median [min–max] of the per-round ratios: throughput and p99 ≥ 1.00 means at least " +
		"as good as reverse_proxy (p99 ratio = reverse_proxy p99 ÷ target p99); CPU ≤ 1.00 means no more CPU per request.\n" +
		"CPU µs/req: the Caddy process's user + system time over the run ÷ requests. New conns: TCP connections the " +
		"target's mock accepted (upstream) and the client opened (client) during the measured runs, after warm-up.\n\n")
	tw := tabwriter.NewWriter(&sb, 0, 0, 1, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(tw, "| "+strings.Join(cols, "\t| ")+"\t|") }
	row("mode", "target", "throughput ratio", "p99 ratio", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "CPU ratio",
		"new upstream conns", "new client conns", "requests")
	row("---", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:")
	f0 := func(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) }
	f2 := func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) }
	for _, res := range results {
		for _, target := range compareTargets {
			rs := res.rounds[target]
			med := func(f func(stats) float64) float64 {
				v := make([]float64, len(rs))
				for i, s := range rs {
					v[i] = f(s)
				}
				return median(v)
			}
			ratio := func(f func(self, rp stats) float64) string {
				if target == targetReverseProxy {
					return "1.00"
				}
				v := perRound(res, target, f)
				return fmt.Sprintf("%.2f [%.2f–%.2f]", median(v), slices.Min(v), slices.Max(v))
			}
			var upstream, client, requests int64
			for _, s := range rs {
				upstream += s.upstreamConns
				client += s.clientConns
				requests += int64(s.requests)
			}
			row(res.mode, target,
				ratio(throughputRatio), ratio(p99Ratio),
				f0(med(func(s stats) float64 { return s.rps })),
				f2(med(func(s stats) float64 { return s.p50 })),
				f2(med(func(s stats) float64 { return s.p99 })),
				f0(med(func(s stats) float64 { return s.cpuPerReq })),
				ratio(cpuRatio),
				strconv.FormatInt(upstream, 10), strconv.FormatInt(client, 10), strconv.FormatInt(requests, 10))
		}
	}
	tw.Flush()
	return sb.String()
}

func throughputRatio(s, rp stats) float64 { return safeDiv(s.rps, rp.rps) }
func p99Ratio(s, rp stats) float64        { return safeDiv(rp.p99, s.p99) }
func cpuRatio(s, rp stats) float64        { return safeDiv(s.cpuPerReq, rp.cpuPerReq) }

// perRound is f of target against reverse_proxy, round by round.
func perRound(res modeResult, target string, f func(self, rp stats) float64) []float64 {
	rs, rp := res.rounds[target], res.rounds[targetReverseProxy]
	v := make([]float64, min(len(rs), len(rp)))
	for i := range v {
		v[i] = f(rs[i], rp[i])
	}
	return v
}

// goalLines states, for both balancer configurations in each mode, whether
// the median throughput ratio reaches 1.00 and whether any upstream
// connection was opened while measuring.
func goalLines(results []modeResult) string {
	var sb strings.Builder
	sb.WriteString("Goal: median throughput ratio ≥ 1.00 and no new upstream connection, for json and stream, with dedup off and the defaults.\n")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	for _, res := range results {
		for _, target := range []string{targetBalancerNoDedup, targetBalancer} {
			tput := median(perRound(res, target, throughputRatio))
			var conns int64
			for _, s := range res.rounds[target] {
				conns += s.upstreamConns
			}
			fmt.Fprintf(&sb, "  %-6s %-16s throughput %.2f (%s), new upstream conns %d (%s)\n",
				res.mode, target, tput, verdict(tput >= 1), conns, verdict(conns == 0))
		}
	}
	return sb.String()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
