package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Routing is built and sent by the routing publisher from the
// catalog and the session table under their own locks: a revision made by
// event application reaches the sidecars while the event lock is still
// held (before, the publisher waited for that lock to build the table).
func TestRoutingIsSentWhileTheEventLockIsHeld(t *testing.T) {
	ts := servertest.Start(t, "")
	a := ts.Sidecar("a-1", "a", "v1", "s")
	ts.Sidecar("s-1", "s", "v1")
	// Until a's acks of the registrations' revisions are applied, a's
	// stream handler may be waiting for the event lock to apply one, and
	// the handler is what sends on the stream: that wait is a's own, not
	// the publisher's, so let it settle first.
	// a's routing is complete first (s's route stored, its endpoint
	// registered), so no change to a's scope is still on its way.
	servertest.Eventually(t, 10*time.Second, "a to acknowledge the whole route of s", func() bool {
		return routeIsV1OnS1(a.Routing()) && ts.Leader().RoutingSettled("a-1")
	})
	ts.Leader().TouchRoutingUnderEventLock("s", func(rev uint64) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := a.WaitRouting(ctx, func(r *pb.Routing) bool { return r.GetRevision() >= rev })
		if err != nil {
			t.Fatalf("routing revision %d not received within 5s while the event lock is held: %v (have %d)",
				rev, err, a.Routing().GetRevision())
		}
		if !routeIsV1OnS1(a.Routing()) {
			t.Fatalf("routing = %v, want s with default v1 and endpoint s-1", a.Routing())
		}
	})
}

// routeIsV1OnS1 says whether r routes s to v1 with the one endpoint s-1.
func routeIsV1OnS1(r *pb.Routing) bool {
	for _, s := range r.GetServices() {
		if s.Service == "s" {
			return s.GetDefaultVersion() == "v1" && len(s.GetEndpoints()) == 1 && s.Endpoints[0].InstanceId == "s-1"
		}
	}
	return false
}
