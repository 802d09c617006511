// Package sse reads and writes Server-Sent Events as the Anthropic and OpenAI
// streaming APIs use them: one small state machine over lines, events as
// values, and the exact bytes of every event kept so a relay can forward a
// stream byte for byte. Events in the form the Anthropic API writes are read
// in place, from a buffer the reader holds only while bytes are waiting in
// it (window.go): an open stream that waits for its provider costs no
// buffer, except right after a burst, when the next read will not wait. A
// relay can also take a run of whole events straight from the buffer (Take),
// with a matcher of its own that checks them in one pass.
package sse

import (
	"bytes"
	"errors"
	"io"
)

// DefaultMaxEventSize bounds one event (all of its lines) unless SetMaxEventSize
// says otherwise. Real events are a few hundred bytes; the bound only protects
// memory against a broken or hostile upstream.
const DefaultMaxEventSize = 8 << 20

// ErrEventTooLarge is returned when an event exceeds the reader's size limit.
var ErrEventTooLarge = errors.New("sse: event exceeds size limit")

var errReleased = errors.New("sse: reader used after Release")

// Event is one Server-Sent Event.
type Event struct {
	// Name is the value of the event's "event:" field, or "" if it had none.
	Name string
	// Data is the event's data lines joined by "\n", without the "data:" prefix.
	Data []byte
	// Raw holds the exact bytes of the event as read, including comment lines,
	// line endings and the blank line that ended it. An event made by Encode has
	// Raw set too. Raw and Data are not reused by the reader, unless it was
	// told to lend them (Borrow).
	Raw []byte
}

// Empty reports whether the event carries neither a name nor data (a block of
// comments such as a keep-alive).
func (e Event) Empty() bool { return e.Name == "" && e.Data == nil }

// Reader decodes events from a stream. It accepts "\n" and "\r\n" line
// endings and ignores "id:" and "retry:" fields (they stay in Raw).
type Reader struct {
	win     window
	max     int
	scratch []byte
	// lineByLine turns the fast path off, for the tests that compare the
	// two.
	lineByLine bool
	// borrow lends events out of the reader's buffers (see Borrow).
	borrow bool
	// next is the event Ready found complete in the buffer, not yet
	// discarded from it; nextSize is its length, 0 when there is none.
	next     Event
	nextSize int
}

// Borrow makes the reader lend the events it returns instead of copying
// them: their Raw and Data are valid only until the next call to Next, Read
// or Release (Ready leaves them be). A relay that hands each event on before it reads the next,
// and copies the few it keeps, saves an allocation per event.
func (r *Reader) Borrow() { r.borrow = true }

// NewReader returns a Reader over r. Release returns its buffer for reuse.
func NewReader(r io.Reader) *Reader {
	return &Reader{win: window{src: r}, max: DefaultMaxEventSize}
}

// Release gives the reader's buffer back for reuse; the reader must not be
// used afterwards. Events already returned stay valid.
func (r *Reader) Release() {
	r.next, r.nextSize = Event{}, 0
	r.win.reset(nil)
	r.win.err = errReleased
	if cap(r.scratch) > 64<<10 {
		r.scratch = nil
	}
}

// Buffered returns the number of bytes read from the stream but not yet
// returned as events: when it is zero, the next Next has to wait for the
// network.
func (r *Reader) Buffered() int { return r.win.buffered() }

// Ready reports whether a complete event is already buffered, so that Next
// will not wait for the network.
// An event in the common form is read there and then, for Next to return
// without reading it again.
func (r *Reader) Ready() bool {
	if r.nextSize > 0 {
		return true
	}
	if !r.lineByLine {
		switch size := r.buffered(); {
		case size > 0:
			r.nextSize = size
			return true
		case size == 0:
			// The start of an event in the common form, no more.
			return false
		}
	}
	b := r.win.bytes()
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// Take returns the longest run of whole events at the front of the buffer
// that match accepts, and moves past it; nil when match accepts none of the
// buffered bytes. match is given the buffered bytes (at most the largest
// event) and returns the length of the run of events it accepts at their
// start, 0 for none; it must end at an event's end. Take never waits for the
// network: a relay asks for a run first and reads event by event when there
// is none. The bytes are lent or copied as Next's events are.
func (r *Reader) Take(match func(b []byte) int) []byte {
	if r.lineByLine {
		return nil
	}
	b := r.win.bytes()
	if len(b) > r.max {
		b = b[:r.max]
	}
	n := match(b)
	if n <= 0 || n > len(b) {
		return nil
	}
	// An event Ready found is part of the run.
	r.next, r.nextSize = Event{}, 0
	out := r.lend(b[:n])
	r.win.discard(n)
	return out
}

// TakeWaiting is Take that waits for the network while the buffer holds
// only the start of an event: it reads the stream until the event at the
// front is whole, then takes the run there. It returns nil, having read
// nothing more, when the event at the front is whole and not one match
// accepts (Next returns it without reading it again), when the stream ended
// or failed, and when an event is larger than the buffer: Next says what
// is there. A relay that reads its stream this way makes no event of the
// runs it hands on, the one cut by a read included.
func (r *Reader) TakeWaiting(match func(b []byte) int) []byte {
	for {
		if run := r.Take(match); run != nil || r.lineByLine || r.nextSize > 0 {
			return run
		}
		if size := r.buffered(); size != 0 {
			if size > 0 {
				r.nextSize = size
			}
			return nil
		}
		n := r.win.buffered()
		if n >= largeBuffer {
			return nil
		}
		if r.win.fill(); r.win.buffered() <= n {
			return nil
		}
	}
}

// Read reads the bytes left after the events returned so far: the reader
// then is the rest of the stream, for a relay that drains it.
func (r *Reader) Read(p []byte) (int, error) {
	r.next, r.nextSize = Event{}, 0
	return r.win.read(p)
}

// SetMaxEventSize sets the largest event, in bytes, the reader accepts.
func (r *Reader) SetMaxEventSize(n int) { r.max = n }

// Next returns the next event. At the clean end of the stream it returns
// io.EOF; if the stream ends inside an event it returns that partial event
// (when it has a name or data) together with io.ErrUnexpectedEOF.
func (r *Reader) Next() (Event, error) {
	for r.nextSize == 0 && !r.lineByLine {
		size := r.buffered()
		if size > 0 {
			r.nextSize = size
			break
		}
		// The start of an event in the common form whose end is still on
		// its way: wait for more, unless the buffer is full (a large
		// event) or the stream ended (the line-by-line path below says
		// how).
		n := r.win.buffered()
		if size < 0 || n >= largeBuffer {
			break
		}
		if len(r.win.peek(n+1)) <= n {
			break
		}
	}
	if r.nextSize > 0 {
		// Discard leaves the bytes in place until the next read fills the
		// buffer again.
		r.win.discard(r.nextSize)
		r.nextSize = 0
		return r.next, nil
	}
	raw := r.scratch[:0]
	var (
		name     string
		data     []byte
		dataSeen bool
		multi    bool
		// dataStart and dataEnd locate the first data value inside raw, so the
		// common one-line case needs no second allocation.
		dataStart, dataEnd int
	)
	for {
		lineStart := len(raw)
		var err error
		for {
			var part []byte
			part, err = r.win.readSlice()
			if len(raw)+len(part) > r.max {
				r.scratch = raw[:0]
				return Event{}, ErrEventTooLarge
			}
			raw = append(raw, part...)
			if err != errBufferFull {
				break
			}
		}
		if err != nil && err != io.EOF {
			r.scratch = raw[:0]
			return Event{}, err
		}
		content := trimEOL(raw[lineStart:])
		if len(content) == 0 {
			if err == io.EOF {
				return r.finish(raw, name, data, dataSeen, multi, dataStart, dataEnd, io.ErrUnexpectedEOF)
			}
			if lineStart == 0 {
				// Blank lines between events are not events.
				raw = raw[:0]
				continue
			}
			return r.finish(raw, name, data, dataSeen, multi, dataStart, dataEnd, nil)
		}
		if content[0] != ':' {
			field, value := content, content[len(content):]
			if i := bytes.IndexByte(content, ':'); i >= 0 {
				field, value = content[:i], content[i+1:]
				if len(value) > 0 && value[0] == ' ' {
					value = value[1:]
				}
			}
			switch string(field) {
			case "event":
				name = eventName(value)
			case "data":
				off := lineStart + len(content) - len(value)
				switch {
				case !dataSeen:
					dataSeen = true
					dataStart, dataEnd = off, off+len(value)
				default:
					if !multi {
						multi = true
						data = append([]byte(nil), raw[dataStart:dataEnd]...)
					}
					data = append(data, '\n')
					data = append(data, value...)
				}
			}
		}
		if err == io.EOF {
			return r.finish(raw, name, data, dataSeen, multi, dataStart, dataEnd, io.ErrUnexpectedEOF)
		}
	}
}

// buffered reads the next event into r.next when it is already in the
// buffer, in the common form (lines ending in "\n", at most one data line,
// every field with a colon), in place and copying it once, and returns its
// size in the buffer, which the caller discards. Otherwise it returns 0 when
// what is buffered is the start of an event in the common form, and -1 when
// it is not in that form, which the line-by-line path reads.
func (r *Reader) buffered() int {
	b := r.win.bytes()
	n := len(b)
	if n == 0 {
		return 0
	}
	if b[0] == '\n' || b[0] == '\r' {
		return -1
	}
	if size := r.twoLines(b); size > 0 {
		return size
	}
	var name string
	ds, de := -1, -1
	pos := 0
	for {
		nl := bytes.IndexByte(b[pos:], '\n')
		if nl < 0 {
			if n > r.max {
				return -1
			}
			return 0
		}
		if pos+nl+1 > r.max {
			return -1
		}
		line := b[pos : pos+nl]
		if len(line) == 0 {
			break
		}
		if line[len(line)-1] == '\r' {
			return -1
		}
		if line[0] != ':' {
			colon := bytes.IndexByte(line, ':')
			if colon < 0 {
				return -1
			}
			vs := pos + colon + 1
			if vs < pos+nl && b[vs] == ' ' {
				vs++
			}
			switch string(line[:colon]) {
			case "event":
				name = eventName(b[vs : pos+nl])
			case "data":
				if ds >= 0 {
					return -1
				}
				ds, de = vs, pos+nl
			}
		}
		pos += nl + 1
	}
	size := pos + 1
	out := r.lend(b[:size])
	r.next = Event{Name: name, Raw: out}
	if ds >= 0 {
		r.next.Data = out[ds:de:de]
	}
	return size
}

// twoLines reads an event in the exact form the Anthropic API writes,
// "event: <name>\n" then "data: <data>\n" then a blank line, into r.next
// when that is what b starts with, and returns its size (0 otherwise);
// buffered reads every other form (and this one too, to the same event).
func (r *Reader) twoLines(b []byte) int {
	const event, data = "event: ", "data: "
	if len(b) < len(event) || string(b[:len(event)]) != event {
		return 0
	}
	nl := bytes.IndexByte(b[len(event):], '\n')
	if nl < 0 {
		return 0
	}
	nameEnd := len(event) + nl
	ds := nameEnd + 1 + len(data)
	if ds > len(b) || string(b[nameEnd+1:ds]) != data || b[nameEnd-1] == '\r' {
		return 0
	}
	nl = bytes.IndexByte(b[ds:], '\n')
	if nl < 0 {
		return 0
	}
	de := ds + nl
	size := de + 2
	if size > len(b) || b[de+1] != '\n' || b[de-1] == '\r' || size > r.max {
		return 0
	}
	out := r.lend(b[:size])
	r.next = Event{Name: eventName(b[len(event):nameEnd]), Data: out[ds:de:de], Raw: out}
	return size
}

// lend returns an event's bytes as the reader hands them out: in place
// when it lends them (Borrow), else a copy.
func (r *Reader) lend(b []byte) []byte {
	if r.borrow {
		return b[:len(b):len(b)]
	}
	return bytes.Clone(b)
}

func (r *Reader) finish(raw []byte, name string, data []byte, dataSeen, multi bool, ds, de int, err error) (Event, error) {
	out := r.lend(raw)
	r.scratch = raw[:0]
	ev := Event{Name: name, Raw: out}
	switch {
	case multi:
		ev.Data = data
	case dataSeen:
		ev.Data = out[ds:de:de]
	}
	if err != nil && ev.Empty() {
		return Event{}, io.EOF
	}
	return ev, err
}

// knownNames are the event names the Anthropic API sends, the most
// frequent first.
var knownNames = [...]string{"content_block_delta", "ping", "content_block_start", "content_block_stop",
	"message_start", "message_delta", "message_stop", "error"}

// eventName returns an event's name, without allocating for the names the
// Anthropic API sends.
func eventName(b []byte) string {
	for _, n := range knownNames {
		if len(n) == len(b) && string(b) == n {
			return n
		}
	}
	return string(b)
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// Append appends one event in the form the Anthropic API writes
// ("event: <name>\ndata: <data>\n\n") to dst and returns the result. A name of
// "" writes a data-only event. data must not contain newlines (JSON from
// encoding/json never does).
func Append(dst []byte, name string, data []byte) []byte {
	if name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}

// Encode returns a complete Event for name and data, with Raw set.
func Encode(name string, data []byte) Event {
	raw := Append(make([]byte, 0, len(name)+len(data)+17), name, data)
	start := len(raw) - 2 - len(data)
	return Event{Name: name, Data: raw[start : start+len(data) : start+len(data)], Raw: raw}
}
