package balancer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// socketPair returns the two ends of a loopback TCP connection, the client's
// read through readAhead.
func socketPair(t *testing.T) (*readAhead, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	ra, ok := newReadAhead(c).(*readAhead)
	if !ok {
		t.Fatalf("newReadAhead returned a %T", ra)
	}
	t.Cleanup(func() { ra.Close(); server.Close() })
	if ra.raw == nil {
		t.Skip("no raw socket reads here")
	}
	return ra, server
}

// TestReadAheadReadsWhatTheConnectionHolds: a burst already in the socket is
// read in system calls of up to 16 KiB, however small the reads asking for
// it; the bytes come through unchanged, and no buffer is held once they are
// handed on.
func TestReadAheadReadsWhatTheConnectionHolds(t *testing.T) {
	ra, server := socketPair(t)
	burst := bytes.Repeat([]byte("event: content_block_delta\ndata: {}\n\n"), 3000) // about 111 KB
	if _, err := server.Write(burst); err != nil {
		t.Fatal(err)
	}
	server.Close()
	time.Sleep(50 * time.Millisecond) // the whole burst is in the socket
	var got []byte
	p := make([]byte, upstreamReadBuffer)
	for {
		n, err := ra.Read(p)
		got = append(got, p[:n]...)
		if ra.r == ra.w && ra.buf != nil {
			t.Fatal("a buffer held with nothing in it")
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, burst) {
		t.Fatalf("%d of %d bytes, or not the same", len(got), len(burst))
	}
	// Reads of the transport's buffer straight from the socket would have
	// taken len(burst)/512 system calls.
	if want := len(burst)/readAheadSize + 3; ra.fills > want {
		t.Fatalf("%d reads of the socket for %d bytes, want at most %d", ra.fills, len(burst), want)
	}
}

// TestReadAheadFillsWithoutAllocating: a stream whose events come one at a
// time reads the socket once per event, and that read allocates nothing
// (its buffer is lent by the pool).
func TestReadAheadFillsWithoutAllocating(t *testing.T) {
	ra, server := socketPair(t)
	event := []byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n")
	p := make([]byte, upstreamReadBuffer)
	relay := func() {
		if _, err := server.Write(event); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(event); {
			n, err := ra.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	relay() // the pool's first buffer
	const events = 200
	fills := ra.fills
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range events {
		relay()
	}
	runtime.ReadMemStats(&after)
	if ra.fills-fills < events {
		t.Fatalf("%d reads of the socket for %d events sent apart", ra.fills-fills, events)
	}
	// Under the race detector, sync.Pool drops a quarter of what it is
	// given, and the pool makes a buffer for each.
	limit := 0.05
	if raceEnabled {
		limit = 0.6
	}
	if per := float64(after.Mallocs-before.Mallocs) / float64(ra.fills-fills); per > limit {
		t.Fatalf("%.2f allocations per read of the socket, want none", per)
	}
}

// TestReadAheadSaysWhenAnEventEndIsRead: EventAhead holds while the end of an
// event is read and not yet handed on, and no longer.
func TestReadAheadSaysWhenAnEventEndIsRead(t *testing.T) {
	ra, server := socketPair(t)
	if _, err := server.Write([]byte("event: a\ndata: 1\n\nevent: b\ndata: 2\n\nevent: c\ndata: pa")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	p := make([]byte, 10)
	if _, err := ra.Read(p); err != nil || !ra.EventAhead() {
		t.Fatalf("after the first 10 bytes: ahead %v, %v", ra.EventAhead(), err)
	}
	for range 2 {
		if _, err := ra.Read(p); err != nil {
			t.Fatal(err)
		}
	}
	// 30 of 48 bytes handed on: the second event's end (at 36) is still
	// ahead.
	if !ra.EventAhead() {
		t.Fatal("the second event's end is read and not handed on")
	}
	if _, err := ra.Read(p); err != nil || ra.EventAhead() {
		t.Fatalf("past the last event's end: ahead %v, %v", ra.EventAhead(), err)
	}
}

// TestReadAheadErrorsAreTheConnections: a deadline, a reset and a close read
// as they do from the connection itself, and hold no buffer.
func TestReadAheadErrorsAreTheConnections(t *testing.T) {
	ra, server := socketPair(t)
	if err := ra.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if _, err := ra.Read(make([]byte, 100)); !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("past the deadline: %v", err)
	}
	if ra.buf != nil {
		t.Fatal("a buffer held after a failed read")
	}
	_ = ra.SetReadDeadline(time.Time{})
	_ = server.(*net.TCPConn).SetLinger(0)
	server.Close()
	time.Sleep(20 * time.Millisecond)
	if _, err := ra.Read(make([]byte, 100)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after a reset: %v", err)
	}
	ra.Close()
	if _, err := ra.Read(make([]byte, 100)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// chunkedUpstream answers every request with the events as one chunk per
// event, as a provider that flushes each writes them, all sent at once, and
// closes the connection.
func chunkedUpstream(events [][]byte) *httptest.Server { return chunkedUpstreamThen(events, nil) }

// chunkedUpstreamThen is chunkedUpstream that, when hold is not nil, leaves
// the body unfinished and the connection open until hold is closed.
func chunkedUpstreamThen(events [][]byte, hold <-chan struct{}) *httptest.Server {
	var raw bytes.Buffer
	raw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
	for _, ev := range events {
		fmt.Fprintf(&raw, "%x\r\n%s\r\n", len(ev), ev)
	}
	if hold == nil {
		raw.WriteString("0\r\n\r\n")
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = conn.Write(raw.Bytes())
		if hold != nil {
			<-hold
		}
	}))
}

// TestABurstReadAheadGoesOutInFewWrites: a provider's burst, read through
// the transport's small buffer, reaches the output in runs as large as what
// came at once, not one write per buffer's worth; the bytes are the
// stream's.
func TestABurstReadAheadGoesOutInFewWrites(t *testing.T) {
	const n = 1600
	events := deltaEvents(n)
	whole := bytes.Join(events, nil) // about 200 KB
	up := chunkedUpstream(events)
	defer up.Close()
	if upstreamReadBuffer > 512 {
		t.Skip("no read-ahead here")
	}
	out, _ := serveStream(t, up.URL, nil)
	if !bytes.Equal(out.raw.Bytes(), whole) {
		t.Fatalf("%d of %d bytes, or not the stream's", out.raw.Len(), len(whole))
	}
	// What came at once goes out in runs of up to runSize (16 KiB), one per
	// read of the socket. Without the read-ahead's word a run would end
	// with the event reader's buffer, at 8 KiB: twice as many writes.
	if deltaWrites := len(out.deltaWrites()); deltaWrites > len(whole)/runSize*3/2+2 {
		t.Fatalf("%d writes for %d bytes of deltas that came at once", deltaWrites, len(whole))
	}
}

// TestProviderConnectionsReadAhead: the connections a provider dials read
// ahead.
func TestProviderConnectionsReadAhead(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	p, err := newProvider(ProviderConfig{Name: "a", BaseURL: "http://" + l.Addr().String()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := p.newTransport()
	if err != nil {
		t.Fatal(err)
	}
	c, err := tr.DialContext(t.Context(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*readAhead); !ok {
		t.Fatalf("a provider's connection is a %T", c)
	}
}

// TestLastEventEndMatchesLastIndex: the end of the last blank line is found
// wherever it lies: in the last bytes, far before them, overlapping, or
// nowhere.
func TestLastEventEndMatchesLastIndex(t *testing.T) {
	ref := func(b []byte) int {
		if i := bytes.LastIndex(b, []byte("\n\n")); i >= 0 {
			return i + 2
		}
		return 0
	}
	cases := [][]byte{nil, []byte("\n"), []byte("\n\n"), []byte("\n\n\n"), []byte("a\n\nb"),
		append([]byte("event: a\n\n"), bytes.Repeat([]byte("x"), 5000)...),
		append(append(bytes.Repeat([]byte("y"), 3000), "\n\n\n"...), bytes.Repeat([]byte("x\n"), 100)...),
		[]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
		bytes.Repeat([]byte("event: d\ndata: {}\n\n"), 500),
		append(bytes.Repeat([]byte("event: d\ndata: {}\n\n"), 500), "\r\n"...),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(400))
		for i := range b {
			b[i] = "ab\n\r"[rng.IntN(4)]
		}
		cases = append(cases, b)
	}
	for _, b := range cases {
		if got, want := lastEventEnd(b), ref(b); got != want {
			t.Fatalf("lastEventEnd(%q) = %d, want %d", b, got, want)
		}
	}
}

// TestReadAheadWritesABodyThroughALentBuffer: the transport hands a request
// body over to the connection's ReadFrom, which writes it through a pooled
// buffer; io.Copy would make one of up to 32 KiB for every request.
func TestReadAheadWritesABodyThroughALentBuffer(t *testing.T) {
	ra, server := socketPair(t)
	body := bytes.Repeat([]byte(`{"role":"user","content":"hello"},`), 900) // about 30 KB
	got := make(chan []byte, 1)
	// The reader's buffers are made here, outside the measure.
	b, buf := make([]byte, 0, 40*len(body)), make([]byte, 64<<10)
	go func() {
		for len(b) < 40*len(body) {
			n, err := server.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- b
	}()
	rf, ok := net.Conn(ra).(io.ReaderFrom)
	if !ok {
		t.Fatal("an upstream connection has no ReadFrom")
	}
	write := func() {
		if n, err := rf.ReadFrom(io.LimitReader(bytes.NewReader(body), int64(len(body)))); err != nil || n != int64(len(body)) {
			t.Fatalf("wrote %d of %d bytes: %v", n, len(body), err)
		}
	}
	write() // the pool's first buffer
	const writes = 40
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range writes - 1 {
		write()
	}
	runtime.ReadMemStats(&after)
	// Under the race detector, sync.Pool drops a quarter of what it is
	// given: about 8 KB a write on average, against 30 KB without a pool.
	limit := uint64(4 << 10)
	if raceEnabled {
		limit = 20 << 10
	}
	if perWrite := (after.TotalAlloc - before.TotalAlloc) / (writes - 1); perWrite > limit {
		t.Fatalf("%d bytes allocated per body written, want a lent buffer", perWrite)
	}
	if b := <-got; !bytes.Equal(b, bytes.Repeat(body, 40)) {
		t.Fatalf("the other end read %d bytes, not the 40 bodies", len(b))
	}
}

// TestABurstThenSilenceTimesOut: reads served from what the connection has
// read ahead are not bounded by the idle timeout, since they cannot wait;
// once the burst is handed on, a provider that falls silent is still cut off
// after the idle timeout, with every event it sent relayed.
func TestABurstThenSilenceTimesOut(t *testing.T) {
	events := deltaEvents(400)
	events = events[:len(events)-3] // no block stop, message delta or stop: the stream stays open
	release := make(chan struct{})
	defer close(release)
	up := chunkedUpstreamThen(events, release)
	defer up.Close()
	bal := oneProvider(t, "burst-then-silence", ProviderConfig{BaseURL: up.URL, Timeouts: &Timeouts{Idle: caddy.Duration(300 * time.Millisecond)}})
	req := streamRequest(t)
	out := &recordingOutput{}
	done := make(chan *Result, 1)
	start := time.Now()
	go func() { done <- bal.Serve(context.Background(), req, out) }()
	var res *Result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a silent provider was not cut off by the idle timeout")
	}
	if res.StreamError == "" || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("the stream ended after %v without a timeout: %+v", time.Since(start), res)
	}
	if want := bytes.Join(events, nil); !bytes.HasPrefix(out.raw.Bytes(), want) {
		t.Fatalf("%d bytes relayed before the timeout, want the %d the provider sent", out.raw.Len(), len(want))
	}
}
