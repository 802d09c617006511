package bench

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
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
}

// settingsFromEnv reads CB_BENCH_ROUNDS, CB_BENCH_REQUESTS and
// CB_BENCH_SECONDS, falling back to defaults that keep the whole test under
// a minute.
func settingsFromEnv() (compareSettings, error) {
	s := compareSettings{rounds: 5, requests: 3000, perRun: 600 * time.Millisecond}
	if v := os.Getenv("CB_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 50 {
			return s, fmt.Errorf("CB_BENCH_ROUNDS=%q: want 1 to 50", v)
		}
		s.rounds = n
	}
	if v := os.Getenv("CB_BENCH_REQUESTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1_000_000 {
			return s, fmt.Errorf("CB_BENCH_REQUESTS=%q: want 1 to 1000000", v)
		}
		s.requests = n
	}
	if v := os.Getenv("CB_BENCH_SECONDS"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 60 {
			return s, fmt.Errorf("CB_BENCH_SECONDS=%q: want a number of seconds up to 60", v)
		}
		s.perRun = time.Duration(f * float64(time.Second))
	}
	return s, nil
}

// cell is one (mode, concurrency) comparison over several rounds.
type cell struct {
	mode   string
	conc   int
	rounds map[string][]stats
}

// TestCompareProxies runs every target against the same mock for every mode
// and concurrency, rotating which goes first in each round, and prints the
// median of the rounds. It runs only when asked (CB_BENCH=1 or -compare)
// because it takes about a minute and its numbers depend on the machine.
func TestCompareProxies(t *testing.T) {
	if !*compareFlag && os.Getenv("CB_BENCH") != "1" {
		t.Skip("set CB_BENCH=1 or pass -compare to run the proxy comparison")
	}
	set, err := settingsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t)
	t.Logf("%d rounds; each run is %d requests or %v, whichever ends first; body %d bytes (json) / %d bytes (stream)",
		set.rounds, set.requests, set.perRun, len(e.body[modeJSON]), len(e.body[modeStream]))
	var cells []cell
	for _, mode := range modes {
		for _, conc := range concurrences {
			c := cell{mode: mode, conc: conc, rounds: map[string][]stats{}}
			for _, target := range compareTargets {
				if err := e.warm(target, mode, conc); err != nil {
					t.Fatal(err)
				}
			}
			for round := range set.rounds {
				k := round % len(compareTargets)
				for _, target := range append(compareTargets[k:len(compareTargets):len(compareTargets)], compareTargets[:k]...) {
					r, err := e.drive(target, mode, set.requests, conc, time.Now().Add(set.perRun))
					if err != nil {
						t.Fatal(err)
					}
					c.rounds[target] = append(c.rounds[target], r.stats())
				}
			}
			cells = append(cells, c)
		}
	}
	t.Log("\n" + table(cells))
}

// table renders the median round of every cell as a Markdown table, one row
// per target. A balancer row's ratios compare it with reverse_proxy: they
// are the medians of the per-round ratios (the runs of a round shared the
// machine's state), with their range across rounds.
func table(cells []cell) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 1, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(tw, "| "+strings.Join(cols, "\t| ")+"\t|") }
	row("mode", "c", "target", "req/s", "p50 ms", "p99 ms", "ttfb p50", "ttfb p99", "cpu µs/req",
		"tput ratio", "p99 ratio", "ttfb p99 ratio", "n")
	row("---", "--:", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:")
	f0 := func(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) }
	f2 := func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) }
	for _, c := range cells {
		rp := c.rounds[targetReverseProxy]
		for _, target := range compareTargets {
			rs := c.rounds[target]
			med := func(f func(stats) float64) float64 {
				v := make([]float64, len(rs))
				for i, s := range rs {
					v[i] = f(s)
				}
				return median(v)
			}
			ratio := func(f func(self, rp stats) float64) string {
				if target == targetReverseProxy {
					return ""
				}
				v := make([]float64, len(rs))
				for i := range rs {
					v[i] = f(rs[i], rp[i])
				}
				return fmt.Sprintf("%.2f [%.2f–%.2f]", median(v), slices.Min(v), slices.Max(v))
			}
			ttfb50, ttfb99, ttfbRatio := "–", "–", "–"
			if c.mode == modeStream {
				ttfb50 = f2(med(func(s stats) float64 { return s.ttfbP50 }))
				ttfb99 = f2(med(func(s stats) float64 { return s.ttfbP99 }))
				ttfbRatio = ratio(func(s, r stats) float64 { return safeDiv(r.ttfbP99, s.ttfbP99) })
			}
			row(c.mode, strconv.Itoa(c.conc), target,
				f0(med(func(s stats) float64 { return s.rps })),
				f2(med(func(s stats) float64 { return s.p50 })),
				f2(med(func(s stats) float64 { return s.p99 })),
				ttfb50, ttfb99,
				f0(med(func(s stats) float64 { return s.cpuPerReq })),
				ratio(func(s, r stats) float64 { return safeDiv(s.rps, r.rps) }),
				ratio(func(s, r stats) float64 { return safeDiv(r.p99, s.p99) }),
				ttfbRatio,
				f0(med(func(s stats) float64 { return float64(s.requests) })))
		}
	}
	tw.Flush()
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

// TestEveryTargetRelaysTheMockAnswerByteForByte checks the harness itself:
// each site reaches the mock through its own proxy and returns exactly what
// the mock sent, so all are measured doing the same work.
func TestEveryTargetRelaysTheMockAnswerByteForByte(t *testing.T) {
	e := setup(t)
	for _, target := range targets {
		for _, mode := range modes {
			t.Run(target+"/"+mode, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodPost, e.base[target]+e.path, bytes.NewReader(e.body[mode]))
				if err != nil {
					t.Fatal(err)
				}
				req.Header = e.header.Clone()
				resp, err := e.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, got)
				}
				if !bytes.Equal(got, e.answer[mode]) {
					t.Fatalf("body differs from the mock's answer:\n got %d bytes: %.200q\nwant %d bytes: %.200q",
						len(got), got, len(e.answer[mode]), e.answer[mode])
				}
				via := resp.Header.Get("X-Claude-Balancer-Provider")
				want := map[string]string{targetBalancer: "m", targetBalancerNoDedup: "m", targetReverseProxy: ""}[target]
				if via != want {
					t.Errorf("X-Claude-Balancer-Provider = %q, want %q", via, want)
				}
				if rid := resp.Header.Get("Request-Id"); rid != mockHeaders.Get("Request-Id") {
					t.Errorf("Request-Id = %q, want the mock's", rid)
				}
			})
		}
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	ds := func(ms ...int) []time.Duration {
		out := make([]time.Duration, len(ms))
		for i, m := range ms {
			out[i] = time.Duration(m) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty is zero", nil, 0.5, 0},
		{"single sample is every percentile", ds(7), 0.99, 7 * time.Millisecond},
		{"p50 of an even count is the lower middle", ds(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 100 is the 99th", ds(hundred...), 0.99, 99 * time.Millisecond},
		{"p99 of 10 is the largest", ds(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestMedianOfRounds(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"empty is zero", nil, 0},
		{"odd count takes the middle", []float64{3, 1, 2}, 2},
		{"even count averages the middle two", []float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// TestOpenAITargetConverts checks that the conversion path answers the same
// text as an Anthropic message and stream.
func TestOpenAITargetConverts(t *testing.T) {
	e := setup(t)
	for _, mode := range modes {
		req, err := http.NewRequest(http.MethodPost, e.base[targetBalancerOpenAI]+e.path, bytes.NewReader(e.body[mode]))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = e.header.Clone()
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %v", mode, resp.StatusCode, err)
		}
		if mode == modeStream && (!bytes.Contains(b, []byte("event: message_stop")) || bytes.Count(b, []byte("text_delta")) != bytes.Count(e.answer[modeStream], []byte("text_delta"))) {
			t.Fatalf("stream (%d deltas): %s", bytes.Count(b, []byte("text_delta")), b[len(b)-min(len(b), 600):])
		}
		if mode == modeJSON && !bytes.Contains(b, []byte(`"type":"message"`)) {
			t.Fatalf("json: %s", b)
		}
	}
}
