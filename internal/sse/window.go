package sse

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// A reader's buffer is small while its stream trickles: 1 KiB holds nearly
// every event the API sends. Once a read comes back nearly full, or brings
// busyRead bytes or more, the stream is sending faster than it is read, and the buffer
// grows to 8 KiB: room for all that an HTTP/1.1 client's 4 KiB read buffer
// hands over at once beside an event cut in two, so that a burst costs a
// read of ours per read of the connection, and its events go on in as few
// writes. An event larger than 8 KiB is read line by line, at the cost of a
// copy.
const (
	smallBuffer = 1 << 10
	largeBuffer = 8 << 10
)

// busyRead is the size of a read that says a burst is on: the next read will
// not wait, so the reader keeps its buffer for it even when it has handed on
// every byte.
const busyRead = 2 << 10

var (
	smallPool = sync.Pool{New: func() any { return new([smallBuffer]byte) }}
	largePool = sync.Pool{New: func() any { return new([largeBuffer]byte) }}
)

// waitSize is how much a window reads while it holds no buffer: most single
// events fit, so a stream whose events come one at a time reads each once.
const waitSize = 256

// errBufferFull is window.readSlice's answer for a line longer than the
// largest buffer; the part it returns is the whole buffer.
var errBufferFull = errors.New("sse: buffer full")

// window is a reader's view of its stream, as bufio.Reader gives it, except
// that it holds no buffer while it waits for the stream with nothing
// buffered: it waits reading into a small array of its own, and takes a
// buffer from a pool when something comes. A stream open for minutes
// between bursts of events, as a model thinks, costs no buffer meanwhile.
//
// What it returns (bytes, peek, readSlice) is valid until the next call
// that reads the stream.
type window struct {
	buf  []byte
	r, w int
	// busy is set when the last read came back nearly full (three quarters
	// of what it asked for, or more), or brought busyRead bytes or more:
	// more is coming than was asked for.
	busy bool
	src  io.Reader
	// err is the stream's first error. The stream is not read after it.
	err  error
	wait [waitSize]byte
}

func (b *window) reset(src io.Reader) {
	b.release()
	b.src, b.err, b.r, b.w, b.busy = src, nil, 0, 0, false
}

var poison atomic.Bool

// SetPoison makes a reader overwrite every buffer it gives back, so that an
// event used after its bytes went back reads garbage instead of, silently,
// another stream's. For tests.
func SetPoison(on bool) { poison.Store(on) }

// release gives the buffer back.
func (b *window) release() {
	if poison.Load() {
		for i := range b.buf {
			b.buf[i] = 0xff
		}
	}
	switch len(b.buf) {
	case smallBuffer:
		smallPool.Put((*[smallBuffer]byte)(b.buf))
	case largeBuffer:
		largePool.Put((*[largeBuffer]byte)(b.buf))
	}
	b.buf = nil
}

func (b *window) buffered() int { return b.w - b.r }

// bytes returns what is buffered.
func (b *window) bytes() []byte { return b.buf[b.r:b.w] }

// fill reads the stream once. With nothing buffered it lets the buffer go
// first and waits reading into the small array, unless a burst is on;
// otherwise it moves what is buffered to the front, grows the buffer if the
// burst asks for it, and reads into the rest.
func (b *window) fill() {
	if b.err != nil {
		return
	}
	waiting := b.r == b.w && !(b.busy && b.buf != nil)
	dst := b.wait[:]
	if waiting {
		b.release()
		b.r, b.w = 0, 0
	} else {
		if b.r > 0 {
			copy(b.buf, b.buf[b.r:b.w])
			b.w -= b.r
			b.r = 0
		}
		if (b.busy || b.w == len(b.buf)) && len(b.buf) < largeBuffer {
			large := largePool.Get().(*[largeBuffer]byte)[:]
			copy(large, b.buf[:b.w])
			b.release()
			b.buf = large
		}
		dst = b.buf[b.w:]
	}
	for range 100 {
		n, err := b.src.Read(dst)
		if n > 0 {
			if waiting {
				b.buf = smallPool.Get().(*[smallBuffer]byte)[:]
				copy(b.buf, dst[:n])
			}
			b.w += n
		}
		b.busy = n >= busyRead || 4*n >= 3*len(dst)
		if err != nil {
			b.err = err
		}
		if n > 0 || err != nil {
			return
		}
	}
	b.err = io.ErrNoProgress
}

// peek returns the next n bytes, reading the stream until they are
// buffered, it fails or the largest buffer is full; it returns fewer bytes
// then.
func (b *window) peek(n int) []byte {
	for b.w-b.r < n && b.w-b.r < largeBuffer && b.err == nil {
		b.fill()
	}
	p := b.bytes()
	return p[:min(n, len(p))]
}

// discard drops n buffered bytes.
func (b *window) discard(n int) { b.r += n }

// readSlice reads up to and including the next '\n', as
// bufio.Reader.ReadSlice does: at the stream's end or error it returns what
// is left with the error, and for a line longer than the largest buffer the
// whole buffer with errBufferFull.
func (b *window) readSlice() ([]byte, error) {
	s := 0
	for {
		if i := bytes.IndexByte(b.bytes()[s:], '\n'); i >= 0 {
			line := b.buf[b.r : b.r+s+i+1]
			b.r += s + i + 1
			return line, nil
		}
		if b.err != nil {
			line := b.bytes()
			b.r = b.w
			return line, b.err
		}
		if b.buffered() >= largeBuffer {
			line := b.bytes()
			b.r = b.w
			return line, errBufferFull
		}
		s = b.buffered()
		b.fill()
	}
}

// read reads into p what is buffered, or else from the stream.
func (b *window) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.err
		}
		b.release()
		b.r, b.w = 0, 0
		n, err := b.src.Read(p)
		if err != nil {
			b.err = err
		}
		return n, err
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}
