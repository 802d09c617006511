//go:build linux

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/claude-balancer/caddy-claude-balancer/internal/sse"
)

// The fault tests run on Linux only: they count descriptors in /proc/self/fd
// and make connects time out by filling a listener's accept queue, which
// Linux answers by dropping SYNs.

// leakCheck compares goroutines, descriptors and de-duplication groups with
// a baseline.
//
// Caddy runs in this process, so runtime.NumGoroutine and /proc/self/fd see
// its connections as well as the test's. Pooled keep-alive connections (the
// test client's to Caddy, each provider transport's to the mocks) hold a
// descriptor and goroutines on both ends without being leaks, so both the
// baseline and the final count are taken quiescent: the test client's idle
// connections and every connection the mock servers accepted are closed
// first. What still runs after that (a stalled relay, a handler waiting on
// a request nobody cancelled, an upstream body nobody closed) is a leak.
// The baseline is taken after a warm-up request, so that whatever Caddy
// starts once per process or per config is already in it. Quiescent, the
// counts are exact: one leaked goroutine or descriptor fails the test.
type leakCheck struct {
	e          *env
	clients    []*http.Client
	servers    []*httptest.Server
	goroutines int
	fds        int
}

func newLeakCheck(e *env, clients []*http.Client, servers ...*httptest.Server) *leakCheck {
	e.t.Helper()
	l := &leakCheck{e: e, clients: append([]*http.Client{e.client}, clients...), servers: servers}
	l.quiesce()
	l.goroutines, l.fds = l.settled()
	return l
}

// quiesce closes every idle connection the test can reach.
func (l *leakCheck) quiesce() {
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
	for _, s := range l.servers {
		s.CloseClientConnections()
	}
}

// settled samples until the counts stop changing, so that connections
// closing in the background are not counted.
func (l *leakCheck) settled() (goroutines, fds int) {
	goroutines, fds = runtime.NumGoroutine(), openFDs(l.e.t)
	stable := 0
	for deadline := time.Now().Add(2 * time.Second); stable < 5 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		g, f := runtime.NumGoroutine(), openFDs(l.e.t)
		if g == goroutines && f == fds {
			stable++
			continue
		}
		stable = 0
		goroutines, fds = min(g, goroutines), min(f, fds)
	}
	return goroutines, fds
}

// verify waits until no de-duplication group is left and goroutines and
// descriptors are back to the baseline.
func (l *leakCheck) verify() {
	t := l.e.t
	t.Helper()
	waitFor(t, "de-duplication groups to drain", func() bool {
		inFlight, groups := l.e.dedupGauges()
		return inFlight == 0 && groups == 0
	})
	var g, f int
	// Everything here is released within milliseconds; the bound is for
	// a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	for {
		l.quiesce()
		g, f = runtime.NumGoroutine(), openFDs(t)
		if g <= l.goroutines && f <= l.fds {
			return
		}
		select {
		case <-ctx.Done():
			var dump bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
			t.Fatalf("resources not released: goroutines %d (baseline %d), descriptors %d (baseline %d)\n%s",
				g, l.goroutines, f, l.fds, dump.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting descriptors: %v", err)
	}
	return len(entries)
}

// dedupGauges returns the de-duplication runs in flight and the joinable
// groups.
func (e *env) dedupGauges() (inFlight, groups int) {
	e.t.Helper()
	_, b := e.get("/providers")
	var doc struct {
		Dedup struct {
			InFlight   int `json:"in_flight"`
			Groups     int `json:"groups"`
			SlowEnded  int `json:"slow_ended"`
			Joins      int `json:"joins"`
			ReplayHits int `json:"replay_hits"`
		} `json:"dedup"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		e.t.Fatalf("/providers: %v", err)
	}
	return doc.Dedup.InFlight, doc.Dedup.Groups
}

// slowEnded returns how many de-duplication members were ended as too slow.
func (e *env) slowEnded() int {
	e.t.Helper()
	_, b := e.get("/providers")
	var doc struct {
		Dedup struct {
			SlowEnded int `json:"slow_ended"`
		} `json:"dedup"`
	}
	_ = json.Unmarshal(b, &doc)
	return doc.Dedup.SlowEnded
}

// fakeDNS is a DNS server on 127.0.0.1 that knows no name: it answers every
// query with NXDOMAIN, or with silent set never answers at all. Providers
// reach it through their resolvers option, so no test ever asks a real DNS
// server.
func fakeDNS(t *testing.T, silent bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var queries atomic.Int32
	t.Cleanup(func() {
		pc.Close()
		<-done
		if queries.Load() == 0 {
			t.Error("no query reached the fake DNS server")
		}
	})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			queries.Add(1)
			if silent {
				continue
			}
			if reply, err := nxdomain(buf[:n]); err == nil {
				_, _ = pc.WriteTo(reply, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// nxdomain builds the NXDOMAIN answer to a query.
func nxdomain(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, RCode: dnsmessage.RCodeNameError})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// fullBacklog returns the URL of a listener whose accept queue is full, so
// that a new connection's SYN is dropped and its connect times out, as it
// does towards a host that is down. A listener that merely never accepts is
// not enough: the kernel completes handshakes into its queue until the
// queue is full, so the test fills a queue of one itself.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "http://" + addr
			}
			t.Fatalf("filling the accept queue: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Fatal("the accept queue never filled up")
		}
	}
}

// quietTLSServer is a TLS mock whose self-signed certificate providers
// reject; it does not log the failed handshakes.
func quietTLSServer(t *testing.T) *httptest.Server {
	s := httptest.NewUnstartedServer(http.NotFoundHandler())
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// writeEvents writes more events to a stream writeSSE started.
func writeEvents(w http.ResponseWriter, events ...string) {
	for _, ev := range events {
		io.WriteString(w, ev)
	}
	w.(http.Flusher).Flush()
}

// reset hijacks the connection and closes it with an RST.
func reset(w http.ResponseWriter) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	_ = buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// resetBeforeHeaders reads the request, then resets the connection.
func resetBeforeHeaders(w http.ResponseWriter, r *http.Request, _ int) { reset(w) }

// resetAfter sends the first n events of a stream, then resets the
// connection.
func resetAfter(n int, text string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, r *http.Request, _ int) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, ev := range sseEvents(text)[:n] {
			fmt.Fprintf(buf, "%x\r\n%s\r\n", len(ev), ev)
		}
		_ = buf.Flush()
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		conn.Close()
	}
}

// wellFormed checks what a client got: an error status carries an Anthropic
// envelope, a JSON body is complete, and a stream is valid SSE whose every
// event carries JSON and which ends with message_stop or an error frame.
// It returns the stream's events (nil for JSON).
func wellFormed(t *testing.T, resp *http.Response, body []byte) []sse.Event {
	t.Helper()
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ct == "application/json" {
		if ct != "application/json" || !json.Valid(body) {
			t.Fatalf("status %d %q: not a complete JSON body: %.300q", resp.StatusCode, ct, body)
		}
		if resp.StatusCode != http.StatusOK {
			var env struct {
				Type  string `json:"type"`
				Error struct {
					Type    string `json:"type"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &env); err != nil || env.Type != "error" || env.Error.Type == "" || env.Error.Message == "" {
				t.Fatalf("status %d without an Anthropic error envelope: %.300s", resp.StatusCode, body)
			}
		}
		return nil
	}
	if ct != "text/event-stream" {
		t.Fatalf("status 200 with content type %q", ct)
	}
	rd := sse.NewReader(bytes.NewReader(body))
	defer rd.Release()
	var evs []sse.Event
	for {
		ev, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("stream is not valid SSE: %v: %.300q", err, body)
		}
		if ev.Empty() {
			continue
		}
		if !json.Valid(ev.Data) {
			t.Fatalf("event %q carries data that is not JSON: %.200q", ev.Name, ev.Data)
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		t.Fatalf("empty stream")
	}
	if last := typeOf(evs[len(evs)-1]); last != "message_stop" && last != "error" {
		t.Fatalf("stream ends with %q, neither message_stop nor an error frame: %.300q", last, body[max(0, len(body)-300):])
	}
	return evs
}

// typeOf returns an event's type: its name, or the type its data carries
// when the stream sends no "event:" lines.
func typeOf(ev sse.Event) string {
	if ev.Name != "" {
		return ev.Name
	}
	var v struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(ev.Data, &v)
	return v.Type
}

// errorFrame returns the type of a stream's final error frame, or "".
func errorFrame(evs []sse.Event) string {
	if len(evs) == 0 || typeOf(evs[len(evs)-1]) != "error" {
		return ""
	}
	var v struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	_ = json.Unmarshal(evs[len(evs)-1].Data, &v)
	return v.Error.Type
}

// lastType returns the type of a stream's last event, or "json".
func lastType(evs []sse.Event) string {
	if len(evs) == 0 {
		return "json"
	}
	if t := typeOf(evs[len(evs)-1]); t != "error" {
		return t
	}
	return "error " + errorFrame(evs)
}

// streamText concatenates the text deltas of a stream.
func streamText(evs []sse.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		if typeOf(ev) != "content_block_delta" {
			continue
		}
		var v struct {
			Delta struct {
				Text string `json:"text"`
			} `json:"delta"`
		}
		if json.Unmarshal(ev.Data, &v) == nil {
			b.WriteString(v.Delta.Text)
		}
	}
	return b.String()
}
