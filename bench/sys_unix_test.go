//go:build unix

package bench

import (
	"fmt"
	"syscall"
	"time"
)

// processCPU returns the user and system CPU time this process has used
// (getrusage). In TestCompareProxies and TestCapacity this process runs
// Caddy alone; in the Go benchmarks it also runs the client and the mocks,
// so only differences between targets measured the same way mean something.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pageFaults returns the page faults (minor and major) this process has
// taken (getrusage): each is a page of memory touched for the first time
// since the system gave it, or gave it back.
func pageFaults() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Minflt + ru.Majflt
}

// raiseFileLimit lifts the soft limit on open files to the hard limit and
// returns it.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("reading the open file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raising the open file limit: %w", err)
		}
	}
	return uint64(lim.Cur), nil
}
