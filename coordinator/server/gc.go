package server

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"time"
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

// DefaultGCHeadroom bounds how far the heap may grow past the live heap
// between two collections. At --gc-percent 400 the heap may grow to five
// times the live heap: tens of megabytes for a small mesh, but a 2,000
// sidecar mesh under load has ~90 MB live and would reach ~500 MB of heap
// (docs/BENCHMARKS.md, mesh scale). Past live + headroom the collector
// runs sooner (a soft memory limit), so memory follows the mesh, not the
// GC target; below it nothing changes.
const DefaultGCHeadroom = 256 << 20

// memSample is what the headroom limit is computed from (runtime/metrics).
type memSample struct {
	live, total, heapObjects, heapUnused, heapFree, heapReleased uint64
}

var memSampleNames = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

func readMemSample() memSample {
	s := make([]metrics.Sample, len(memSampleNames))
	for i, n := range memSampleNames {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return memSample{live: v(0), total: v(1), heapObjects: v(2), heapUnused: v(3), heapFree: v(4), heapReleased: v(5)}
}

// headroomLimit is the memory limit (in the runtime's terms: all memory
// the Go runtime holds, less what it has released) that lets the heap grow
// headroom bytes past the live heap: the runtime's non-heap memory
// (stacks, metadata) plus live plus headroom.
func headroomLimit(m memSample, headroom uint64) uint64 {
	heap := m.heapObjects + m.heapUnused + m.heapFree + m.heapReleased
	nonHeap := uint64(0)
	if m.total > heap {
		nonHeap = m.total - heap
	}
	return nonHeap + m.live + headroom
}

// LimitGCHeadroom keeps the process's soft memory limit at the live heap
// plus headroom (see DefaultGCHeadroom), re-read every interval, until ctx
// ends; it never raises the limit above the one the process started with
// (GOMEMLIMIT, when set). It restores that limit when it returns.
func LimitGCHeadroom(ctx context.Context, headroom uint64, interval time.Duration) {
	ceiling := debug.SetMemoryLimit(-1) // GOMEMLIMIT, or math.MaxInt64
	defer debug.SetMemoryLimit(ceiling)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		limit := headroomLimit(readMemSample(), headroom)
		debug.SetMemoryLimit(int64(min(limit, uint64(ceiling))))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// StartGCHeadroom runs LimitGCHeadroom with headroom bytes, re-read every
// second, until the returned stop is called (coordinatord and the
// benchmarks' coordinator processes start it at once).
func StartGCHeadroom(headroom uint64) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		LimitGCHeadroom(ctx, headroom, time.Second)
	}()
	return func() { cancel(); <-done }
}
