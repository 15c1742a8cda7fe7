package server

import (
	"os"
	"strconv"
)

// DefaultGCPercent is the garbage collector's target (GOGC) a coordinator
// process runs with unless told otherwise. A coordinator's live heap is
// small (the dependency graph, etcd's index), so with Go's default of 100
// it collects every few megabytes allocated: several times a second under
// load, and each cycle takes one of two cores for milliseconds and stops
// the world briefly. Pinned calls, which wait for an etcd commit, see that
// as their latency tail (docs/BENCHMARKS.md). 400 lets the heap grow to
// five times the live heap between cycles: a few tens of megabytes more
// memory for a fraction of the cycles. GOMEMLIMIT still applies.
const DefaultGCPercent = 400

// GCPercent returns the GC target for a coordinator process: the GOGC
// environment variable when it is set (read as the Go runtime reads it:
// "off" and any negative number are -1, anything else not a number is
// 100), else DefaultGCPercent.
func GCPercent() int {
	v, ok := os.LookupEnv("GOGC")
	if !ok || v == "" {
		return DefaultGCPercent
	}
	if v == "off" {
		return -1
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return 100
	case n < 0:
		return -1
	}
	return n
}
