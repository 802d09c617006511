// Package sse reads and writes Server-Sent Events as the Anthropic and OpenAI
// streaming APIs use them: one small state machine over lines, events as
// values, and the exact bytes of every event kept so a relay can forward a
// stream byte for byte.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// DefaultMaxEventSize bounds one event (all of its lines) unless SetMaxEventSize
// says otherwise. Real events are a few hundred bytes; the bound only protects
// memory against a broken or hostile upstream.
const DefaultMaxEventSize = 8 << 20

// ErrEventTooLarge is returned when an event exceeds the reader's size limit.
var ErrEventTooLarge = errors.New("sse: event exceeds size limit")

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
	br      *bufio.Reader
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

// bufPool recycles the readers' buffers: a relay reads one stream per
// request. A buffer is held for as long as its stream is open, so it is
// small: 2 KiB holds nearly every event the API sends (an event that does not
// fit is read line by line, at the cost of a copy).
var bufPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 2<<10) }}

// NewReader returns a Reader over r. Release returns its buffer for reuse.
func NewReader(r io.Reader) *Reader {
	br := bufPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &Reader{br: br, max: DefaultMaxEventSize}
}

// Release gives the reader's buffer back for reuse; the reader must not be
// used afterwards. Events already returned stay valid.
func (r *Reader) Release() {
	if r.br == nil {
		return
	}
	r.next, r.nextSize = Event{}, 0
	r.br.Reset(nil)
	bufPool.Put(r.br)
	r.br = nil
	if cap(r.scratch) > 64<<10 {
		r.scratch = nil
	}
}

// Buffered returns the number of bytes read from the stream but not yet
// returned as events: when it is zero, the next Next has to wait for the
// network.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Ready reports whether a complete event is already buffered, so that Next
// will not wait for the network.
// An event in the common form is read there and then, for Next to return
// without reading it again.
func (r *Reader) Ready() bool {
	if r.nextSize > 0 {
		return true
	}
	if !r.lineByLine {
		if ev, size, ok := r.buffered(); ok {
			r.next, r.nextSize = ev, size
			return true
		}
	}
	b, _ := r.br.Peek(r.br.Buffered())
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// Read reads the bytes left after the events returned so far: the reader
// then is the rest of the stream, for a relay that drains it.
func (r *Reader) Read(p []byte) (int, error) {
	r.next, r.nextSize = Event{}, 0
	return r.br.Read(p)
}

// SetMaxEventSize sets the largest event, in bytes, the reader accepts.
func (r *Reader) SetMaxEventSize(n int) { r.max = n }

// Next returns the next event. At the clean end of the stream it returns
// io.EOF; if the stream ends inside an event it returns that partial event
// (when it has a name or data) together with io.ErrUnexpectedEOF.
func (r *Reader) Next() (Event, error) {
	if r.nextSize > 0 {
		ev, size := r.next, r.nextSize
		r.next, r.nextSize = Event{}, 0
		// Discard leaves the bytes in place until the next read fills the
		// buffer again.
		_, _ = r.br.Discard(size)
		return ev, nil
	}
	if !r.lineByLine {
		if ev, size, ok := r.buffered(); ok {
			_, _ = r.br.Discard(size)
			return ev, nil
		}
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
			part, err = r.br.ReadSlice('\n')
			if len(raw)+len(part) > r.max {
				r.scratch = raw[:0]
				return Event{}, ErrEventTooLarge
			}
			raw = append(raw, part...)
			if err != bufio.ErrBufferFull {
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

// buffered returns the next event when it is already in the buffer, in
// the common form (lines ending in "\n", at most one data line, every field
// with a colon), reading it in place and copying it once, and its size in the
// buffer, which the caller discards; ok is false for anything else, which the
// line-by-line path reads.
func (r *Reader) buffered() (ev Event, size int, ok bool) {
	n := r.br.Buffered()
	if n < 2 {
		return Event{}, 0, false
	}
	b, _ := r.br.Peek(n)
	if b[0] == '\n' || b[0] == '\r' {
		return Event{}, 0, false
	}
	var name string
	ds, de := -1, -1
	pos := 0
	for {
		nl := bytes.IndexByte(b[pos:], '\n')
		if nl < 0 || pos+nl+1 > r.max {
			return Event{}, 0, false
		}
		line := b[pos : pos+nl]
		if len(line) == 0 {
			break
		}
		if line[len(line)-1] == '\r' {
			return Event{}, 0, false
		}
		if line[0] != ':' {
			colon := bytes.IndexByte(line, ':')
			if colon < 0 {
				return Event{}, 0, false
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
					return Event{}, 0, false
				}
				ds, de = vs, pos+nl
			}
		}
		pos += nl + 1
	}
	size = pos + 1
	var out []byte
	if r.borrow {
		out = b[:size:size]
	} else {
		out = make([]byte, size)
		copy(out, b)
	}
	ev = Event{Name: name, Raw: out}
	if ds >= 0 {
		ev.Data = out[ds:de:de]
	}
	return ev, size, true
}

func (r *Reader) finish(raw []byte, name string, data []byte, dataSeen, multi bool, ds, de int, err error) (Event, error) {
	out := raw
	if !r.borrow {
		out = make([]byte, len(raw))
		copy(out, raw)
	}
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

// eventName returns an event's name, without allocating for the names the
// Anthropic API sends.
func eventName(b []byte) string {
	switch string(b) {
	case "message_start":
		return "message_start"
	case "content_block_start":
		return "content_block_start"
	case "content_block_delta":
		return "content_block_delta"
	case "content_block_stop":
		return "content_block_stop"
	case "message_delta":
		return "message_delta"
	case "message_stop":
		return "message_stop"
	case "ping":
		return "ping"
	case "error":
		return "error"
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
