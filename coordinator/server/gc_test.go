package server

import (
	"context"
	"math"
	"os"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	t.Setenv("GOGC", "") // restored when the test ends
	for _, tc := range []struct {
		env   string
		unset bool
		want  int
	}{
		{unset: true, want: DefaultGCPercent},
		{env: "", want: DefaultGCPercent},
		{env: "250", want: 250},
		{env: "off", want: -1},
		{env: "-5", want: -1},
		{env: "0", want: 0},
		{env: "lots", want: 100},
	} {
		if tc.unset {
			os.Unsetenv("GOGC")
		} else {
			os.Setenv("GOGC", tc.env)
		}
		if got := GCPercent(); got != tc.want {
			t.Errorf("GOGC=%q (unset %v): GCPercent() = %d, want %d", tc.env, tc.unset, got, tc.want)
		}
	}
}

// The headroom limit is the runtime's non-heap memory plus the live heap
// plus the headroom: the heap itself (objects, unused, free, released
// spans) does not count, so the limit follows what is live.
func TestHeadroomLimit(t *testing.T) {
	m := memSample{live: 90 << 20, total: 600 << 20, heapObjects: 480 << 20, heapUnused: 10 << 20, heapFree: 40 << 20, heapReleased: 20 << 20}
	if got, want := headroomLimit(m, 256<<20), uint64((50+90+256)<<20); got != want {
		t.Errorf("limit %d MiB, want %d MiB (50 non-heap + 90 live + 256)", got>>20, want>>20)
	}
	m.live = 300 << 20 // the limit grows with the live heap: it never forces a collection per allocation
	if got, want := headroomLimit(m, 256<<20), uint64((50+300+256)<<20); got != want {
		t.Errorf("limit %d MiB, want %d MiB", got>>20, want>>20)
	}
}

// LimitGCHeadroom sets a soft memory limit near the live heap while it
// runs, never above the limit the process started with, and restores that
// limit when it returns.
func TestLimitGCHeadroomSetsAndRestoresTheLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	for _, ceiling := range []int64{math.MaxInt64, 64 << 20} {
		debug.SetMemoryLimit(ceiling)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { LimitGCHeadroom(ctx, 256<<20, time.Hour); close(done) }()
		deadline := time.Now().Add(10 * time.Second)
		var got int64
		for got = debug.SetMemoryLimit(-1); got == ceiling && ceiling == math.MaxInt64; got = debug.SetMemoryLimit(-1) {
			if time.Now().After(deadline) {
				t.Fatal("the limit was never set")
			}
			time.Sleep(time.Millisecond)
		}
		live := readMemSample().live
		if ceiling == math.MaxInt64 && (uint64(got) < live+256<<20 || uint64(got) > live+512<<20) {
			t.Errorf("limit %d MiB with %d MiB live, want live + 256 MiB + the runtime's non-heap memory", got>>20, live>>20)
		}
		cancel()
		<-done
		if ceiling != math.MaxInt64 && got > ceiling {
			t.Errorf("limit %d MiB over the process's own %d MiB", got>>20, ceiling>>20)
		}
		if after := debug.SetMemoryLimit(-1); after != ceiling {
			t.Errorf("limit after return %d, want the original %d", after, ceiling)
		}
	}
}
