//go:build !unix

package intervalstore

import "time"

// processCPU is not measured on this platform.
func processCPU() int64 { return 0 }

// threadCPU returns the wall clock: this platform's thread CPU time is not
// read.
func threadCPU() int64 { return time.Now().UnixNano() }
