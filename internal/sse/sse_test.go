package sse

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t *testing.T, r io.Reader) ([]Event, error) {
	t.Helper()
	rd := NewReader(r)
	var evs []Event
	for {
		ev, err := rd.Next()
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				return append(evs, ev), nil
			}
			if err == io.EOF {
				return evs, nil
			}
			return evs, err
		}
		evs = append(evs, ev)
	}
}

func TestReaderParsesNamedAndDataOnlyEvents(t *testing.T) {
	in := "event: message_start\ndata: {\"a\":1}\n\n" +
		"data: {\"b\":2}\r\n\r\n" +
		": keepalive\n\n" +
		"event: ping\ndata: {}\nid: 7\n\n" +
		"data: one\ndata: two\n\n" +
		"data: [DONE]\n\n"
	for _, r := range []io.Reader{strings.NewReader(in), iotest.OneByteReader(strings.NewReader(in))} {
		evs, err := readAll(t, r)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 6 {
			t.Fatalf("got %d events, want 6", len(evs))
		}
		want := []struct{ name, data string }{
			{"message_start", `{"a":1}`}, {"", `{"b":2}`}, {"", ""}, {"ping", "{}"}, {"", "one\ntwo"}, {"", "[DONE]"},
		}
		var raw bytes.Buffer
		for i, w := range want {
			if evs[i].Name != w.name || string(evs[i].Data) != w.data {
				t.Errorf("event %d = %q %q, want %q %q", i, evs[i].Name, evs[i].Data, w.name, w.data)
			}
			raw.Write(evs[i].Raw)
		}
		if !evs[2].Empty() {
			t.Errorf("comment block should be empty")
		}
		if raw.String() != in {
			t.Errorf("raw bytes differ:\n%q\n%q", raw.String(), in)
		}
	}
}

func TestReaderTruncatedEvent(t *testing.T) {
	evs, err := readAll(t, strings.NewReader("event: a\ndata: 1\n\nevent: b\ndata: {\"x\""))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[1].Name != "b" || string(evs[1].Data) != `{"x"` {
		t.Fatalf("got %+v", evs)
	}
	rd := NewReader(strings.NewReader("event: a\ndata: 1\n"))
	if _, err := rd.Next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("err = %v, want unexpected EOF", err)
	}
}

func TestReaderEventTooLarge(t *testing.T) {
	rd := NewReader(strings.NewReader("data: " + strings.Repeat("x", 100<<10) + "\n\n"))
	rd.SetMaxEventSize(64 << 10)
	if _, err := rd.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err = %v, want ErrEventTooLarge", err)
	}
	rd = NewReader(strings.NewReader("data: " + strings.Repeat("x", 100<<10) + "\n\n"))
	ev, err := rd.Next()
	if err != nil || len(ev.Data) != 100<<10 {
		t.Fatalf("long line: err %v len %d", err, len(ev.Data))
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	ev := Encode("content_block_delta", []byte(`{"x":1}`))
	if string(ev.Raw) != "event: content_block_delta\ndata: {\"x\":1}\n\n" || string(ev.Data) != `{"x":1}` {
		t.Fatalf("got %q / %q", ev.Raw, ev.Data)
	}
	got, err := NewReader(bytes.NewReader(ev.Raw)).Next()
	if err != nil || got.Name != ev.Name || !bytes.Equal(got.Data, ev.Data) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("event: a\ndata: 1\n\n"))
	f.Add([]byte("data: x\r\ndata: y\r\n\r\n: c\n\n"))
	f.Add([]byte("event: b\ndata"))
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := NewReader(bytes.NewReader(in))
		rd.SetMaxEventSize(1 << 16)
		var raw []byte
		for i := 0; i < len(in)+2; i++ {
			ev, err := rd.Next()
			raw = append(raw, ev.Raw...)
			if err != nil {
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					// Everything but blank separator lines is kept in Raw.
					if len(raw) > len(in) {
						t.Fatalf("raw longer than input")
					}
				}
				return
			}
		}
		t.Fatalf("reader did not terminate")
	})
}

func TestReaderReadyReportsABufferedEvent(t *testing.T) {
	pr, pw := io.Pipe()
	rd := NewReader(pr)
	go func() {
		io.WriteString(pw, "event: a\ndata: 1\n\nevent: b\ndata: 2\n\nevent: c\ndata")
	}()
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if !rd.Ready() {
		t.Fatal("event b is buffered, Ready says no")
	}
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if rd.Ready() {
		t.Fatal("only part of event c is buffered, Ready says yes")
	}
	pw.Close()
}

func TestKnownEventNamesCostNoAllocation(t *testing.T) {
	for _, name := range []string{"message_start", "content_block_delta", "ping", "error", "some_new_event"} {
		b := []byte(name)
		if got := eventName(b); got != name {
			t.Fatalf("eventName(%q) = %q", name, got)
		}
		if name == "some_new_event" {
			continue
		}
		var sink string
		if allocs := testing.AllocsPerRun(100, func() { sink = eventName(b) }); allocs != 0 {
			t.Fatalf("%s: %v allocations", name, allocs)
		}
		_ = sink
	}
}

// Events read from the buffer in place are the events the line-by-line path
// reads, whatever the input and however it arrives.
func FuzzBufferedMatchesLineByLine(f *testing.F) {
	f.Add([]byte("event: a\ndata: 1\n\n"), uint8(3))
	f.Add([]byte("data: x\r\ndata: y\r\n\r\n: c\n\n"), uint8(1))
	f.Add([]byte("\n\nevent: b\ndata:2\nid: 7\n\ndata\n\n"), uint8(5))
	f.Add([]byte("event: c\ndata: 1\ndata: 2\n\n:only a comment\n\n"), uint8(200))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		// ready asks Ready before every Next (as the relay does) and
		// borrows the events, keeping copies.
		read := func(lineByLine, ready bool) ([]Event, error) {
			var src io.Reader = bytes.NewReader(in)
			if chunk%4 == 0 {
				src = iotest.OneByteReader(src)
			}
			rd := NewReader(src)
			rd.lineByLine = lineByLine
			rd.SetMaxEventSize(int(chunk) + 16)
			if ready {
				rd.Borrow()
			}
			var evs []Event
			for range len(in) + 2 {
				if ready {
					rd.Ready()
				}
				ev, err := rd.Next()
				if ready {
					ev.Raw, ev.Data = bytes.Clone(ev.Raw), bytes.Clone(ev.Data)
				}
				if err != nil {
					return append(evs, ev), err
				}
				evs = append(evs, ev)
			}
			t.Fatal("reader did not terminate")
			return nil, nil
		}
		slow, serr := read(true, false)
		for _, ready := range []bool{false, true} {
			fast, ferr := read(false, ready)
			if ferr != serr || len(fast) != len(slow) {
				t.Fatalf("%q (Ready %v): %d events (%v) in place, %d (%v) line by line", in, ready, len(fast), ferr, len(slow), serr)
			}
			for i := range fast {
				a, b := fast[i], slow[i]
				if a.Name != b.Name || !bytes.Equal(a.Data, b.Data) || (a.Data == nil) != (b.Data == nil) || !bytes.Equal(a.Raw, b.Raw) {
					t.Fatalf("%q (Ready %v): event %d is %+v in place, %+v line by line", in, ready, i, a, b)
				}
			}
		}
	})
}

// TestReadyKeepsTheEventForNextAndRead: an event Ready found is the one
// Next returns, and a Read after Ready still reads it.
func TestReadyKeepsTheEventForNextAndRead(t *testing.T) {
	in := "event: a\ndata: 1\n\nevent: b\ndata: 2\n\n"
	rd := NewReader(strings.NewReader(in))
	rd.Borrow()
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	// Asked twice, Ready keeps the one event it found.
	first := rd.Ready()
	if second := rd.Ready(); !first || !second {
		t.Fatal("the second event is buffered")
	}
	ev, err := rd.Next()
	if err != nil || ev.Name != "b" || string(ev.Data) != "2" {
		t.Fatalf("Next after Ready: %+v %v", ev, err)
	}
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("then %v", err)
	}
	rd = NewReader(strings.NewReader(in))
	if _, err := rd.Next(); err != nil || !rd.Ready() {
		t.Fatal("second event not ready")
	}
	rest, _ := io.ReadAll(rd)
	if string(rest) != "event: b\ndata: 2\n\n" {
		t.Fatalf("Read after Ready: %q", rest)
	}
}

// BenchmarkReader reads a stream of 2,000 text deltas, in place and line by
// line.
func BenchmarkReader(b *testing.B) {
	var in bytes.Buffer
	for range 2000 {
		in.WriteString("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" a few words of text\"}}\n\n")
	}
	for _, mode := range []struct {
		name               string
		lineByLine, borrow bool
	}{{"buffered", false, false}, {"line_by_line", true, false}, {"borrowed_ready", false, true}} {
		b.Run(mode.name, func(b *testing.B) {
			b.SetBytes(int64(in.Len()))
			b.ReportAllocs()
			for b.Loop() {
				// Reads of up to 4 KiB, as from a connection's buffer.
				rd := NewReader(io.LimitReader(&chunked{b: in.Bytes(), n: 4 << 10}, int64(in.Len())))
				rd.lineByLine = mode.lineByLine
				if mode.borrow {
					// As the relay reads: borrowing, asking Ready
					// after each event.
					rd.Borrow()
				}
				for {
					if _, err := rd.Next(); err != nil {
						break
					}
					if mode.borrow {
						rd.Ready()
					}
				}
				rd.Release()
			}
		})
	}
}

// chunked returns b in reads of at most n bytes.
type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}

// TestEventArrivingInPiecesIsReadInPlace: an event in the common form that
// arrives a byte at a time is still read in place, without the line-by-line
// path's copy.
func TestEventArrivingInPiecesIsReadInPlace(t *testing.T) {
	in := "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: ping\ndata: {}\n\n"
	rd := NewReader(iotest.OneByteReader(strings.NewReader(in)))
	rd.Borrow()
	for _, want := range []string{"message_start", "ping"} {
		ev, err := rd.Next()
		if err != nil || ev.Name != want {
			t.Fatalf("got %+v %v, want %s", ev, err, want)
		}
	}
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("then %v", err)
	}
	if cap(rd.scratch) != 0 {
		t.Fatal("an event was read line by line")
	}
}

// flakySource returns its parts (each in one Read if it fits), then err
// once, then more.
type flakySource struct {
	parts []string
	err   error
	after string
}

func (f *flakySource) Read(p []byte) (int, error) {
	if len(f.parts) > 0 {
		n := copy(p, f.parts[0])
		if f.parts[0] = f.parts[0][n:]; f.parts[0] == "" {
			f.parts = f.parts[1:]
		}
		return n, nil
	}
	if f.err != nil {
		err := f.err
		f.err = nil
		return 0, err
	}
	if f.after != "" {
		n := copy(p, f.after)
		f.after = f.after[n:]
		return n, nil
	}
	return 0, io.EOF
}

// TestErrorInsideAnEventIsKept: a read error in the middle of an event is the
// reader's answer, even if the stream would give more bytes when read again.
func TestErrorInsideAnEventIsKept(t *testing.T) {
	broken := errors.New("connection reset")
	for _, lineByLine := range []bool{false, true} {
		rd := NewReader(&flakySource{parts: []string{"event: a\ndata: 1\n\n", "event: b\ndata: par"}, err: broken, after: "tial\n\n"})
		rd.lineByLine = lineByLine
		if ev, err := rd.Next(); err != nil || ev.Name != "a" {
			t.Fatalf("first event: %+v %v", ev, err)
		}
		if ev, err := rd.Next(); err != broken {
			t.Fatalf("line by line %v: got %+v %v, want the read error", lineByLine, ev, err)
		}
	}
}

// waitSource serves data, then calls onWait at the read that would wait for
// more, and ends the stream.
type waitSource struct {
	data   string
	onWait func(p []byte)
}

func (s *waitSource) Read(p []byte) (int, error) {
	if s.data != "" {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	s.onWait(p)
	return 0, io.EOF
}

// TestWaitingReaderHoldsNoBuffer: a reader that has handed on every event
// it read waits for the stream without a buffer, so an idle stream costs
// none.
func TestWaitingReaderHoldsNoBuffer(t *testing.T) {
	for _, borrow := range []bool{false, true} {
		var rd *Reader
		waits := 0
		src := &waitSource{data: "event: a\ndata: 1\n\n", onWait: func(p []byte) {
			waits++
			if rd.win.buf != nil || len(p) != waitSize {
				t.Errorf("borrow %v: waiting with a buffer (%v) into %d bytes", borrow, rd.win.buf != nil, len(p))
			}
		}}
		rd = NewReader(src)
		if borrow {
			rd.Borrow()
		}
		if ev, err := rd.Next(); err != nil || ev.Name != "a" {
			t.Fatalf("got %+v %v", ev, err)
		}
		if _, err := rd.Next(); err != io.EOF || waits != 1 {
			t.Fatalf("then %v after %d waits", err, waits)
		}
		rd.Release()
	}
}

// eventReads hands out whole events, as many as fit in n bytes per Read, the
// way an HTTP/1.1 client returns a chunked body whose chunks are events; it
// counts its reads.
type eventReads struct {
	events [][]byte
	n      int
	reads  int
}

func (s *eventReads) Read(p []byte) (int, error) {
	if len(s.events) == 0 {
		return 0, io.EOF
	}
	s.reads++
	total := 0
	for len(s.events) > 0 && total+len(s.events[0]) <= min(len(p), s.n) {
		total += copy(p[total:], s.events[0])
		s.events = s.events[1:]
	}
	if total == 0 {
		// An event larger than what is asked for: a part of it.
		total = copy(p[:min(len(p), s.n)], s.events[0])
		s.events[0] = s.events[0][total:]
	}
	return total, nil
}

// TestBurstReadsAsTheSourceDoes: in a burst that the source hands over 4 KiB
// of whole events at a time, the reader keeps its buffer between reads and
// takes each read whole, so it reads no more often than the source is read
// (ending on an event's end must not send it back to reading a few hundred
// bytes at a time). takeAll says whether the events are taken as runs (Take)
// or one by one (Next).
func TestBurstReadsAsTheSourceDoes(t *testing.T) {
	delta := []byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a few words\"}}\n\n")
	isDelta := func(b []byte) int {
		n := 0
		for len(b)-n >= len(delta) && bytes.Equal(b[n:n+len(delta)], delta) {
			n += len(delta)
		}
		return n
	}
	for _, takeAll := range []bool{false, true} {
		const count = 2000
		src := &eventReads{n: 4 << 10}
		for range count {
			src.events = append(src.events, delta)
		}
		rd := NewReader(src)
		rd.Borrow()
		events := 0
		for {
			if takeAll {
				if run := rd.Take(isDelta); run != nil {
					events += len(run) / len(delta)
					continue
				}
			}
			ev, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil || !bytes.Equal(ev.Raw, delta) {
				t.Fatalf("event %d: %q %v", events, ev.Raw, err)
			}
			events++
		}
		rd.Release()
		perRead := (4 << 10) / len(delta)
		if events != count || src.reads > count/perRead+2 {
			t.Fatalf("take %v: %d events in %d reads; the source hands over %d events a read", takeAll, events, src.reads, perRead)
		}
	}
}

// TestTakeLendsARunAndLeavesTheRest: Take returns the run its matcher
// accepts, in place when the reader lends, and Next then reads on from just
// after it, including an event Ready had found.
func TestTakeLendsARunAndLeavesTheRest(t *testing.T) {
	in := "event: c\ndata: 0\n\nevent: a\ndata: 1\n\nevent: a\ndata: 2\n\nevent: b\ndata: 3\n\n"
	runOfA := func(b []byte) int {
		n := 0
		for bytes.HasPrefix(b[n:], []byte("event: a\n")) {
			n += bytes.Index(b[n:], []byte("\n\n")) + 2
		}
		return n
	}
	for _, borrow := range []bool{false, true} {
		rd := NewReader(strings.NewReader(in))
		if borrow {
			rd.Borrow()
		}
		if rd.Take(runOfA) != nil {
			t.Fatal("a run before anything was read")
		}
		// The first read brings the rest, and Ready finds the next event.
		if ev, err := rd.Next(); err != nil || ev.Name != "c" {
			t.Fatalf("first event %+v %v", ev, err)
		}
		if rd.Take(func([]byte) int { return 0 }) != nil || !rd.Ready() {
			t.Fatal("nothing ready")
		}
		run := rd.Take(runOfA)
		if string(run) != "event: a\ndata: 1\n\nevent: a\ndata: 2\n\n" {
			t.Fatalf("run %q", run)
		}
		if rd.Take(runOfA) != nil {
			t.Fatal("a second run")
		}
		ev, err := rd.Next()
		if err != nil || ev.Name != "b" || string(ev.Data) != "3" {
			t.Fatalf("after the run: %+v %v", ev, err)
		}
		if _, err := rd.Next(); err != io.EOF {
			t.Fatalf("then %v", err)
		}
		rd.Release()
	}
}

// TestTakeWaitingMakesNoEventOfARun: events cut in two by the reads still
// go out in runs; only the events the matcher refuses, and the end of the
// stream, come from Next.
func TestTakeWaitingMakesNoEventOfARun(t *testing.T) {
	delta := "event: content_block_delta\ndata: {\"text\":\"a few words\"}\n\n"
	other := "event: content_block_stop\ndata: {}\n\n"
	isDelta := func(b []byte) int {
		n := 0
		for strings.HasPrefix(string(b[n:]), delta) {
			n += len(delta)
		}
		return n
	}
	var in strings.Builder
	for i := range 300 {
		if i == 150 {
			in.WriteString(other)
		}
		in.WriteString(delta)
	}
	in.WriteString(other)
	for _, size := range []int{7, 100, 1000, 3000} {
		rd := NewReader(&chunked{b: []byte(in.String()), n: size})
		rd.Borrow()
		var out strings.Builder
		fromNext := 0
		for {
			if run := rd.TakeWaiting(isDelta); run != nil {
				out.Write(run)
				continue
			}
			ev, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reads of %d: %v", size, err)
			}
			if string(ev.Raw) != other {
				t.Fatalf("reads of %d: Next returned %q", size, ev.Raw)
			}
			fromNext++
			out.Write(ev.Raw)
		}
		rd.Release()
		if out.String() != in.String() || fromNext != 2 {
			t.Fatalf("reads of %d: %d events from Next, %d of %d bytes", size, fromNext, out.Len(), in.Len())
		}
	}
}
