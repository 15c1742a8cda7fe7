package strategy

import (
	"fmt"
	"math/bits"
	"time"
)

// A canary's analysis (DESIGN §4.7): the sidecars report each call's
// outcome with its RETURN; the coordinator sums them per version in a
// Window, and Judge compares the new version with the old one.

// Limits are an analysis's bounds, relative to the old version; zero
// fields are not checked.
type Limits struct {
	// MaxErrorRate: the new version's share of server errors may exceed
	// the old one's by at most this (0 to 1).
	MaxErrorRate float64
	// MaxP99: the new version's p99 latency may exceed the old one's by
	// at most this.
	MaxP99 time.Duration
	// Window is how far back the analysis looks.
	Window time.Duration
}

// On reports whether anything is checked.
func (l Limits) On() bool { return l.MaxErrorRate > 0 || l.MaxP99 > 0 }

// MinAnalysisCalls is the fewest calls of the new version within the
// window for a verdict: fewer say nothing either way.
const MinAnalysisCalls = 20

// DefaultAnalysisWindow is the window when an update names none.
const DefaultAnalysisWindow = time.Minute

// windowSlots is how many slots a Window's span is cut into: it forgets
// in steps of a twentieth of its span.
const windowSlots = 20

// latencyBuckets are quarter-octave buckets of latency in microseconds:
// bucket i holds latencies below bucketTop(i); the last holds the rest.
const latencyBuckets = 4 * 40

// Window sums the outcomes of one version's calls over a sliding span, in
// bounded memory (windowSlots slots of latencyBuckets counters).
type Window struct {
	span  time.Duration
	slots [windowSlots]slot
}

type slot struct {
	start        time.Time // the slot's interval; zero: empty
	calls, errs  uint64
	latency      [latencyBuckets]uint32
	latencyCount uint64
}

// NewWindow returns an empty window of span.
func NewWindow(span time.Duration) *Window {
	return &Window{span: max(span, time.Second)}
}

func (w *Window) slotLen() time.Duration { return w.span / windowSlots }

// Add counts a call that ended at `at`: failed (a server error), and its
// latency (negative: unknown).
func (w *Window) Add(at time.Time, failed bool, latency time.Duration) {
	n := at.UnixNano() / int64(w.slotLen())
	s := &w.slots[n%windowSlots]
	start := time.Unix(0, n*int64(w.slotLen()))
	if !s.start.Equal(start) {
		*s = slot{start: start}
	}
	s.calls++
	if failed {
		s.errs++
	}
	if latency >= 0 {
		s.latency[bucketOf(latency)]++
		s.latencyCount++
	}
}

// Stats are a window's sums.
type Stats struct {
	Calls, Errors uint64
	// P99 is the upper bound of the bucket holding the 99th percentile
	// latency (quarter-octave buckets: at most 19% above it); zero with
	// no latency reported.
	P99 time.Duration
}

// ErrorRate is Errors over Calls (0 with no calls).
func (s Stats) ErrorRate() float64 {
	if s.Calls == 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Calls)
}

// Stats sums the slots within the span before now.
func (w *Window) Stats(now time.Time) Stats {
	var out Stats
	var hist [latencyBuckets]uint64
	var n uint64
	for i := range w.slots {
		s := &w.slots[i]
		if !w.inSpan(s, now) {
			continue
		}
		out.Calls += s.calls
		out.Errors += s.errs
		n += s.latencyCount
		for b, c := range s.latency {
			hist[b] += uint64(c)
		}
	}
	if n == 0 {
		return out
	}
	rank := (n*99 + 99) / 100 // the ceil(0.99 n)th smallest
	var seen uint64
	for b, c := range hist {
		if seen += c; seen >= rank {
			out.P99 = bucketTop(b)
			break
		}
	}
	return out
}

// bucketOf is latency's bucket: 4 per power of two of microseconds.
func bucketOf(d time.Duration) int {
	us := uint64(d / time.Microsecond)
	if us < 4 {
		return int(us)
	}
	e := bits.Len64(us) - 1                 // us in [2^e, 2^(e+1))
	q := int((us >> (e - 2)) & 3)           // which quarter of it
	return min(4*(e-1)+q, latencyBuckets-1) // e >= 2: buckets from 4
}

// bucketTop is the (exclusive) upper bound of bucket b.
func bucketTop(b int) time.Duration {
	if b < 4 {
		return time.Duration(b+1) * time.Microsecond
	}
	e, q := b/4+1, b%4
	return time.Duration((uint64(4+q+1))<<(e-2)) * time.Microsecond
}

// Judge compares the new version's stats with the old one's under l: it
// says whether the new version is worse, and why, in words. Below
// MinAnalysisCalls calls of the new version it says nothing. The old
// version's error rate counts from MinAnalysisCalls calls (below, it is
// taken as 0); the latency is compared only when both have that many.
func Judge(l Limits, old, nw Stats) (bool, string) {
	if !l.On() || nw.Calls < MinAnalysisCalls {
		return false, ""
	}
	base := 0.0
	if old.Calls >= MinAnalysisCalls {
		base = old.ErrorRate()
	}
	if l.MaxErrorRate > 0 && nw.ErrorRate() > base+l.MaxErrorRate {
		return true, fmt.Sprintf("error rate of the new version %.1f%% (%d of %d calls) exceeds the old version's %.1f%% (%d of %d) by more than --max-error-rate %.1f%% over the last %v",
			100*nw.ErrorRate(), nw.Errors, nw.Calls, 100*base, old.Errors, old.Calls, 100*l.MaxErrorRate, l.Window)
	}
	if l.MaxP99 > 0 && old.Calls >= MinAnalysisCalls && old.P99 > 0 && nw.P99 > old.P99+l.MaxP99 {
		return true, fmt.Sprintf("p99 latency of the new version %v exceeds the old version's %v by more than --max-p99 %v over the last %v",
			nw.P99, old.P99, l.MaxP99, l.Window)
	}
	return false, ""
}
