//go:build !unix

package balancer

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: reads go straight to the connection.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func readFD(uintptr, []byte) (int, error) { return 0, syscall.EINVAL }

// upstreamReadBuffer is the transport's read buffer: reads go to the
// network here, so it is larger.
const upstreamReadBuffer = 2 << 10
