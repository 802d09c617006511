package balancer

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/claude-balancer/caddy-claude-balancer/internal/bufpool"
)

// An upstream connection keeps small buffers (the transport's
// ReadBufferSize), because a stream mostly waits and every open stream holds
// them. readAhead lets them be smaller still and a burst cost fewer system
// calls: once the connection is readable, it reads all that the connection
// holds, up to readAheadSize, in one system call, into a buffer it takes from
// a pool then and gives back as soon as it has handed every byte on. A
// connection that waits holds no buffer of it. It also tells the relay when
// the end of an event is already read (EventAhead), so that what came
// together goes to the client in one write.
const readAheadSize = 16 << 10

var readAheadPool = sync.Pool{New: func() any { return new([readAheadSize]byte) }}

// readAhead is a plain connection read through a pooled buffer. Its reads
// are made by one goroutine at a time, as a connection's are; Close and
// EventAhead may come from any.
type readAhead struct {
	net.Conn
	// raw reads the socket without blocking; nil where that is not
	// available, and reads then go straight to the connection.
	raw syscall.RawConn
	buf *[readAheadSize]byte
	// buf[r:w] is read and not handed on; end is just past the last blank
	// line ("\n\n") in buf[:w], 0 when there is none.
	r, w, end int
	// ahead is r < end, for EventAhead.
	ahead atomic.Bool
	// fills counts the reads of the socket, for tests.
	fills int
	// readFn is fill's read of the socket, made once per connection (a
	// closure made in fill would be allocated on every fill); n and rerr
	// are its results.
	readFn func(fd uintptr) bool
	n      int
	rerr   error
}

func newReadAhead(c net.Conn) net.Conn {
	ra := &readAhead{Conn: c, raw: rawConnOf(c)}
	ra.readFn = ra.readSocket
	return ra
}

// EventAhead reports whether the connection has read ahead the end of an
// event (a blank line) of a stream carried as is: everything up to it
// reaches the reader without waiting for the network, so an output may
// hold back what it has until then instead of flushing it.
func (c *readAhead) EventAhead() bool { return c.ahead.Load() }

func (c *readAhead) Read(p []byte) (int, error) {
	if c.r == c.w {
		if c.raw == nil || len(p) >= readAheadSize {
			return c.Conn.Read(p)
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.r:c.w])
	c.r += n
	if ahead := c.r < c.end; ahead != c.ahead.Load() {
		// A store is a barrier; most reads of a burst leave it as it is.
		c.ahead.Store(ahead)
	}
	if c.r == c.w {
		c.release()
	}
	return n, nil
}

// fill waits until the connection is readable, holding no buffer, and
// reads what it holds into a pooled one. It returns an error when it read
// nothing: the connection's error, as its own Read would give it, or io.EOF.
func (c *readAhead) fill() error {
	c.n = 0
	err := c.raw.Read(c.readFn)
	n, rerr := c.n, c.rerr
	c.rerr = nil
	c.fills++
	switch {
	case err == nil && rerr != nil:
		err = os.NewSyscallError("read", rerr)
	case err == nil && n <= 0:
		c.release()
		return io.EOF
	}
	if err != nil {
		// Closed, past a deadline, reset.
		c.release()
		return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	c.r, c.w, c.end = 0, n, lastEventEnd(c.buf[:n])
	return nil
}

// readSocket reads what the socket holds into a pooled buffer, for fill
// (through raw.Read, which calls it again once the socket is readable).
func (c *readAhead) readSocket(fd uintptr) bool {
	buf := readAheadPool.Get().(*[readAheadSize]byte)
	c.n, c.rerr = readFD(fd, buf[:])
	if c.rerr == syscall.EAGAIN {
		// Nothing yet: wait for it without the buffer.
		readAheadPool.Put(buf)
		return false
	}
	c.buf = buf
	return true
}

// lastEventEnd returns the index just past the last blank line ("\n\n") in
// b, or 0 when there is none. A read of a stream ends at, or shortly after,
// the end of an event, so the search goes backward from the end; it looks at
// every other byte, since a blank line's two newlines always cover one of
// them (bytes.LastIndex costs about ten instructions a byte, and a JSON
// answer, which has no blank line, is searched whole).
func lastEventEnd(b []byte) int {
	for i := len(b) - 1; i >= 0; i -= 2 {
		if b[i] != '\n' {
			continue
		}
		// The later of the two pairs that hold b[i] first.
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i > 0 && b[i-1] == '\n' {
			return i + 1
		}
	}
	return 0
}

// ReadFrom writes what r holds to the connection through a pooled buffer.
// The transport hands a request's body over this way once its write buffer
// is full; without it, io.Copy would make a buffer of up to 32 KiB for every
// request, for the collector to find.
func (c *readAhead) ReadFrom(r io.Reader) (int64, error) {
	buf := bufpool.Get(copyBufferSize)
	n, err := io.CopyBuffer(writerOnly{c.Conn}, r, buf[:cap(buf)])
	bufpool.Put(buf)
	return n, err
}

// copyBufferSize is ReadFrom's buffer, io.Copy's own size.
const copyBufferSize = 32 << 10

// writerOnly hides a connection's own ReadFrom, which would make the buffer
// ReadFrom lends.
type writerOnly struct{ io.Writer }

func (c *readAhead) release() {
	if c.buf != nil {
		readAheadPool.Put(c.buf)
	}
	c.buf, c.r, c.w, c.end = nil, 0, 0, 0
	c.ahead.Store(false)
}
