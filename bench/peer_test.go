package bench

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// peerEnv marks the helper process: the test binary started again, running
// the clients and the mock upstreams of TestCompareProxies and TestCapacity,
// so that the test's own process holds nothing but Caddy and its CPU time,
// heap and goroutines are the proxy's alone.
const peerEnv = "CB_BENCH_PEER"

// peer is the helper process, driven one command line at a time; it answers
// each with a line "peer ok <values...>" or "peer err <message>".
type peer struct {
	in    io.WriteCloser
	lines chan string
}

// startPeer starts the helper process; it ends when the test does.
func startPeer(t *testing.T) *peer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1")
	cmd.Env = append(os.Environ(), peerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{in: in, lines: make(chan string)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "peer "); ok {
				p.lines <- line
			} else {
				fmt.Fprintln(os.Stderr, "helper:", sc.Text())
			}
		}
	}()
	t.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	})
	return p
}

// call sends a command and waits for its answer, at most five minutes.
func (p *peer) call(args ...string) ([]string, error) {
	if _, err := fmt.Fprintln(p.in, strings.Join(args, " ")); err != nil {
		return nil, fmt.Errorf("helper %s: %w", args[0], err)
	}
	timeout := time.NewTimer(5 * time.Minute)
	defer timeout.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			return nil, fmt.Errorf("helper %s: the helper exited", args[0])
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "ok" {
			return nil, fmt.Errorf("helper %s: %s", args[0], line)
		}
		return f[1:], nil
	case <-timeout.C:
		return nil, fmt.Errorf("helper %s: no answer in five minutes", args[0])
	}
}

// peerMain is the helper process's whole life: it serves commands from
// stdin until stdin closes.
func peerMain() int {
	if _, err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	if err := runPeer(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// peerState is the helper's side: the mock upstreams, the clients and the
// streams it holds open.
type peerState struct {
	// TestCapacity: one mock for every target, the streams it holds open.
	mock    *httptest.Server
	active  atomic.Int64
	client  *http.Client
	fixture []byte
	held    []heldStream
	// TestCompareProxies: one counting mock per target and the load client.
	mocks map[string]*mockServer
	drv   *driver
}

// runPeer serves commands from in until it closes:
//
//	mock                  start TestCapacity's mock upstream; answers its host:port
//	hold <url> <n> <body> open n streams and read each to its first content event; answers the body size
//	release               close the held streams and wait for the mock to see them go
//	relay <url> <n>       run n streams to their end at once; answers the content events read
//	mocks <target>...     start a counting mock per target; answers their host:port in order
//	drive <target> <base> <mode> <n> <conc> <ms>
//	                      send n requests (or for ms milliseconds) through a site; answers the run's stats
func runPeer(in io.Reader, out io.Writer) error {
	st := &peerState{client: &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
	}}, mocks: map[string]*mockServer{}}
	defer func() {
		st.release()
		if st.mock != nil {
			st.mock.Close()
		}
		for _, m := range st.mocks {
			m.Close()
		}
	}()
	var err error
	if st.drv, err = newDriver(); err != nil {
		return err
	}
	st.fixture = st.drv.full
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		answer, err := st.do(f)
		if err != nil {
			fmt.Fprintf(out, "peer err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			continue
		}
		fmt.Fprintf(out, "peer ok %s\n", answer)
	}
	return sc.Err()
}

func (st *peerState) do(f []string) (string, error) {
	switch {
	case f[0] == "mock" && len(f) == 1:
		st.mock = httptest.NewServer(http.HandlerFunc(st.serveMock))
		return strings.TrimPrefix(st.mock.URL, "http://"), nil
	case f[0] == "hold" && len(f) == 4:
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return "", err
		}
		return st.hold(f[1], n, f[3])
	case f[0] == "release" && len(f) == 1:
		return "", st.release()
	case f[0] == "relay" && len(f) == 3:
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return "", err
		}
		return st.relay(f[1], n)
	case f[0] == "mocks" && len(f) > 1:
		addrs := make([]string, 0, len(f)-1)
		for _, target := range f[1:] {
			if st.mocks[target] == nil {
				st.mocks[target] = startMock()
			}
			addrs = append(addrs, st.mocks[target].hostPort())
		}
		return strings.Join(addrs, " "), nil
	case f[0] == "drive" && len(f) == 7:
		return st.drive(f[1], f[2], f[3], f[4], f[5], f[6])
	}
	return "", fmt.Errorf("unknown command %q", strings.Join(f, " "))
}

// drive runs one measured (or warm-up) run through a site in front of
// target's mock and answers its stats: requests, elapsed ns, p50, p99, ttfb
// p50 and ttfb p99 in ns, new upstream connections, new client connections,
// and this process's CPU time in ns.
func (st *peerState) drive(target, base, mode, n, conc, millis string) (string, error) {
	mock := st.mocks[target]
	if mock == nil {
		return "", fmt.Errorf("no mock for %q", target)
	}
	if _, ok := st.drv.body[mode]; !ok {
		return "", fmt.Errorf("unknown mode %q", mode)
	}
	var num [3]int
	for i, s := range []string{n, conc, millis} {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return "", fmt.Errorf("drive: %q is not a count", s)
		}
		num[i] = v
	}
	var deadline time.Time
	if num[2] > 0 {
		deadline = time.Now().Add(time.Duration(num[2]) * time.Millisecond)
	}
	r, err := st.drv.drive(base, mock, target, mode, num[0], max(num[1], 1), deadline)
	if err != nil {
		return "", err
	}
	return encodeRun(r), nil
}

// encodeRun and decodeRun carry a run's summary over the helper's pipe.
func encodeRun(r run) string {
	s := r.stats()
	lat := func(msec float64) string { return strconv.FormatInt(int64(msec*float64(time.Millisecond)), 10) }
	return strings.Join([]string{strconv.Itoa(s.requests), strconv.FormatInt(int64(r.elapsed), 10),
		lat(s.p50), lat(s.p99), lat(s.ttfbP50), lat(s.ttfbP99),
		strconv.FormatInt(r.upstreamConns, 10), strconv.FormatInt(r.clientConns, 10), strconv.FormatInt(int64(r.cpu), 10)}, " ")
}

func decodeRun(f []string) (stats, time.Duration, error) {
	if len(f) != 9 {
		return stats{}, 0, fmt.Errorf("helper stats %q: want 9 fields", f)
	}
	var v [9]int64
	for i, s := range f {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return stats{}, 0, fmt.Errorf("helper stats %q: %w", f, err)
		}
		v[i] = n
	}
	elapsed := time.Duration(v[1])
	st := stats{requests: int(v[0]), p50: ms(time.Duration(v[2])), p99: ms(time.Duration(v[3])),
		ttfbP50: ms(time.Duration(v[4])), ttfbP99: ms(time.Duration(v[5])), upstreamConns: v[6], clientConns: v[7], peerCPU: time.Duration(v[8])}
	if elapsed > 0 {
		st.rps = float64(st.requests) / elapsed.Seconds()
	}
	return st, elapsed, nil
}
