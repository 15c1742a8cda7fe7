package coordinator_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// A transaction created by a Call (its Begin on another stream, not here
// yet) leaves the implicit set as soon as its Begin comes. Kept until the
// next sweep instead, a mesh that delivers calls before begins filled the
// set with every transaction of the last ImplicitTimeout/4 (700,000 in
// bench/ingest), and the sweep's one pass over it held the event lock for
// 180 ms.
func TestBegunTransactionLeavesTheImplicitSet(t *testing.T) {
	ts := startMem(t)
	b := ts.Sidecar("b-1", "b", "v1", "c")
	ts.Sidecar("c-1", "c", "v1")
	servertest.Send(t, b, simsidecar.Call("T", 2, "c", 3))
	if n := ts.Leader().ImplicitPending(); n != 1 {
		t.Fatalf("implicit set holds %d after the Call, want 1", n)
	}
	a := ts.Sidecar("a-1", "a", "v1", "b")
	servertest.Send(t, a, simsidecar.Begin("T", 1))
	if n := ts.Leader().ImplicitPending(); n != 0 {
		t.Fatalf("implicit set holds %d after the transaction's Begin, want 0", n)
	}
}

// The sweep of implicit transactions releases the event lock every
// ImplicitSweepChunk entries, so that however many a mesh (or a hostile
// sidecar, within its rate) created, event application waits for one
// chunk at most; across the releases it still ends every expired one and
// keeps every young one.
func TestImplicitSweepReleasesTheEventLock(t *testing.T) {
	const timeout = time.Minute
	ts := startMem(t, func(c *coordinator.Config) { c.ImplicitTimeout = timeout })
	b := ts.Sidecar("b-1", "b", "v1", "c")
	ts.Sidecar("c-1", "c", "v1")
	n := coordinator.ImplicitSweepChunk*5/2 + 1
	evs := make([]*pb.Event, n)
	for i := range evs {
		evs[i] = simsidecar.Call(fmt.Sprintf("T%d", i), 2, "c", 3)
	}
	servertest.Send(t, b, evs...)
	c := ts.Leader()
	if got := c.ImplicitPending(); got != n {
		t.Fatalf("implicit set holds %d, want %d", got, n)
	}
	sweep := func(at time.Time) (releases int) {
		c.SweepImplicit(at, func() {
			if !c.EventLockFree() {
				t.Error("between two chunks of the sweep, the event lock is held")
			}
			releases++
		})
		return releases
	}
	want := n / coordinator.ImplicitSweepChunk
	// Young: kept, all of them.
	if r := sweep(time.Now()); r != want {
		t.Fatalf("the sweep of %d entries released the event lock %d times, want %d (every %d entries)", n, r, want, coordinator.ImplicitSweepChunk)
	}
	if got, live := c.ImplicitPending(), c.Live(); got != n || live != n {
		t.Fatalf("after a sweep before the timeout: %d implicit, %d live; want %d and %d", got, live, n, n)
	}
	// Expired: ended, all of them.
	if r := sweep(time.Now().Add(timeout + time.Second)); r != want {
		t.Fatalf("the sweep of %d expired entries released the event lock %d times, want %d", n, r, want)
	}
	if got, live := c.ImplicitPending(), c.Live(); got != 0 || live != 0 {
		t.Fatalf("after a sweep past the timeout: %d implicit, %d live; want none", got, live)
	}
	if got := ts.Metric("coordinator_implicit_expired_total"); got != float64(n) {
		t.Fatalf("coordinator_implicit_expired_total = %v, want %d", got, n)
	}
}
