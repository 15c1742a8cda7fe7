package strategy

import (
	"testing"
	"time"
)

// A window's slots restored into a new window of the same span give the
// same sums; what the old one forgot, or no window could hold, is left out.
func TestWindowSlotsRestore(t *testing.T) {
	span := 20 * time.Second // slots of 1 s
	now := time.Unix(1_000_000, 0)
	w := NewWindow(span)
	for i := 199; i >= 0; i-- { // in time order, from 30 s back: some outside the span
		at := now.Add(-time.Duration(i) * 150 * time.Millisecond)
		w.Add(at, i%7 == 0, time.Duration(i+1)*time.Millisecond)
	}
	slots := w.Slots(now)
	if len(slots) == 0 || len(slots) > windowSlots {
		t.Fatalf("%d slots", len(slots))
	}
	for i := 1; i < len(slots); i++ {
		if !slots[i-1].Start.Before(slots[i].Start) {
			t.Fatalf("slots not oldest first: %v then %v", slots[i-1].Start, slots[i].Start)
		}
	}
	r := NewWindow(span)
	if took := r.Restore(now, slots); took != len(slots) {
		t.Fatalf("restored %d of %d slots", took, len(slots))
	}
	if got, want := r.Stats(now), w.Stats(now); got != want || want.Calls == 0 || want.Errors == 0 || want.P99 == 0 {
		t.Fatalf("restored window %+v, want %+v", got, want)
	}

	// Later, the restored slots age out as the original's would.
	later := now.Add(10 * time.Second)
	if got, want := r.Stats(later), w.Stats(later); got != want {
		t.Fatalf("restored window 10 s later %+v, want %+v", got, want)
	}

	// A restored slot adds to a live one of the same interval.
	live := NewWindow(span)
	live.Add(now, true, time.Millisecond)
	live.Restore(now, slots)
	if got, want := live.Stats(now).Calls, w.Stats(now).Calls+1; got != want {
		t.Fatalf("restored into a live slot: %d calls, want %d", got, want)
	}

	bad := []WindowSlot{
		{Start: now.Add(-500 * time.Millisecond), Calls: 1},               // not on a slot boundary
		{Start: now.Add(-time.Minute), Calls: 1},                          // outside the span
		{Start: now.Add(time.Minute), Calls: 1},                           // in the future
		{Start: now, Calls: 1, Errors: 2},                                 // more errors than calls
		{Start: now, Calls: 1, Latency: make([]uint32, latencyBuckets+1)}, // more buckets than a window has
	}
	e := NewWindow(span)
	if took := e.Restore(now, bad); took != 0 || e.Stats(now).Calls != 0 {
		t.Fatalf("restored %d bad slots: %+v", took, e.Stats(now))
	}
}
