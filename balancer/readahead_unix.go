//go:build unix

package balancer

import (
	"net"
	"syscall"
)

// rawConnOf returns c's raw connection when it is a plain socket.
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// readFD reads the socket once, without blocking.
func readFD(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// upstreamReadBuffer is the transport's read buffer: small, since reads
// from the connection are served from readAhead's buffer.
const upstreamReadBuffer = 512
