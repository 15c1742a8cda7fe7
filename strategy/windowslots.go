package strategy

import "time"

// A Window's slots as stored: the coordinator writes a canary's windows
// behind (DESIGN.md §4.7), so that a new leader continues them where the
// last one left them instead of starting empty.

// WindowSlot is one slot of a Window: the calls that ended in the
// twentieth of its span that begins at Start.
type WindowSlot struct {
	Start         time.Time
	Calls, Errors uint64
	// Latency counts the calls per latency bucket; trailing empty buckets
	// are left out.
	Latency []uint32
}

// Slots returns the window's slots that hold calls within its span
// before now, oldest first: at most windowSlots.
func (w *Window) Slots(now time.Time) []WindowSlot {
	var out []WindowSlot
	for i := range w.slots {
		s := &w.slots[i]
		if s.calls == 0 || !w.inSpan(s, now) {
			continue
		}
		n := len(s.latency)
		for n > 0 && s.latency[n-1] == 0 {
			n--
		}
		out = append(out, WindowSlot{Start: s.start, Calls: s.calls, Errors: s.errs, Latency: append([]uint32(nil), s.latency[:n]...)})
	}
	for i := 1; i < len(out); i++ { // insertion sort: at most windowSlots
		for j := i; j > 0 && out[j].Start.Before(out[j-1].Start); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// Restore adds slots (from Slots of a window of the same span) to the
// window, and returns how many it took. It leaves out a slot that does
// not begin on one of the window's slot boundaries, lies outside its span
// before now, counts more errors than calls or names more latency buckets
// than a window has, and one whose place holds a newer slot already.
func (w *Window) Restore(now time.Time, slots []WindowSlot) int {
	took := 0
	for _, in := range slots {
		ns := in.Start.UnixNano()
		if ns%int64(w.slotLen()) != 0 || in.Errors > in.Calls || len(in.Latency) > latencyBuckets {
			continue
		}
		n := ns / int64(w.slotLen())
		s := &w.slots[n%windowSlots]
		if !w.inSpan(&slot{start: in.Start}, now) || s.start.After(in.Start) {
			continue
		}
		if !s.start.Equal(in.Start) {
			*s = slot{start: in.Start}
		}
		s.calls += in.Calls
		s.errs += in.Errors
		for b, c := range in.Latency {
			s.latency[b] += c
			s.latencyCount += uint64(c)
		}
		took++
	}
	return took
}

// inSpan reports whether slot s (not empty) lies within the span before now.
func (w *Window) inSpan(s *slot, now time.Time) bool {
	return !s.start.IsZero() && s.start.Add(w.slotLen()).After(now.Add(-w.span)) && !s.start.After(now)
}
