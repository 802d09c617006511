//go:build !unix

package bench

import (
	"math"
	"time"
)

// processCPU is not measured on this platform; CPU per request reads 0.
func processCPU() time.Duration { return 0 }

// pageFaults is not measured on this platform.
func pageFaults() int64 { return 0 }

// raiseFileLimit has nothing to raise on this platform.
func raiseFileLimit() (uint64, error) { return math.MaxInt32, nil }
